"""The PPO details, checked against numbers computed by hand."""

import math

import pytest
import torch

from rlhf_engine.core.batching import batch_indices
from rlhf_engine.core.generation import truncate_after_eos
from rlhf_engine.core.kl_control import AdaptiveKLController, FixedKLController
from rlhf_engine.core.reward import bradley_terry_loss, score_index
from rlhf_engine.core.rollout import NonFiniteError, check_finite, kl_penalty, masked_mean, missing_eos_penalized
from rlhf_engine.methods.ppo import (
    gae,
    per_token_rewards,
    policy_loss,
    value_loss,
    whiten,
)


def test_k1_is_the_log_ratio_and_can_be_negative():
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.4)]])
    k1 = kl_penalty(logp, ref, "k1")
    assert torch.allclose(k1, torch.tensor([[math.log(2.0), math.log(0.5)]]))
    assert k1[0, 1] < 0


def test_k3_matches_formula_and_is_never_negative():
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.4)]])
    # r = ref / pi: 0.5 and 2.0;  k3 = (r - 1) - log r
    expected = torch.tensor([[(0.5 - 1) - math.log(0.5), (2.0 - 1) - math.log(2.0)]])
    k3 = kl_penalty(logp, ref, "k3")
    assert torch.allclose(k3, expected, atol=1e-6)
    assert (kl_penalty(torch.randn(50, 7), torch.randn(50, 7), "k3") >= 0).all()


def test_k3_is_zero_when_policies_agree_and_unknown_estimator_fails():
    x = torch.randn(3, 4)
    assert torch.allclose(kl_penalty(x, x, "k3"), torch.zeros(3, 4))
    with pytest.raises(ValueError):
        kl_penalty(x, x, "k4")


def test_per_token_rewards_put_the_score_on_the_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    scores = torch.tensor([2.0, -1.0])
    rewards, non_score = per_token_rewards(kl, scores, mask, beta=0.1)
    assert torch.allclose(non_score, torch.tensor([[-0.01, -0.02, -0.03], [-0.05, 0.0, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[-0.01, -0.02, 1.97], [-1.05, 0.0, 0.0]]))


def test_gae_and_returns_against_hand_computation():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    mask = torch.ones(1, 3)
    gamma, lam = 0.9, 0.8
    # deltas: t2 = 2 - 1.5 = 0.5; t1 = 0 + 0.9*1.5 - 1 = 0.35; t0 = 1 + 0.9*1.0 - 0.5 = 1.4
    a2 = 0.5
    a1 = 0.35 + gamma * lam * a2
    a0 = 1.4 + gamma * lam * a1
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    assert torch.allclose(advantages, torch.tensor([[a0, a1, a2]]))
    assert torch.allclose(returns, torch.tensor([[a0 + 0.5, a1 + 1.0, a2 + 1.5]]))


def test_gae_ignores_positions_after_the_response_ends():
    rewards = torch.tensor([[0.0, 1.0, 99.0]])
    values = torch.tensor([[0.2, 0.4, 50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # t1: 1 - 0.4 = 0.6 ; t0: 0 + 0.4 - 0.2 + 0.95 * 0.6 = 0.77
    assert torch.allclose(advantages, torch.tensor([[0.77, 0.6, 0.0]]))
    assert torch.allclose(returns, torch.tensor([[0.97, 1.0, 0.0]]))


def test_gamma_one_lambda_one_gives_monte_carlo_returns():
    rewards = torch.tensor([[0.5, -0.25, 2.0]])
    values = torch.tensor([[0.3, 0.1, -0.4]])
    _, returns = gae(rewards, values, torch.ones(1, 3), 1.0, 1.0)
    assert torch.allclose(returns, torch.tensor([[2.25, 1.75, 2.0]]))


def test_whiten_gives_zero_mean_unit_variance_over_the_mask():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 6.0, -100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, mask)
    values = w[mask.bool()]
    assert abs(values.mean().item()) < 1e-6
    assert abs(values.std().item() - 1.0) < 1e-4  # unbiased std, as torch.std
    assert (w[~mask.bool()] == 0).all()


def test_whiten_without_mean_shift_keeps_the_mean():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    w = whiten(x, mask, shift_mean=False)
    assert abs(w.mean().item() - 2.5) < 1e-6
    assert abs((w - w.mean()).std().item() - 1.0) < 1e-4


def test_policy_loss_clips_the_ratio():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    mask = torch.ones(1, 3)
    loss, clipfrac, approx_kl = policy_loss(new, old, adv, mask, cliprange=0.2)
    # token 0: A>0, ratio 1.5 -> clipped to 1.2 -> -1.2 ; token 1: A<0, ratio 0.5 -> max(0.5, 0.8) = 0.8
    # token 2: ratio 1.1 inside the range -> -1.1
    assert torch.isclose(loss, torch.tensor((-1.2 + 0.8 - 1.1) / 3))
    assert torch.isclose(clipfrac, torch.tensor(2 / 3))
    ratios = torch.tensor([1.5, 0.5, 1.1])
    assert torch.isclose(approx_kl, ((ratios - 1) - ratios.log()).mean())


def test_policy_loss_gradient_is_zero_on_clipped_tokens():
    new = torch.log(torch.tensor([[1.5]])).requires_grad_()
    loss, _, _ = policy_loss(new, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.2)
    loss.backward()
    assert new.grad.abs().item() == 0.0


def test_value_loss_is_clipped_around_old_values():
    old = torch.tensor([[1.0, 1.0]])
    new = torch.tensor([[2.0, 1.1]])
    returns = torch.tensor([[3.0, 0.0]])
    loss, clipfrac = value_loss(new, old, returns, torch.ones(1, 2), cliprange_value=0.2)
    # token 0: unclipped (2-3)^2 = 1, clipped (1.2-3)^2 = 3.24 -> 3.24 ; token 1: both (1.1)^2 = 1.21
    assert torch.isclose(loss, torch.tensor(0.5 * (3.24 + 1.21) / 2))
    assert torch.isclose(clipfrac, torch.tensor(0.5))


def test_the_missing_eos_penalty_is_subtracted_from_answers_cut_at_the_cap_only():
    scores, has_eos = torch.tensor([1.5, -0.25, 0.0]), torch.tensor([True, False, False])
    assert missing_eos_penalized(scores, has_eos, 0.5).tolist() == [1.5, -0.75, -0.5]  # not replaced by -0.5
    assert missing_eos_penalized(scores, has_eos, None) is scores


def test_masked_mean_ignores_padding():
    assert masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1.0, 1.0, 0.0])).item() == 2.0


def test_adaptive_beta_follows_ziegler():
    ctl = AdaptiveKLController(beta=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=9.0, n_steps=100)  # error = clip(0.5, +-0.2) = 0.2
    assert math.isclose(ctl.value, 0.1 * (1 + 0.2 * 100 / 10000))
    ctl = AdaptiveKLController(beta=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=5.4, n_steps=64)  # error = -0.1
    assert math.isclose(ctl.value, 0.1 * (1 - 0.1 * 64 / 10000))
    fixed = FixedKLController(0.3)
    fixed.update(100.0, 64)
    assert fixed.value == 0.3


def test_truncate_after_first_eos():
    eos, pad = 2, 3
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    out, mask, has_eos = truncate_after_eos(ids, eos, pad)
    assert out.tolist() == [[5, 2, 3, 3], [5, 6, 7, 8], [2, 3, 3, 3]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]


def test_score_index_with_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert score_index(right).tolist() == [2, 4, 0]
    assert score_index(left).tolist() == [4, 4, 4]


def test_bradley_terry_loss_value():
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0]))
    expected = -(math.log(1 / (1 + math.exp(-1))) + math.log(0.5)) / 2
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_non_finite_values_stop_with_a_message_naming_them():
    with pytest.raises(NonFiniteError, match="reward-model score is NaN or infinite at step 7"):
        check_finite("reward-model score", torch.tensor([1.0, float("nan")]), 7)
    check_finite("ok", torch.tensor([1.0]), 1)


def test_batch_indices_are_deterministic_and_cover_each_epoch():
    first_epoch = [i for step in (1, 2, 3, 4) for i in batch_indices(8, 2, step, seed=3)]
    assert sorted(first_epoch) == list(range(8))
    assert batch_indices(8, 2, 3, seed=3) == batch_indices(8, 2, 3, seed=3)
    assert first_epoch != [i for step in (1, 2, 3, 4) for i in batch_indices(8, 2, step, seed=4)]
