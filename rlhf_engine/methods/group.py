"""What the group methods (GRPO, RLOO) share: several answers to each prompt, each judged against its group.

No value model: one advantage per answer, the same on all its tokens. The rollout's log-probs are the sampler's
own (no policy pass before the update), and the update's gradient is taken in parts of ``answers_per_pass``
answers. The rollout is logged under TRL's GRPO/RLOO metric names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf_engine.core.rollout import masked_mean
from rlhf_engine.core.trainer import PolicyTrainer, SampledBatch, UpdatePlan


@dataclass
class GroupBatch(SampledBatch):
    """A scored rollout of groups (``group_size`` answers to each prompt, in a row) with each answer's reward and
    advantage [B]: what the group methods' losses need."""

    rewards: torch.Tensor  # [B] what the group compares: the score (minus beta * KL where KL is in the reward)
    advantages: torch.Tensor  # [B] each answer's advantage, the same on all its tokens
    old_logprobs: torch.Tensor | None = None  # [B, R] the ratio's denominator: each answer's first pass, detached
    seen: torch.Tensor | None = None  # [B] bool: the answers whose first pass has been taken

    def first_pass_of(self, rows: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
        """The ratio's old log-probs of ``rows``: the policy before the update, read on the update's own path (the
        rows' first pass, kept detached): the first epoch's ratio is exactly 1, as TRL's with num_iterations 1."""
        if self.old_logprobs is None:
            self.old_logprobs = torch.zeros_like(self.scored.logprobs)
            self.seen = torch.zeros(len(self), dtype=torch.bool)
        new = ~self.seen[rows]
        self.old_logprobs[rows[new]] = logprobs.detach()[new]
        self.seen[rows] = True
        return self.old_logprobs[rows]


class GroupTrainer(PolicyTrainer):
    """A method that samples ``group_size`` answers per prompt and judges each against its group."""

    reads_sampler_logprobs = True  # no value model: the update's passes are the only policy passes

    @staticmethod
    def answers_per_prompt(config) -> int:
        return config.group_size

    def update_plan(self) -> UpdatePlan:
        return UpdatePlan(epochs=self.config.epochs, rows_per_part=self.config.answers_per_pass)

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """[B] -> [prompts, group_size] (a group's answers are consecutive rows)."""
        return x.view(-1, self.config.group_size)

    def method_metrics(self, batch: GroupBatch) -> dict:
        scored, mask = batch.scored, batch.mask
        scores = self.grouped(scored.scores)
        return {"reward": scored.scores.mean().item(),
                "reward_std": scores.std(dim=1).mean().item(),
                "frac_reward_zero_std": frac_reward_zero_std(scores),
                "entropy": masked_mean(scored.entropy, mask).item(),
                "completions/mean_length": scored.rollout.response_lengths.float().mean().item(),
                "completions/clipped_ratio": 1.0 - scored.rollout.has_eos.float().mean().item()}

    def token_view(self, batch: GroupBatch, i: int, n: int) -> dict:
        """The answer's reward and advantage (one number each: a group method has no per-token values)."""
        return {"reward": round(batch.rewards[i].item(), 5), "advantage": round(batch.advantages[i].item(), 5)}


def frac_reward_zero_std(scores: torch.Tensor) -> float:
    """Share of prompts whose G answers all scored the same ([P, G]): such groups give every answer a zero
    advantage and teach nothing (TRL's ``frac_reward_zero_std``)."""
    std = scores.std(dim=1)
    return float(torch.isclose(std, torch.zeros_like(std)).float().mean())
