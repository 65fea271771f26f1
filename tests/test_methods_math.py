"""GRPO, Dr. GRPO, RLOO and DPO's pure functions, and the three KL estimators, against hand-computed numbers."""

import math

import pytest
import torch

from rlhf_engine.core.rollout import kl_estimates, kl_penalty
from rlhf_engine.methods.dpo import dpo_loss
from rlhf_engine.methods.group import frac_reward_zero_std
from rlhf_engine.methods.grpo import STD_EPS, group_advantages, grpo_loss
from rlhf_engine.methods.rloo import leave_one_out_advantages, reinforce_loss, sequence_rewards

LOG = math.log


def test_group_advantages_are_scores_against_their_group_divided_by_its_std_unless_dr_grpo():
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    # group 1: mean 2, unbiased std 1; group 2: all alike, every advantage 0
    expected = torch.tensor([[-1 / (1 + STD_EPS), 0.0, 1 / (1 + STD_EPS)], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(group_advantages(scores), expected)
    assert group_advantages(2 * scores, scale_by_std=False).tolist() == [[-2.0, 0.0, 2.0], [0.0, 0.0, 0.0]]
    assert frac_reward_zero_std(scores) == 0.5


def test_grpo_loss_averages_each_answer_and_dr_grpo_sums_over_a_constant():
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    same = torch.zeros(2, 2)  # ratio 1: every token's loss is -A
    loss, metrics = grpo_loss(same, same, torch.tensor([1.0, 2.0]), mask, cliprange=0.2)
    assert float(loss) == pytest.approx((-1.0 + -2.0) / 2)  # per-answer means -1 and -2
    assert metrics == {"clip_ratio": 0.0, "kl": 0.0}
    loss, _ = grpo_loss(same, same, torch.tensor([1.0, 2.0]), mask, cliprange=0.2, loss_type="dr_grpo", max_length=4)
    assert float(loss) == pytest.approx((-1 - 1 - 2) / (2 * 4))
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(same, same, torch.tensor([1.0, 2.0]), mask, cliprange=0.2, loss_type="bnpo")


def test_grpo_clips_the_ratio_as_ppo_does():
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    old = torch.zeros(2, 2)
    new = old + LOG(1.5)  # ratio 1.5 on every token, clip range 0.2
    loss, metrics = grpo_loss(new, old, torch.tensor([1.0, -2.0]), mask, cliprange=0.2)
    # answer 1 (A = 1): -min(1.5, 1.2) = -1.2 per token, clipped; answer 2 (A = -2): -min(-3, -2.4) = 3
    assert float(loss) == pytest.approx((-1.2 + 3.0) / 2)
    assert metrics["clip_ratio"] == pytest.approx(2 / 3)


def test_grpo_adds_beta_k3_per_token():
    logprobs = torch.full((1, 2), LOG(0.5))
    ref = torch.full((1, 2), LOG(0.25))  # r = pi_ref / pi = 0.5: k3 = (0.5 - 1) - log 0.5
    k3 = -0.5 + LOG(2)
    loss, metrics = grpo_loss(logprobs, logprobs, torch.zeros(1), torch.ones(1, 2), cliprange=0.2, beta=0.1,
                              ref_logprobs=ref)
    assert float(loss) == pytest.approx(0.1 * k3)
    assert metrics["kl"] == pytest.approx(k3)


def test_rloo_baseline_is_the_mean_of_the_other_answers():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    # baselines (12 - r) / 3 = 11/3, 10/3, 3, 2
    torch.testing.assert_close(leave_one_out_advantages(rewards), torch.tensor([[1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_advantages(torch.tensor([[1.0], [2.0]]))


def test_rloo_puts_the_kl_in_the_reward_and_weights_whole_answers():
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    kl = torch.tensor([[0.1, 0.2], [0.5, 9.0]])  # the 9 lies past the second answer's end
    assert sequence_rewards(torch.tensor([1.0, 2.0]), kl, mask, beta=0.5).tolist() == pytest.approx([0.85, 1.75])
    logprobs = torch.tensor([[-1.0, -2.0], [-3.0, -100.0]], requires_grad=True)
    loss = reinforce_loss(logprobs, torch.tensor([2.0, -1.0]), mask)
    assert float(loss) == pytest.approx(-(2 * -3 + -1 * -3) / 2)
    loss.backward()
    assert logprobs.grad.tolist() == [[-1.0, -1.0], [0.5, 0.0]]


def test_dpo_loss_and_its_trl_metrics():
    policy_chosen, policy_rejected = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])
    ref_chosen, ref_rejected = torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -2.0])
    loss, metrics = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1)
    # implicit rewards: chosen 0.05 and -0.1, rejected -0.05 and 0.1; margins 0.1 and -0.2
    assert float(loss) == pytest.approx((math.log1p(math.exp(-0.1)) + math.log1p(math.exp(0.2))) / 2)
    assert metrics["rewards/chosen"] == pytest.approx(-0.025)
    assert metrics["rewards/rejected"] == pytest.approx(0.025)
    assert metrics["rewards/accuracies"] == 0.5
    assert metrics["rewards/margins"] == pytest.approx(-0.05)
    assert metrics["logps/chosen"] == pytest.approx(-2.0) and metrics["logps/rejected"] == pytest.approx(-1.5)
    same, _ = dpo_loss(ref_chosen, ref_rejected, ref_chosen, ref_rejected, beta=0.1)
    assert float(same) == pytest.approx(math.log(2))  # the policy is the reference: log 2


def test_the_three_kl_estimators_side_by_side():
    logprobs = torch.tensor([[LOG(0.5), LOG(0.5)]])
    ref = torch.tensor([[LOG(0.25), LOG(0.5)]])  # log-ratios log 2 and 0
    estimates = kl_estimates(logprobs, ref, torch.ones(1, 2))
    assert estimates == pytest.approx({"k1": LOG(2), "k2": 0.5 * LOG(2) ** 2, "k3": -0.5 + LOG(2)})
    assert float(kl_penalty(ref, logprobs, "k2")[0, 0]) == pytest.approx(0.5 * LOG(2) ** 2)  # k2 is symmetric
