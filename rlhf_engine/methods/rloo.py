"""RLOO (Ahmadian et al. 2024, "Back to basics"): REINFORCE with a leave-one-out baseline, as pure tensor
functions unit-tested against hand-computed numbers (tests/test_methods_math.py).

k answers per prompt; each answer's reward is its score minus β·KL (k1 summed over the answer, in the
reward as PPO puts it); its baseline is the mean reward of the other k − 1 answers to the same prompt, so
no value model is needed and the baseline does not depend on the answer it judges.

``RLOOTrainer`` turns the shared scored rollout (core/rollout.py) into this loss, one update per rollout
(on-policy REINFORCE); the loop is core/trainer.py's.
"""

from __future__ import annotations

import torch

from rlhf_engine.core.rollout import ScoredRollout
from rlhf_engine.methods.group import GroupBatch, GroupTrainer
from rlhf_engine.methods.grpo import clipped_loss


def sequence_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Each answer's reward [B]: its score minus β × its per-token KL [B, T] summed over its tokens."""
    return scores - beta * (kl * mask).sum(1)


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Advantages [P, k] of k ≥ 2 answers per prompt: A_i = r_i − (Σ_j r_j − r_i) / (k − 1)."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError(f"RLOO needs at least 2 answers per prompt, got {k}")
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)
    return rewards - baseline


def reinforce_loss(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """−mean_i A_i · log π(y_i): each answer's log-probability [B, T] summed over its tokens, weighted by
    its advantage [B] (a constant: no gradient flows through it)."""
    return -(advantages.detach() * (logprobs * mask).sum(1)).mean()


class RLOOTrainer(GroupTrainer):
    """RLOO iterations: k answers per prompt, rewards with the KL in them, leave-one-out advantages, REINFORCE."""

    method_name = "RLOO"
    token_mean_metrics = ("clip_ratio/region_mean",)

    def settings(self) -> str:
        cfg = self.config
        return (f"RLOO: beta={cfg.kl_coef:g}, KL estimator {cfg.kl_estimator}, {cfg.group_size} answers per "
                f"prompt, {cfg.epochs} epoch(s), {len(self.prompts)} prompts")

    def advantages(self, scored: ScoredRollout) -> GroupBatch:
        kl = scored.kl(self.config.kl_estimator)
        rewards = sequence_rewards(scored.scores, kl, scored.mask, self.config.kl_coef)
        return GroupBatch(scored, kl, rewards, leave_one_out_advantages(self.grouped(rewards)).flatten())

    def loss(self, batch: GroupBatch, rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """REINFORCE (``epochs`` 1, the paper's); with more passes, the clipped ratio per token with the answer's
        advantage (``grpo.grpo_loss`` without its KL term: RLOO's KL is in the reward), as TRL does."""
        if self.config.epochs > 1:
            loss, metrics = clipped_loss(self, batch, rows, self.config.cliprange)
            return loss, {"loss": metrics["loss"], "clip_ratio/region_mean": metrics["clip_ratio/region_mean"]}
        logprobs, _ = self.policy_forward(batch.scored, rows)
        loss = reinforce_loss(logprobs, batch.advantages[rows], batch.mask[rows])
        return loss, {"loss": loss.item()}
