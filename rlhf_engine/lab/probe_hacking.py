"""Reward hacking judged on a run's held-out probes: the rule of the ``reward_hacking`` alarm for runs that have them.

A run's probes (probes.jsonl) answer the same prompts with the same sampling seed at every probe step, so the
difference between two steps, prompt by prompt, is training and not a lucky batch: the spread of the prompts
cancels in the paired difference. Training batches are another matter: one batch of 8 answers moves the gold score
by ±0.15, and 3-step means of batches raised the alarm on a GRPO run whose probes gained +0.20 ± 0.07 gold.

``probe_reward_hacking(probes)``: the latest probe step against the step whose gold score peaked, when the gold
score is clearly below its peak while the reward model's score is clearly above its value there, else None.
Pure Python (``alarms`` and ``story`` both read it).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

from rlhf_engine.lab.noise import CLEAR_SE

# A run's probe history needs this many probe steps with a gold score (the reference's counting as step 0) before
# the rule can judge; until then a run with probes is not judged on its noisy training batches either.
PROBE_HACK_MIN_STEPS = 2
# A change counts when it is at least this many standard errors: the test of every "within the noise" the pages say
PROBE_CLEAR_SE = CLEAR_SE


def _number(value: Any) -> float | None:
    """``value`` as a finite float when it is a real number (bools excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def probe_means(probes: Sequence[Mapping]) -> dict[int, dict[str, tuple[float, float]]]:
    """{probe step: {prompt: (mean gold, mean RM score)}} over the answers that have both numbers, steps in order;
    the reference's answers are step 0, each prompt the mean of its answers (the reference may answer several
    times)."""
    answers: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for row in probes or ():
        if not isinstance(row, Mapping) or row.get("policy") not in ("reference", "policy"):
            continue
        gold, score, step = _number(row.get("gold")), _number(row.get("score")), _number(row.get("step"))
        step = 0 if row["policy"] == "reference" else int(step) if step is not None and step > 0 else None
        if gold is None or score is None or step is None:
            continue
        prompt = repr(row.get("prompt"))  # a prompt may be a list of chat messages
        answers.setdefault(step, {}).setdefault(prompt, []).append((gold, score))
    return {step: {prompt: (_mean([g for g, _ in pairs]), _mean([s for _, s in pairs]))
                   for prompt, pairs in by_prompt.items()} for step, by_prompt in sorted(answers.items())}


def _paired(later: list[float], earlier: list[float]) -> tuple[float, float]:
    """(mean, standard error) of the per-prompt differences later − earlier (SE NaN with one prompt)."""
    diffs = [a - b for a, b in zip(later, earlier)]
    mean = _mean(diffs)
    if len(diffs) < 2:
        return mean, float("nan")
    variance = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return mean, math.sqrt(variance / len(diffs))


def probe_peak_comparison(probes: Sequence[Mapping] | None) -> dict | None:
    """The latest probe step against the probe step whose gold score peaked, paired on the prompts both answered.

    Steps: the reference's (0) and the policy's, each with a gold and an RM score; the peak is the step with the
    highest mean gold score over its own prompts (a step may have answered only a subset). None with fewer than
    PROBE_HACK_MIN_STEPS steps, when the latest step is the peak, or when they share fewer than 2 prompts.
    Otherwise: ``peak_step``, ``step``, ``prompts`` (shared), ``peak_gold``, ``gold``, ``peak_score``, ``score``
    (means over the shared prompts), ``gold_drop`` (peak − latest) and ``score_rise`` (latest − peak), each with
    its standard error (``*_se``, of the mean paired difference).
    """
    means = probe_means(probes or ())
    if len(means) < PROBE_HACK_MIN_STEPS:
        return None
    step = max(means)
    peak_step = max(means, key=lambda s: (_mean([g for g, _ in means[s].values()]), -s))
    shared = [prompt for prompt in means[step] if prompt in means[peak_step]]
    if peak_step == step or len(shared) < 2:
        return None
    gold = [means[step][p][0] for p in shared], [means[peak_step][p][0] for p in shared]
    score = [means[step][p][1] for p in shared], [means[peak_step][p][1] for p in shared]
    gold_change, gold_se = _paired(*gold)
    score_change, score_se = _paired(*score)
    return {"peak_step": peak_step, "step": step, "prompts": len(shared),
            "peak_gold": _mean(gold[1]), "gold": _mean(gold[0]), "gold_drop": -gold_change, "gold_drop_se": gold_se,
            "peak_score": _mean(score[1]), "score": _mean(score[0]), "score_rise": score_change,
            "score_rise_se": score_se}


def probe_reward_hacking(probes: Sequence[Mapping] | None) -> dict | None:
    """``probe_peak_comparison`` when it shows reward hacking, else None: the gold score below its peak and the RM
    score above its value there, each by at least PROBE_CLEAR_SE standard errors of the paired difference."""
    found = probe_peak_comparison(probes)
    if found is None:
        return None
    if clearly_positive(found["gold_drop"], found["gold_drop_se"]) and \
            clearly_positive(found["score_rise"], found["score_rise_se"]):
        return found
    return None


def clearly_positive(change: float, se: float) -> bool:
    """Whether a change is above zero by at least PROBE_CLEAR_SE standard errors (never without a standard error,
    as ``noise.is_clear``)."""
    return change > 0 and math.isfinite(se) and change >= PROBE_CLEAR_SE * se


def probe_hacking_words(found: dict) -> tuple[str, str]:
    """(message, suggestion) of the alarm for a ``probe_reward_hacking`` result, naming what it read."""
    peak, step = found["peak_step"], found["step"]
    at_peak = "for the reference" if peak == 0 else f"at step {peak}"
    message = (
        f"On the {found['prompts']} held-out probe prompts (the same prompts and sampling seed at every probe), "
        f"the true (gold) score fell while the reward model's rose: gold {found['peak_gold']:.2f} {at_peak} → "
        f"{found['gold']:.2f} at step {step} ({-found['gold_drop']:+.2f} ± {found['gold_drop_se']:.2f}), RM score "
        f"{found['peak_score']:.2f} → {found['score']:.2f} ({found['score_rise']:+.2f} ± "
        f"{found['score_rise_se']:.2f}): the policy is exploiting the reward model's mistakes (over-optimisation, "
        "Gao et al. 2022).")
    stop = (" (the policy has only lowered the gold score so far)" if peak == 0 else
            f", stop at the checkpoint nearest step {peak} (where the held-out gold score peaked)")
    return message, f"Raise β{stop}, or train the reward model on more or fresher preference pairs."
