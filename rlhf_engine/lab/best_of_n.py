"""Best-of-n: the baseline every RLHF policy should beat (Nakano et al. 2021; Gao et al. 2022).

Sample n responses from the reference policy and keep the one the reward model scores highest. Its
KL to the reference is known in closed form (Stiennon et al. 2020, appendix; Gao et al. 2022, eq. 1):

    KL(best-of-n || reference) = log n - (n - 1) / n   nats per response

so best-of-n for n = 1, 2, 4, ... draws a reward-vs-KL curve with no training at all. From N samples
per prompt, the expected score of best-of-n for every n <= N is read without bias from the sorted
samples: the i-th smallest of N is the best of a random n-subset with probability
C(i-1, n-1) / C(N, n).

Best-of-n answers the runs' held-out probe prompts, and its sample i of prompt p draws from the very stream of
the reference's probe answer i to p (``rollout.probe_generators``): its first ``reference_probe_samples``
samples ARE the reference's probe answers, scored as the runs score them. So its n = 1 point is the reference
the runs' gains are measured from, and every gain on the page is paired over the same prompts.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rlhf_engine.lab.noise import mean_and_se

if TYPE_CHECKING:  # the curve's arithmetic is read by pages and reports that never load torch
    import torch

    from rlhf_engine.core.generation import Rollout

Scorer = Callable[..., tuple[list[float], list[float]]]  # (prompts, answers, has_eos tensor) -> (scores, raw RM scores)


def best_of_n_kl(n: int) -> float:
    """KL of best-of-n sampling to the sampling policy, in nats per response: log n - (n - 1) / n."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return math.log(n) - (n - 1) / n


def expected_best_of_n(proxy: Sequence[float], n: int, other: Sequence[float] | None = None) -> float:
    """Expected value of the best of n samples drawn without replacement from these N, best by ``proxy``.

    With ``other`` (e.g. the gold score of the same samples), the expectation of ``other`` for the sample
    the proxy picks: what best-of-n achieves on the true reward.
    """
    total = len(proxy)
    if not 1 <= n <= total:
        raise ValueError(f"n must be between 1 and the number of samples ({total}), got {n}")
    values = other if other is not None else proxy
    order = sorted(range(total), key=lambda i: proxy[i])
    subsets = math.comb(total, n)
    return sum(math.comb(rank, n - 1) / subsets * values[i] for rank, i in enumerate(order) if rank >= n - 1)


def best_of_n_curve(proxy: Sequence[Sequence[float]], gold: Sequence[Sequence[float]] | None = None,
                    ns: Sequence[int] | None = None, reference_samples: int | None = None) -> list[dict]:
    """One row per n: ``n``, ``kl``, ``prompts``, and over the prompts the means and standard errors of ``score``
    (``score_se``) and ``gold`` (``gold_se``), and the paired gains over n = 1 (``score_gain``, ``gold_gain``
    with ``*_se``: the standard error of the mean per-prompt difference). proxy[p] holds prompt p's N sample
    scores (every prompt cut to the fewest any has); ``ns`` defaults to the powers of two up to N (and N).

    n = 1 is the mean of each prompt's first ``reference_samples`` samples (default all N): with the runs'
    ``reference_probe_samples``, exactly the reference's probe answers, the baseline of the runs' gains, so the
    curve starts where their reference point is. Every n > 1 uses all N samples (``expected_best_of_n``).
    """
    if not proxy:
        raise ValueError("no prompts")
    total = min(len(scores) for scores in proxy)
    baseline = min(reference_samples or total, total)
    if ns is None:
        ns = sorted({2 ** k for k in range(int(math.log2(total)) + 1)} | {total})
    keyed = {"score": proxy, **({"gold": gold} if gold is not None else {})}
    rows = []
    for n in ns:
        row = {"n": n, "kl": best_of_n_kl(n), "prompts": len(proxy)}
        for key, values in keyed.items():
            before = [statistics.fmean(v[:baseline]) for v in values]
            after = before if n == 1 else [expected_best_of_n(p[:total], n, v[:total]) for p, v in zip(proxy, values)]
            row[key], row[f"{key}_se"] = mean_and_se(after)
            row[f"{key}_gain"], row[f"{key}_gain_se"] = mean_and_se([a - b for a, b in zip(after, before)])
        rows.append(row)
    return rows


def scores_as_probed(reward_model, config) -> Scorer:
    """The scores the runs give their probe answers (``rollout.policy_scores``), with the raw RM scores: best-of-n's
    n = 1 point equals the reference's probe mean only if it scores so."""
    from rlhf_engine.core.rollout import policy_scores

    def score(prompts: Sequence, texts: Sequence[str], has_eos: torch.Tensor) -> tuple[list[float], list[float]]:
        scores, raw = policy_scores(reward_model, config, prompts, texts, has_eos)
        return scores.tolist(), raw.tolist()

    return score


@dataclass
class ReferenceAnswers:
    """Some of best-of-n's samples as decoded and scored: sample ``sample`` of ``prompts`` (a slice of the probe
    prompts), their raw RM scores and gold scores. The first ``reference_probe_samples`` of each prompt are the
    reference's probe answers, handed to the runs of a sweep instead of being decoded and scored again."""

    sample: int
    prompts: list
    rollout: Rollout
    raw: list[float]  # the reward model's raw (unnormalised) scores, each run normalises them as it does its own
    gold: list[float] | None  # the gold annotator's, when logged


@dataclass
class BestOfNSamples:
    """Best-of-n's N samples per prompt, scored: proxy[p][i] (and gold[p][i]) is sample i of prompt p."""

    proxy: list[list[float]]
    gold: list[list[float]] | None
    kept: list[ReferenceAnswers] = field(default_factory=list)  # samples < ``keep``, as decoded


def sample_and_score(policy, tokenizer, prompts: Sequence, n: int, score: Scorer, response_length: int,
                     temperature: float, chat_template: bool = True, gold_scorer: Callable[[str], float] | None = None,
                     keep: int = 0, batch_size: int = 64, rows: int = 128,
                     on_progress: Callable[[int, int], None] = lambda done, total: None,
                     policy_context: Callable = contextlib.nullcontext) -> BestOfNSamples:
    """n sampled responses per prompt, scored by ``score`` (``scores_as_probed``) and, if given, the gold scorer.

    ``prompts`` are the first len(prompts) probe prompts: sample i of prompt p draws from
    ``probe_generators(len(prompts), i)[p]``, the stream of the reference's probe answer i to p, so samples
    0..r-1 are the reference's r probe answers. Up to ``batch_size`` prompts at a time, each with as many of its
    samples as make at most ``rows`` rows in one decoding (``sample_responses``' repeats: a prompt passes once for
    them all, and so it is scored); the samples before ``keep`` are returned as decoded (``kept``).
    ``policy_context`` is entered only while sampling (the reference as a PEFT model with its adapters disabled,
    whose reward adapter must be on again to score).
    """
    from rlhf_engine.core.generation import decode_responses, sample_responses
    from rlhf_engine.core.rollout import probe_generators

    prompts = list(prompts)
    streams = [probe_generators(len(prompts), sample) for sample in range(n)]
    proxy: list[list[float]] = [[] for _ in prompts]
    gold: list[list[float]] = [[] for _ in prompts]
    kept: list[ReferenceAnswers] = []
    done, total = 0, len(prompts) * n
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        together = max(1, rows // len(batch))
        for first in range(0, n, together):
            samples = range(first, min(n, first + together))
            generators = [g for sample in samples for g in streams[sample][start:start + len(batch)]]
            with policy_context():
                rollout = sample_responses(policy, tokenizer, batch, response_length, temperature, chat_template,
                                           generators=generators, repeats=len(samples))
            texts = decode_responses(tokenizer, rollout)
            values, raw = score(batch * len(samples), texts, rollout.has_eos)
            golds = [gold_scorer(text) for text in texts] if gold_scorer is not None else None
            for j, sample in enumerate(samples):
                part = slice(j * len(batch), (j + 1) * len(batch))
                for p, value in enumerate(values[part], start):
                    proxy[p].append(value)
                if golds is not None:
                    for p, value in enumerate(golds[part], start):
                        gold[p].append(value)
                if sample < keep:
                    kept.append(ReferenceAnswers(sample, batch, rollout.rows(part), raw[part],
                                                 golds[part] if golds is not None else None))
            done += len(rollout.has_eos)
            on_progress(done, total)
    kept.sort(key=lambda piece: piece.sample)  # sample by sample, each in the prompts' order
    return BestOfNSamples(proxy, gold if gold_scorer is not None else None, kept)
