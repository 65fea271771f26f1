"""Methods side by side over seeds: each method's held-out gold gain per seed, and a ranking that only orders two
methods where their difference stands clear of the spread between seeds.

One seed teaches a ranking that the next seed may reverse (a 4-method sweep of the workshop's budget gave RLOO
+0.27 ± 0.06 with one seed and −0.12 ± 0.07 with another). So the methods step trains every method at least twice,
side by side, and the sentences here compare means over seeds, ranking A above B only when

- their mean gains differ by more than the spread (max − min) between either's seeds, and
- by more than CLEAR_SE standard errors of the difference (each seed's standard error is over the prompts),

and say "not ranked" otherwise, with the number that stood in the way.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from rlhf_engine.lab.noise import CLEAR_SE, is_clear
from rlhf_engine.lab.sweep import split_label
from rlhf_engine.methods import registry


@dataclass
class MethodResult:
    """One method at one β over its seeds: each seed's held-out gold gain over the reference, paired by prompt."""

    method: str  # the registry name, e.g. "grpo"
    beta: float  # its KL coefficient
    seeds: list[int | None] = field(default_factory=list)  # the seeds, in the order of the lists below
    gains: list[float] = field(default_factory=list)  # each seed's mean gold gain over the reference
    ses: list[float] = field(default_factory=list)  # their standard errors over the prompts
    kls: list[float] = field(default_factory=list)  # each seed's KL to the reference at the same probe (nats)
    prompts: int = 0  # held-out prompts each gain is measured on

    @property
    def title(self) -> str:
        name = registry.get(self.method).title if registry.is_policy_kind(self.method) else self.method
        return f"{name} at β {self.beta:g}"

    @property
    def mean(self) -> float:
        return statistics.fmean(self.gains)

    @property
    def spread(self) -> float:
        """Max − min of the seeds' gains: how far apart two trainings of the same method landed (0 with one)."""
        return max(self.gains) - min(self.gains)

    @property
    def se(self) -> float:
        """Standard error of the mean over seeds, from each seed's standard error over the prompts."""
        return math.sqrt(sum(se * se for se in self.ses)) / len(self.ses)


def method_results(points: list[dict]) -> list[MethodResult]:
    """Group a methods sweep's frontier points (``Sweep.frontier``: labels method-beta-β[-seed-s], held-out
    ``gold_gain`` and ``gold_gain_se``) by method and β, in the order they first appear; points without a gold gain
    are left out."""
    results: dict[tuple[str, float], MethodResult] = {}
    for point in points:
        method, beta, seed = split_label(point["label"])
        if beta is None or "gold_gain" not in point or point.get("source") != "held-out":
            continue
        result = results.setdefault((method, beta), MethodResult(method, beta, prompts=point["prompts"]))
        result.seeds.append(seed)
        result.gains.append(point["gold_gain"])
        result.ses.append(point["gold_gain_se"])
        result.kls.append(point["kl"])
        result.prompts = min(result.prompts, point["prompts"])
    return list(results.values())


def _seed_name(seed: int | None) -> str:
    return "" if seed is None else f" (seed {seed})"


def gain_line(result: MethodResult) -> str:
    """'GRPO at β 0.04: gold gain +0.20 ± 0.07 (seed 0) and +0.15 ± 0.07 (seed 1) over the reference on the same
    54 held-out prompts, at KL 9.1 and 8.4 nats: a clear gain in both seeds.'"""
    gains = " and ".join(f"{gain:+.2f} ± {se:.2f}{_seed_name(seed)}"
                         for gain, se, seed in zip(result.gains, result.ses, result.seeds))
    kls = " and ".join(f"{kl:.1f}" for kl in result.kls)
    text = (f"{result.title}: gold gain {gains} over the reference on the same {result.prompts} held-out prompts, "
            f"at KL {kls} nats")
    clear = [is_clear(gain, se) for gain, se in zip(result.gains, result.ses)]
    rose = [gain > 0 for gain in result.gains]
    every = "in both seeds" if len(clear) == 2 else "in every seed" if len(clear) > 2 else ""
    if all(clear) and all(rose) or all(clear) and not any(rose):
        word = "a clear gain" if rose[0] else "a clear loss"
        return f"{text}: {word}{' ' + every if every else ''}."
    if not any(clear):
        return f"{text}: within the noise{' ' + every if every else ''}."
    parts = [f"{'a clear gain' if up else 'a clear loss'} in seed {seed}" if ok else f"within the noise in seed {seed}"
             for ok, up, seed in zip(clear, rose, result.seeds)]
    return f"{text}: {'; '.join(parts)}."


def compare(first: MethodResult, second: MethodResult) -> str | None:
    """Why ``first`` (the higher mean) is not ranked above ``second``, or None when it is: the difference of their
    means must exceed the spread between either's seeds and CLEAR_SE standard errors of the difference."""
    difference = first.mean - second.mean
    if len(first.gains) < 2 or len(second.gains) < 2:
        return "one seed cannot tell how far the next would land"
    widest = max((first, second), key=lambda r: r.spread)
    if difference <= widest.spread:
        return f"less than the spread between {widest.title}'s seeds ({widest.spread:.2f})"
    noise = CLEAR_SE * math.hypot(first.se, second.se)
    if difference <= noise:
        return f"less than {CLEAR_SE:g} standard errors of the difference ({noise:.2f})"
    return None


def ranking_lines(results: list[MethodResult]) -> list[str]:
    """Sentences that order the methods by mean gold gain, neighbour by neighbour, only where the difference
    stands clear of the seeds' spread and the noise; then the order in one line ('>' ranked, '≈' not)."""
    ordered = sorted(results, key=lambda r: r.mean, reverse=True)
    if len(ordered) < 2:
        return []
    lines, order = [], ordered[0].title
    for first, second in zip(ordered, ordered[1:]):
        difference = first.mean - second.mean
        why_not = compare(first, second)
        head = (f"{first.title} (mean {first.mean:+.2f}) and {second.title} (mean {second.mean:+.2f}) differ by "
                f"{difference:.2f}")
        if why_not is None:
            lines.append(f"{head}, more than the spread between either's seeds ({first.spread:.2f}, "
                         f"{second.spread:.2f}) and the noise: {first.title} ranks above.")
            order += f" > {second.title}"
        else:
            lines.append(f"{head}, {why_not}: not ranked.")
            order += f" ≈ {second.title}"
    lines.append(f"In order of mean gold gain: {order} (> ranked apart, ≈ not told apart by these seeds).")
    return lines
