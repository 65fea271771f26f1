"""PPO with a per-token KL penalty to the frozen reference policy (Ziegler et al. 2019; Ouyang et al. 2022).

One copy of the base weights serves three roles: the policy (LoRA adapter "policy"), the reference
(the same base with adapters disabled) and the value function (a linear head on the policy's last hidden
state; with ``value_model = "separate"``, on a LoRA adapter "value" of its own).
Each iteration has three phases you can point to:

1. rollout (no grad): sample responses at temperature T, score them with the reward model, read
   policy/reference log-probs (logits / T) and values;
2. advantages: per-token reward = -beta * KL_t, plus the normalised RM score on the last token;
   GAE backwards over the response (gamma, lambda), advantages whitened;
3. update: ``ppo_epochs`` passes over minibatches with the clipped policy loss and clipped value loss.

The pure functions at the top are the algorithm; ``PPOTrainer`` wires them to the models through the
trainer every method shares (core/trainer.py: rollout, scoring, the update loop, probes, checkpoints).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rlhf_engine.core import distributed
from rlhf_engine.core.generation import last_hidden_state, response_logits
from rlhf_engine.core.heads import load_head, new_head, save_head
from rlhf_engine.core.kl_control import AdaptiveKLController
from rlhf_engine.core.policy import Policy, adapters_on_base
from rlhf_engine.core.rollout import POLICY, ScoredRollout, masked_mean
from rlhf_engine.core.trainer import PolicyTrainer, SampledBatch, UpdatePlan, rounded

VALUE = "value"
VALUE_HEAD_FILE = "value_head.safetensors"


# ----------------------------------------------------------------------------------------------
# The algorithm: pure tensor functions, each unit-tested against hand-computed numbers.
# ----------------------------------------------------------------------------------------------

def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
           all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(x - mean) / std over the mask; with shift_mean=False the mean is added back (rewards keep their sign).

    ``all_sum`` (a sum over data-parallel processes) makes mean and unbiased variance those of the whole batch.
    """
    total = all_sum or (lambda t: t)
    n = total(mask.sum())
    mean = total((x * mask).sum()) / n.clamp(min=1)
    var = total((((x - mean) ** 2) * mask).sum()) / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def per_token_rewards(kl: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, beta: float):
    """Reward per token: -beta * KL_t on every response token, plus the RM score on the last one.

    Returns (rewards, non_score_rewards), both [B, R] and zero past the end of each response.
    """
    non_score = -beta * kl * mask
    last = (mask.sum(1) - 1).clamp(min=0).long()
    rewards = non_score.clone()
    rewards[torch.arange(len(scores), device=scores.device), last] += scores
    return rewards, non_score


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation, backwards over the response; returns (advantages, returns).

    delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1};  returns = A + V.
    Positions past the end of a response have zero reward and value, so they add nothing.
    """
    values = values * mask
    rewards = rewards * mask
    last_gae = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages[:, t] = last_gae
    returns = advantages + values
    return advantages * mask, returns * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, cliprange: float):
    """Clipped surrogate objective (Schulman et al. 2017), as a loss; also clip fraction and approx KL."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    return loss, clipfrac, approx_kl


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float):
    """Clipped value loss: 0.5 * max((V - R)^2, (V_clipped - R)^2), V clipped around the rollout values."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_loss, clipped_loss), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return loss, clipfrac


# ----------------------------------------------------------------------------------------------
# The models: policy + value adapters on one base; reference = adapters disabled.
# ----------------------------------------------------------------------------------------------

def value_adapter_name(policy_adapter: str) -> str:
    """The separate value adapter's name beside a run's policy adapter ("value" beside "policy")."""
    return VALUE if policy_adapter == POLICY else f"{policy_adapter}-{VALUE}"


class PolicyAndValue(Policy):
    """One base model: the policy (a LoRA adapter), the reference (adapters disabled) and the value.

    ``shared``: the value head reads the policy's own last hidden state, as in Ziegler et al.'s code
    (lm-human-preferences) and TRL's original value-head model, so one pass gives log-probs and values
    and the value loss also shapes the policy adapter (weighted by vf_coef). Otherwise the value function
    has its own LoRA adapter on the same base: no shared gradients, but two passes per update.

    Several of them can live on one base model (the runs of a batched sweep): each then has adapters of
    its own names (``name``, and ``name``-value), a value head of its own, and the base weights are shared.
    A run's adapters are saved as ``policy/`` (and ``value/``) whatever their names inside the model.
    """

    def __init__(self, peft_model, value_head: nn.Linear, shared: bool, name: str = POLICY):
        super().__init__(peft_model, name)
        self.value_head = value_head
        self.shared = shared
        self.value_adapter = value_adapter_name(name)

    @property
    def adapters(self) -> dict[str, str]:
        names = super().adapters
        if not self.shared:
            names[VALUE] = self.value_adapter
        return names

    @classmethod
    def create(cls, config, base=None, name: str = POLICY):
        """Fresh adapters (seeded with config.seed) and a zero value head; on ``base`` = (PEFT model,
        tokenizer) of another run's base when given (a batched sweep), else on a newly loaded base."""
        shared = config.value_model == "shared"
        peft_model, tokenizer = adapters_on_base(config, base, [name] if shared else [name, value_adapter_name(name)])
        # Zero-initialised, as in Ziegler et al.'s code (lm-human-preferences: value head scale 0): the
        # first advantages are then the discounted scores, not the noise of a random head.
        model = cls(peft_model, new_head(peft_model, random_init=False), shared, name)
        model.use(POLICY)
        return model, tokenizer

    def use(self, role: str) -> None:
        """Make this run's policy or value adapter the active one. Both keep requires_grad on: PEFT turns it off
        for the adapter it deactivates, and a leaf without it gets no gradient from a pass made before."""
        self.peft.set_adapter(self.policy_adapter if role == POLICY else self.value_adapter)
        if not self.shared:
            for param in self.trainable_parameters():
                param.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The adapters and the value head."""
        return super().trainable_parameters() + list(self.value_head.parameters())

    @property
    def single_pass(self) -> bool:
        return self.shared

    def forward(self, input_ids, attention_mask, response_length: int, temperature: float):
        """(logits / T [B, R, V], values [B, R]): one pass with the shared value head; with a separate value
        adapter, the policy's pass and then the value's (two passes, both graphs held until the backward)."""
        if not self.shared:
            logits = self.policy_logits(input_ids, attention_mask, response_length, temperature)
            return logits, self.values(input_ids, attention_mask, response_length)
        self.use(POLICY)
        logits, hidden = response_logits(self.peft, input_ids, attention_mask, response_length, temperature,
                                         with_hidden=True)
        return logits, self._head(hidden)

    def values(self, input_ids, attention_mask, response_length: int):
        """V(s_t) for each response token t: the value head on the hidden state that predicts token t."""
        self.use(POLICY if self.shared else VALUE)
        hidden = last_hidden_state(self.peft, input_ids, attention_mask)
        return self._head(hidden[:, -response_length - 1:-1])

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()

    def save_adapters(self, folder: Path) -> None:
        """policy/ (and value/) as standard PEFT adapter folders; the value head (VALUE_HEAD_FILE)."""
        super().save_adapters(folder)
        save_head(self.value_head, Path(folder) / VALUE_HEAD_FILE)

    def load_adapters(self, folder: Path) -> None:
        """Load adapters and value head written by save_adapters."""
        super().load_adapters(folder)
        load_head(Path(folder) / VALUE_HEAD_FILE, self.value_head)
        self.use(POLICY)


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------

@dataclass
class PPOBatch(SampledBatch):
    """A scored rollout with what PPO's loss needs: per-token KL, rewards, advantages and returns [B, R]."""

    rewards: torch.Tensor  # -beta * KL_t on every token, plus the score on the last (whitened if asked)
    non_score: torch.Tensor  # the KL part of the rewards alone
    advantages: torch.Tensor  # GAE advantages (whitened unless turned off)
    returns: torch.Tensor  # advantages + values: the value function's targets


class PPOTrainer(PolicyTrainer):
    """PPO iterations on a policy, its value function and the reference; ``step()`` returns (metrics, samples)."""

    model_class = PolicyAndValue
    method_name = "PPO"

    def __init__(self, config, reward_model, prompts, gold_scorer=None, base=None, name: str = POLICY):
        super().__init__(config, reward_model, prompts, gold_scorer, base, name)
        if config.adaptive_kl:
            self.kl_ctl = AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)

    def settings(self) -> str:
        cfg = self.config
        return (f"PPO: beta={self.beta:g} ({'adaptive' if cfg.adaptive_kl else 'fixed'}), KL estimator "
                f"{cfg.kl_estimator}, value model {cfg.value_model}, {len(self.prompts)} prompts")

    def update_plan(self) -> UpdatePlan:
        return UpdatePlan(epochs=self.config.ppo_epochs, minibatches=self.config.num_mini_batches)

    # -- phase 2 ------------------------------------------------------------------------------
    def advantages(self, scored: ScoredRollout) -> PPOBatch:
        """Per-token rewards with the KL penalty, then GAE and whitening."""
        cfg = self.config
        mask = scored.mask
        kl = scored.kl(cfg.kl_estimator)
        rewards, non_score = per_token_rewards(kl, scored.scores, mask, self.beta)
        if cfg.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False, all_sum=distributed.all_sum)
        advantages, returns = gae(rewards, scored.values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask, all_sum=distributed.all_sum)
        return PPOBatch(scored, kl, rewards, non_score, advantages, returns)

    def method_metrics(self, batch: PPOBatch) -> dict:
        non_score = batch.non_score.sum(1)
        return {"objective/non_score_reward": non_score.mean().item(),
                "objective/rlhf_reward": (batch.scored.scores + non_score).mean().item()}

    # -- phase 3 ------------------------------------------------------------------------------
    def loss(self, batch: PPOBatch, rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The clipped policy loss and the clipped value loss of a minibatch (``ppo_epochs`` x minibatches of it
        make the update)."""
        cfg, scored, mask = self.config, batch.scored, batch.mask[rows]
        logprobs, values = self.policy_forward(scored, rows)
        pg_loss, clipfrac, approx_kl = policy_loss(logprobs, scored.logprobs[rows], batch.advantages[rows], mask,
                                                   cfg.cliprange)
        vf_loss, vf_clipfrac = value_loss(values, scored.values[rows], batch.returns[rows], mask, cfg.cliprange_value)
        loss = pg_loss + cfg.vf_coef * vf_loss  # the PPO loss (Schulman et al. 2017, eq. 9, no entropy bonus)
        return loss, {"policy/approxkl": float(approx_kl), "policy/clipfrac": float(clipfrac),
                      "val/clipfrac": float(vf_clipfrac), "loss/policy": float(pg_loss.detach()),
                      "loss/value": float(vf_loss.detach())}

    def token_view(self, batch: PPOBatch, i: int, n: int) -> dict:
        """Each answer token's value and advantage, beside its KL."""
        return {"token_value": rounded(batch.scored.values[i, :n]), "token_advantage": rounded(batch.advantages[i, :n])}
