"""What every on-policy method shares between sampling and its update: the scored rollout, a typed batch.

A rollout is sampled at temperature T (``generation.sample_responses``), scored by the reward model (or
the demo's gold annotator beside it), and read back under the policy and the frozen reference (log-probs
of logits / T). The methods that sample differ only in how they turn it into a loss: each method's
``advantages`` (methods/) takes a ``ScoredRollout`` and nothing else.

The KL estimators are here because every method logs all three side by side (Schulman 2020).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rlhf_engine.core import distributed
from rlhf_engine.core.generation import Rollout
from rlhf_engine.core.normalisation import normalized

POLICY = "policy"  # the adapter name of a run's policy (the reference is the same base, adapters off)
PROBE_SEED = 1234  # sampling seed of every probe answer: the policy's differ from the reference's only by training
PHASES = ("generate", "forward", "reward", "update")  # timed parts of an iteration, logged as time/<phase>_s
KL_NAMES = ("k1", "k2", "k3")  # the estimators logged side by side as kl/<name>
POLICY_HINT = "try a lower learning rate or a smaller beta"  # what a policy run that blew up should try


PROMPT_STRIDE = 1_000_003  # seed distance between two probe prompts' streams (a prime: no two (prompt, sample) meet)


def probe_generators(prompts: int, sample: int = 0) -> list[torch.Generator]:
    """The random streams of probe answer ``sample`` to each of ``prompts`` probe prompts, one per prompt (seeded
    PROBE_SEED + sample + PROMPT_STRIDE * i): prompt i's answer is the same whether it is answered alone, with a
    subset of the probe prompts or with all of them. Answer 0 of the reference and every answer of the policy
    share sample 0; the reference's further answers (and best-of-n's further samples) take samples 1, 2, ..."""
    return [torch.Generator().manual_seed(PROBE_SEED + sample + PROMPT_STRIDE * i) for i in range(prompts)]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over positions where mask is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens.

    k1 = log pi(y) - log pi_ref(y)  (unbiased, can be negative per token)
    k2 = 0.5 * (log pi(y) - log pi_ref(y))^2  (biased, low variance, never negative)
    k3 = (r - 1) - log r with r = pi_ref(y) / pi(y)  (unbiased, never negative)
    (Schulman 2020, "Approximating KL divergence".)
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio ** 2
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}")


def kl_estimates(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """KL(policy || reference) per answer (nats, summed over its tokens, mean over answers) by each of k1,
    k2 and k3, to be logged side by side."""
    return {name: float((kl_penalty(logprobs, ref_logprobs, name) * mask).sum(1).mean()) for name in KL_NAMES}


def missing_eos_penalized(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """Scores with ``penalty`` subtracted where the response has no EOS (cut at the length cap), as TRL's
    missing_eos_penalty; unchanged when the penalty is None."""
    if penalty is None:
        return scores
    return torch.where(has_eos, scores, scores - penalty)


def policy_scores(reward_model, config, prompts: Sequence, texts: Sequence[str], has_eos: torch.Tensor,
                  raw: torch.Tensor | None = None):
    """(scores a policy run gives its answers, raw RM scores): the reward model's (``raw`` when known already),
    normalised (gain, bias) unless ``config.normalize_reward`` is off, minus ``config.missing_eos_penalty`` where it
    is set and the answer has no EOS. The one rule for training, probes and best-of-n."""
    if raw is None:
        raw = reward_model.score(list(prompts), list(texts), normalized=False).float()
    scores = normalized(raw, reward_model) if config.normalize_reward else raw
    return missing_eos_penalized(scores, has_eos.cpu(), config.missing_eos_penalty), raw


class NonFiniteError(FloatingPointError):
    """NaN or inf in a score, log-prob, logit or loss: the run stops, and the message names what and when."""

    def __init__(self, what: str, step: int, during: str = "", hint: str = POLICY_HINT):
        self.what, self.step, self.during, self.hint = what, step, during, hint
        verb = "are" if what.endswith(("logits", "log-probs")) else "is"
        super().__init__(f"{what} {verb} NaN or infinite at step {step}{f' ({during})' if during else ''}; the run "
                         f"was stopped ({hint})")

    def __reduce__(self):
        return type(self), (self.what, self.step, self.during, self.hint)


def check_finite(what: str, value: torch.Tensor | float, step: int, during: str = "", hint: str = POLICY_HINT) -> None:
    """The one NaN/inf check: stop the run with a NonFiniteError naming ``what`` and the step if ``value`` (a
    tensor or a number) holds NaN or inf; ``hint``: what to try.

    Under data parallelism it is decided on every process at once: one process stopping alone would leave
    the others waiting for it forever.
    """
    finite = math.isfinite(value) if isinstance(value, (int, float)) else bool(torch.isfinite(value).all())
    if distributed.any_process(not finite):
        raise NonFiniteError(what, step, during, hint)


@dataclass
class Beside:
    """What was read of a run's answers together with other runs' answers (``core.batched``, best-of-n's hand-over):
    their raw RM scores and, where read, the reference's log-probs and the gold scores."""

    raw: list[float]  # the reward model's raw (unnormalised) scores; each run normalises them as it does its own
    ref_logprobs: torch.Tensor | None = None  # [B, R] the reference's log-probs of the answer tokens (logits / T)
    gold: list[float] | None = None  # the gold annotator's scores, when the run logs them
    score_s: float = 0.0  # seconds the scoring took, all the runs' answers together
    reference_s: float = 0.0  # seconds the reference's pass took, all the runs' answers together


@dataclass
class ScoredRollout:
    """One step's sampled answers, scored and read back under the policy and the reference: all an update
    needs. Tensors are [B, R] per response token (zero past each answer's end) or [B] per answer."""

    rollout: Rollout  # the token tensors (prompts left-padded, answers cut after the first EOS)
    texts: list[str]  # the answers, decoded without special tokens
    logprobs: torch.Tensor  # [B, R] log pi(y_t) at sampling time, from logits / T (no grad)
    ref_logprobs: torch.Tensor  # [B, R] log pi_ref(y_t), the same base with adapters off
    entropy: torch.Tensor  # [B, R] the policy's entropy (nats) at each answer token
    scores: torch.Tensor  # [B] the scores the method optimises (normalised, minus any missing-EOS penalty)
    raw_scores: torch.Tensor  # [B] the reward model's scores before normalisation
    times: dict[str, float] = field(default_factory=dict)  # seconds per phase (PHASES) so far
    values: torch.Tensor | None = None  # [B, R] V(s_t) from PPO's value head; None for methods without one
    first_pass: tuple | None = None  # (log-probs, values) with their graph: the first update pass, not recomputed
    gold: list[float] | None = None  # the demo's gold score of each answer, when the run logs it

    @property
    def mask(self) -> torch.Tensor:
        """[B, R] float: 1 on answer tokens (up to and including the first EOS)."""
        return self.rollout.response_mask.float()

    def kl(self, estimator: str) -> torch.Tensor:
        """[B, R] per-token KL to the reference by ``estimator``, zero past each answer's end."""
        return kl_penalty(self.logprobs, self.ref_logprobs, estimator) * self.mask

    def metrics(self) -> dict[str, float]:
        """What every method logs of its rollout: the score, the three KL estimates, entropy, length and the
        share of answers that ended (per answer, means over the batch)."""
        mask, roll = self.mask, self.rollout
        metrics = {
            "objective/scores": self.scores.mean().item(),
            "objective/raw_scores": self.raw_scores.mean().item(),
            **{f"kl/{name}": value for name, value in kl_estimates(self.logprobs, self.ref_logprobs, mask).items()},
            "objective/entropy": (self.entropy * mask).sum(1).mean().item(),
            "response_length": roll.response_lengths.float().mean().item(),
            "eos_fraction": roll.has_eos.float().mean().item(),
        }
        if self.gold is not None:
            metrics["gold/score"] = sum(self.gold) / len(self.gold)
        return metrics
