"""PPO's update moves the policy the right way: towards responses that scored high, away from low ones."""

from __future__ import annotations

import pytest
import torch

from rlhf_engine.config import VALUE_MODELS, PPOConfig
from rlhf_engine.core.generation import token_logprobs
from rlhf_engine.methods.ppo import PPOTrainer


class FirstHalfWins:
    """A reward that is +1 for the first half of each batch and -1 for the second half."""

    gain, bias, normalized_on = 1.0, 0.0, None

    def score(self, prompts, responses, normalized=True):
        n = len(responses)
        return torch.tensor([1.0 if i < n // 2 else -1.0 for i in range(n)])


def _response_logprobs(trainer: PPOTrainer, batch) -> torch.Tensor:
    roll = batch.scored.rollout
    with torch.no_grad():
        logits = trainer.model.policy_logits(roll.input_ids, roll.attention_mask, roll.response_ids.shape[1],
                                             trainer.config.temperature)
    return (token_logprobs(logits, roll.response_ids) * roll.response_mask).sum(1)


@pytest.mark.parametrize("value_model", VALUE_MODELS)
def test_one_update_raises_high_scored_responses_and_lowers_low_scored_ones(tiny_model_config, value_model):
    config = PPOConfig(model=tiny_model_config, steps=1, batch_size=8, kl_coef=0.0, learning_rate=3e-3,
                       response_length=8, lr_schedule="constant", value_model=value_model)
    trainer = PPOTrainer(config, FirstHalfWins(), [f"prompt number {i}" for i in range(8)])
    batch = trainer.advantages(trainer.rollout(trainer.next_prompts()))
    before = _response_logprobs(trainer, batch)
    assert torch.allclose(before, (batch.scored.logprobs * batch.mask).sum(1), atol=1e-4)  # ratio 1 at the start
    trainer.update(batch)
    change = _response_logprobs(trainer, batch) - before
    assert (change[:4] > 0).all(), change
    assert (change[4:] < 0).all(), change


@pytest.mark.parametrize("value_model", VALUE_MODELS)
def test_value_head_learns_the_returns(tiny_model_config, value_model):
    config = PPOConfig(model=tiny_model_config, steps=1, batch_size=8, kl_coef=0.0, learning_rate=6e-3,
                       response_length=8, lr_schedule="constant", cliprange_value=10.0, vf_coef=1.0, ppo_epochs=8,
                       value_model=value_model)
    trainer = PPOTrainer(config, FirstHalfWins(), [f"prompt number {i}" for i in range(8)])
    batch = trainer.advantages(trainer.rollout(trainer.next_prompts()))
    roll, mask = batch.scored.rollout, batch.mask

    def value_error() -> float:
        with torch.no_grad():
            values = trainer.model.values(roll.input_ids, roll.attention_mask, roll.response_ids.shape[1])
        return float((((values - batch.returns) ** 2) * mask).sum() / mask.sum())

    before = value_error()
    trainer.update(batch)
    assert value_error() < 0.5 * before


def test_the_value_head_starts_at_zero_so_first_advantages_are_the_discounted_scores(tiny_model_config):
    """lm-human-preferences initialises the value head with zeros (the reward head with N(0, 1/sqrt(d+1)))."""
    config = PPOConfig(model=tiny_model_config, steps=1, batch_size=4, kl_coef=0.0, response_length=6)
    trainer = PPOTrainer(config, FirstHalfWins(), [f"prompt number {i}" for i in range(4)])
    scored = trainer.rollout(trainer.next_prompts())
    assert torch.count_nonzero(scored.values) == 0
    advantages = trainer.advantages(scored).advantages
    mask = scored.rollout.response_mask.bool()
    last = mask.sum(1) - 1
    assert (advantages[torch.arange(4), last] * scored.scores > 0).all()  # sign of the score at the end


def test_rollout_metrics_are_reported_before_the_update_and_match_the_logged_step(tiny_model_config):
    config = PPOConfig(model=tiny_model_config, steps=2, batch_size=4, response_length=4)
    trainer = PPOTrainer(config, FirstHalfWins(), [f"prompt number {i}" for i in range(8)])
    initial = [p.detach().clone() for p in trainer.params]
    step = trainer.begin()
    early = dict(step.metrics)
    assert all(torch.equal(p, q) for p, q in zip(trainer.params, initial))  # known before the update
    metrics, _ = trainer.finish(step)
    assert not all(torch.equal(p, q) for p, q in zip(trainer.params, initial))
    assert "loss/policy" not in early and early["step"] == 1
    for key, value in early.items():
        assert metrics[key] == value, key


def test_reusing_the_rollout_pass_for_the_first_epoch_gives_the_same_update_as_recomputing_it(tiny_model_config):
    """The rollout's forward pass, kept with its graph, is exactly the first epoch's pass: same weights after."""
    prompts = [f"prompt number {i}" for i in range(8)]
    config = PPOConfig(model=tiny_model_config, steps=1, batch_size=4, response_length=6, ppo_epochs=2,
                       learning_rate=3e-3, lr_schedule="constant")
    trained = []
    for reuse in (True, False):
        trainer = PPOTrainer(config, FirstHalfWins(), prompts)
        assert trainer.reuses_rollout_pass  # shared value head, one minibatch
        initial = [p.detach().clone() for p in trainer.params]
        trainer.reuses_rollout_pass = reuse
        metrics, _ = trainer.step()
        trained.append((initial, [p.detach().clone() for p in trainer.params], metrics))
    (init_a, after_a, metrics_a), (init_b, after_b, metrics_b) = trained
    assert all(torch.equal(p, q) for p, q in zip(init_a, init_b))
    assert not all(torch.equal(p, q) for p, q in zip(init_a, after_a))  # the update did something
    for p, q in zip(after_a, after_b):
        assert torch.allclose(p, q, atol=1e-6, rtol=1e-5)
    assert metrics_a["loss/policy"] == pytest.approx(metrics_b["loss/policy"], abs=1e-6)
    assert metrics_a["loss/value"] == pytest.approx(metrics_b["loss/value"], rel=1e-5)


def test_a_shared_value_head_adds_no_adapter_and_a_separate_one_does(tiny_model_config):
    prompts = [f"prompt number {i}" for i in range(4)]
    for value_model, adapters in (("shared", ["policy"]), ("separate", ["policy", "value"])):
        config = PPOConfig(model=tiny_model_config, steps=1, batch_size=4, response_length=4, value_model=value_model)
        trainer = PPOTrainer(config, FirstHalfWins(), prompts)
        assert sorted(trainer.model.peft.peft_config) == adapters
        assert trainer.reuses_rollout_pass == (value_model == "shared")


def test_a_reward_model_on_the_policy_base_shares_it_scores_as_before_and_trains_nothing(tiny_model_config):
    """PPO moves the RM's adapter onto the policy's base (one copy of the weights); scores must not change."""
    from rlhf_engine.config import RewardConfig
    from rlhf_engine.core.reward import new_reward_model

    rm = new_reward_model(RewardConfig(model=tiny_model_config))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in rm.backbone.named_parameters():
            if "lora_B" in name:  # a trained adapter, so that scoring through it differs from the bare base
                param.normal_(std=0.5)
    prompts = [f"prompt number {i}" for i in range(4)]
    responses = ["yes", "no no", "a longer answer here", "fine"]
    before = rm.score(prompts, responses, normalized=False)
    trainer = PPOTrainer(PPOConfig(model=tiny_model_config, steps=1, batch_size=4, response_length=4), rm, prompts)
    assert rm.backbone is trainer.model.peft
    assert torch.allclose(rm.score(prompts, responses, normalized=False), before, atol=1e-5)
    peft = trainer.model.peft
    assert peft.active_adapter == "policy"
    assert all(p.requires_grad for p in trainer.params)
    assert not any(p.requires_grad for n, p in peft.named_parameters() if ".reward." in n)
    assert not any(".reward." in n for n, p in peft.named_parameters() if any(p is q for q in trainer.params))
    trainer.step()
    assert torch.allclose(rm.score(prompts, responses, normalized=False), before, atol=1e-5)  # PPO left it alone
