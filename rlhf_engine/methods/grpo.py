"""GRPO (Shao et al. 2024, DeepSeekMath) and Dr. GRPO (Liu et al. 2025): advantages and loss as pure tensor
functions, each unit-tested against hand-computed numbers (tests/test_methods_math.py).

G answers per prompt; each answer's advantage is its score against its group's (no value model); the
policy loss is PPO's clipped ratio per token, with the KL to the reference either as β·k3 per token in the
loss (GRPO's) or, as PPO does, k1 in the reward. Dr. GRPO removes two biases: no division by the group's
standard deviation (it favours groups whose answers scored nearly alike), and token sums over a constant
instead of per-answer means (the mean rewards short wrong answers and long right ones less).

``GRPOTrainer`` turns the shared scored rollout (core/rollout.py) into this loss; the loop is core/trainer.py's.
"""

from __future__ import annotations

import torch

from rlhf_engine.core.rollout import ScoredRollout, kl_penalty, masked_mean
from rlhf_engine.methods.group import GroupBatch, GroupTrainer

STD_EPS = 1e-4  # added to a group's standard deviation before dividing (TRL's GRPOTrainer)
LOSS_TYPES = ("grpo", "dr_grpo")  # per-answer token means (GRPO) or token sums over a constant (Dr. GRPO)


def group_advantages(scores: torch.Tensor, scale_by_std: bool = True) -> torch.Tensor:
    """Advantages of G answers per prompt from their scores, both [P, G].

    GRPO: A_i = (r_i − mean(r)) / (std(r) + STD_EPS), std over the group (unbiased, as TRL);
    Dr. GRPO (scale_by_std=False): A_i = r_i − mean(r).
    """
    advantages = scores - scores.mean(dim=1, keepdim=True)
    if scale_by_std:
        advantages = advantages / (scores.std(dim=1, keepdim=True) + STD_EPS)
    return advantages


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              cliprange: float, beta: float = 0.0, ref_logprobs: torch.Tensor | None = None,
              loss_type: str = "grpo", max_length: int | None = None) -> tuple[torch.Tensor, dict]:
    """The GRPO policy loss over answers [B, T] whose advantages are [B] (one per answer, on every token).

    Per token: l_t = −min(ρ_t A, clip(ρ_t, 1 − ε, 1 + ε) A) + β k3_t, ρ_t = π(y_t)/π_old(y_t), k3 as
    ``rollout.kl_penalty`` (never negative).
    "grpo": mean over each answer's tokens, then over answers; "dr_grpo": sum over every token divided by
    B × max_length (a constant: the length cap). Returns (loss, {"clip_ratio", "kl"}), the clipped share of
    tokens and the mean k3 (0 without a reference).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    ratio = torch.exp(logprobs - old_logprobs)
    advantage = advantages.unsqueeze(1)
    unclipped, clipped = ratio * advantage, torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange) * advantage
    per_token = -torch.min(unclipped, clipped)
    kl = kl_penalty(logprobs, ref_logprobs, "k3") if ref_logprobs is not None else torch.zeros_like(logprobs)
    if beta:
        per_token = per_token + beta * kl
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    else:
        loss = (per_token * mask).sum() / (mask.shape[0] * (max_length or mask.shape[1]))
    with torch.no_grad():
        metrics = {"clip_ratio": float(masked_mean((clipped < unclipped).float(), mask)),
                   "kl": float(masked_mean(kl, mask))}
    return loss, metrics


class GRPOTrainer(GroupTrainer):
    """GRPO iterations: G answers per prompt, group-normalised advantages, the clipped loss with β·k3 per
    token (``kl_in`` = "loss") or β·KL off each score before the group comparison (``kl_in`` = "reward")."""

    method_name = "GRPO"
    token_mean_metrics = ("kl", "clip_ratio/region_mean")

    def settings(self) -> str:
        cfg = self.config
        return (f"{'Dr. GRPO' if cfg.loss_type == 'dr_grpo' else 'GRPO'}: beta={cfg.kl_coef:g} (KL in the "
                f"{cfg.kl_in}), {cfg.group_size} answers per prompt, {cfg.epochs} epoch(s), "
                f"{len(self.prompts)} prompts")

    def advantages(self, scored: ScoredRollout) -> GroupBatch:
        cfg = self.config
        kl = scored.kl(cfg.kl_estimator)
        rewards = scored.scores - cfg.kl_coef * kl.sum(1) if cfg.kl_in == "reward" else scored.scores
        advantages = group_advantages(self.grouped(rewards), scale_by_std=cfg.loss_type == "grpo").flatten()
        return GroupBatch(scored, kl, rewards, advantages)

    def loss(self, batch: GroupBatch, rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``grpo_loss`` of the answers ``rows`` (the KL term only with ``kl_in`` = "loss"), under TRL's names."""
        cfg = self.config
        return clipped_loss(self, batch, rows, cfg.cliprange, cfg.kl_coef if cfg.kl_in == "loss" else 0.0,
                            cfg.loss_type)


def clipped_loss(trainer: GroupTrainer, batch: GroupBatch, rows: torch.Tensor, cliprange: float, beta: float = 0.0,
                 loss_type: str = "grpo") -> tuple[torch.Tensor, dict[str, float]]:
    """``grpo_loss`` of a group batch's answers ``rows`` against their first pass (GRPO's loss, and RLOO's clipped
    form with beta 0): (loss, {"loss", "kl", "clip_ratio/region_mean"})."""
    scored = batch.scored
    logprobs, _ = trainer.policy_forward(scored, rows)
    loss, metrics = grpo_loss(logprobs, batch.first_pass_of(rows, logprobs), batch.advantages[rows],
                              batch.mask[rows], cliprange, beta, scored.ref_logprobs[rows], loss_type,
                              trainer.config.response_length)
    return loss, {"loss": loss.item(), "kl": metrics["kl"], "clip_ratio/region_mean": metrics["clip_ratio"]}
