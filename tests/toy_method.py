"""A method kept outside the package, as a user would add one: plain REINFORCE with a mean baseline.

Registered by its module path (RLHF_WORKBENCH_METHODS=tests.toy_method), so the CLI, the pages, sweeps, reports,
exports and the job processes (``python -m rlhf_engine run-job``) all know it; tests/test_toy_method.py checks each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf_engine.config import PolicyConfig
from rlhf_engine.core.rollout import ScoredRollout
from rlhf_engine.core.trainer import PolicyTrainer, SampledBatch
from rlhf_engine.methods.registry import Method


@dataclass
class ToyConfig(PolicyConfig):
    """Plain REINFORCE on whole answers, the batch's mean reward as the baseline."""

    baseline_weight: float = 1.0  # share of the batch's mean reward taken off each reward: 1 = mean baseline, 0 = none


def mean_baseline_advantages(rewards: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Advantages [B] of B answers' rewards [B]: A_i = r_i − w · (1/B) Σ_j r_j (w = 1: reward minus batch mean)."""
    return rewards - weight * rewards.mean()


@dataclass
class ToyBatch(SampledBatch):
    advantages: torch.Tensor  # [B] each answer's advantage, the same on all its tokens


class ToyTrainer(PolicyTrainer):
    method_name = "Toy REINFORCE"
    reads_sampler_logprobs = True  # no value model: the update's pass is the only policy pass

    def advantages(self, scored: ScoredRollout) -> ToyBatch:
        kl = scored.kl(self.config.kl_estimator)
        rewards = scored.scores - self.config.kl_coef * kl.sum(1)  # β·KL off each answer's score, as PPO and RLOO
        return ToyBatch(scored, kl, mean_baseline_advantages(rewards, self.config.baseline_weight))

    def loss(self, batch: ToyBatch, rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """−mean_i A_i · Σ_t log π(y_i,t): each answer's log-probability weighted by its (constant) advantage."""
        logprobs, _ = self.policy_forward(batch.scored, rows)
        loss = -(batch.advantages[rows].detach() * (logprobs * batch.mask[rows]).sum(1)).mean()
        return loss, {"loss": loss.item()}


METHOD = Method(
    name="toy", title="Toy REINFORCE", config=ToyConfig, trainer="tests.toy_method:ToyTrainer",
    summary="Toy REINFORCE raises answers whose reward (score − β·KL) is above the batch's mean reward: a method "
            "kept outside the package, for tests.",
    panels=(("Reward", ("objective/scores",)), ("KL to the reference", ("objective/kl",)), ("Loss", ("loss",)),
            ("Step time (s)", ("time/step_s",))),
    followed=("objective/scores", "objective/kl", "time/step_s"),
)
