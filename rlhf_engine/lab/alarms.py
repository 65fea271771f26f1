"""Plain-language health alarms over a policy run's metric stream (every method that samples its answers).

``check(metrics, config, status, probes)`` reads the per-step metric rows a run has logged so far (and its
held-out probe answers, where it has them) and returns the alarms that hold at the end of the stream, each as an
``Alarm`` with a message (what is happening, with the numbers, and what they were read on) and a suggestion (what
to try). Pure Python, stdlib only; safe to call on a partial, messy stream: missing keys, non-numeric values and
empty lists are skipped, never raised on.

The alarms:

- ``nan`` (error): a tracked metric is NaN or infinite, or the run failed with a NaN/infinite error.
- ``kl_negative``: with the k1 estimator, the recent mean KL is clearly below zero, so the sampled tokens are
  ones the reference model prefers and the KL penalty is paying the policy rather than holding it back.
- ``kl_runaway``: KL rises step after step and has grown large: the policy is drifting away from the reference
  without anything stopping it (after the first steps, and not at β = 0, where nothing is meant to).
- ``reward_hacking``: (demo data with a gold score only) the reward model's score keeps rising while the true
  gold score falls: the policy exploits the reward model's mistakes (over-optimisation, Gao et al. 2022). A run
  with held-out probes is judged on them (``probe_reward_hacking``: the same prompts and sampling seed at every
  probe, changes of at least 2 standard errors), never on its training batches: one batch of 8 answers moves the
  gold score by ±0.15, so 3-step means of batches raised the alarm on runs whose probes gained clearly.
- ``entropy_collapse``: entropy per token has fallen to a small fraction of its starting value: the policy
  answers almost deterministically (mode collapse).
- ``clipfrac_high``: a large share of tokens hit the clip of the policy ratio (PPO's, or a group method's past its
  first epoch): each update moves the policy too far. The suggestion names the run's own settings (PPO's
  ppo_epochs and num_mini_batches, a group method's epochs), read from the fields its config has.
- ``value_loss_diverging``: the value loss keeps growing and is far above its best value.
- ``length_cap``: almost no response ends with EOS, so nearly all of them are cut off at the length cap.
- ``zero_std_groups``: (GRPO, RLOO) in most groups every answer scored the same, so their advantages are all
  zero and those prompts teach nothing (TRL's ``frac_reward_zero_std``).
- ``length_drift``: the answer length has moved steadily up (or down) by a large share over the last steps:
  the policy may have found that length pays (a length bias of the reward model, or of the loss).

The config is the run's saved settings (a dict, with no method name in it): where a suggestion names a setting
that only some methods have, it names the one this config has.

Every alarm looks at the end of the stream only (a short window of the last steps), so an alarm that no longer
holds disappears on the next check; ``new_alarms`` helps log each alarm once per run, and ``raised_alarms`` gives
a page every alarm the run raised (its status and events.log) with whether it still holds.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from rlhf_engine.lab.probe_hacking import probe_hacking_words, probe_peak_comparison, probe_reward_hacking

__all__ = ["ALARM_CODES", "Alarm", "check", "new_alarms", "probe_peak_comparison", "probe_reward_hacking"]

ALARM_CODES = (
    "nan", "kl_negative", "kl_runaway", "reward_hacking", "entropy_collapse", "clipfrac_high",
    "value_loss_diverging", "length_cap", "zero_std_groups", "length_drift",
)

# The metric keys whose values are checked for NaN / infinity.
TRACKED_KEYS = (
    "objective/kl", "objective/scores", "gold/score", "objective/entropy", "response_length", "eos_fraction",
    "policy/clipfrac", "loss/value", "loss",
)

# Number of most recent steps whose mean KL is compared with KL_NEGATIVE_BELOW.
KL_WINDOW = 3
# A recent mean k1 KL below this many nats per response counts as persistently negative.
KL_NEGATIVE_BELOW = -0.5

# Number of most recent KL values that must (nearly) all rise for a runaway.
RUNAWAY_WINDOW = 5
# How many non-rising steps inside the runaway window are still tolerated.
RUNAWAY_MAX_DIPS = 1
# The last KL must exceed at least this many nats per response to count as a runaway...
RUNAWAY_MIN_KL = 10.0
# ...and at least this multiple of the KL at the start of the window.
RUNAWAY_GROWTH = 2.0

# Number of most recent steps over which the proxy and gold score trends (least-squares slopes) are fitted.
HACK_WINDOW = 5
# Steps in the running mean that proxy and gold are smoothed with first (one batch of 8 is noisy: ±0.15 gold).
HACK_SMOOTH = 3
# The smoothed gold score must have fallen at least this far below its best to count (gold lies in −1…1).
HACK_MIN_DROP = 0.1

# Number of steps averaged at the start and at the end of the run for the short-window alarms below.
EDGE_WINDOW = 3
# Entropy per token at the end below this fraction of its value at the start counts as a collapse.
ENTROPY_COLLAPSE_RATIO = 0.3

# A recent mean clip fraction above this share of tokens counts as too high.
CLIPFRAC_HIGH = 0.3

# Number of consecutive rises of the value loss (each value larger than the one before) needed to diverge.
VALUE_LOSS_RISES = 3
# The last value loss must exceed this multiple of the smallest value loss seen so far...
VALUE_LOSS_GROWTH = 10.0
# ...and this absolute floor, so noise near zero does not fire the alarm.
VALUE_LOSS_FLOOR = 1e-3

# A recent mean share of responses ending with EOS below this means nearly all answers hit the length cap.
LENGTH_CAP_EOS = 0.05

# Defaults for the PPO settings the alarms read, used where ``config`` is None or lacks a key.
DEFAULT_KL_ESTIMATOR = "k1"
DEFAULT_RESPONSE_LENGTH = 32
DEFAULT_KL_TARGET = 6.0

# A recent mean share of groups whose answers all scored alike above this counts as most groups teaching nothing.
ZERO_STD_HIGH = 0.5

# Number of most recent steps over which the answer length's trend is fitted (after a running mean of
# HACK_SMOOTH steps: one batch's mean length is noisy)...
LENGTH_WINDOW = 8
# ...the fitted change over the window must be at least this share of the length at its start...
LENGTH_DRIFT_SHARE = 0.3
# ...and at least this many tokens...
LENGTH_DRIFT_MIN_TOKENS = 3.0
# ...and this share of the smoothed step-to-step changes must go the same way (steady, not one jump).
LENGTH_DRIFT_STEADY = 0.75

# The settings of a run's config that say how many passes an update takes over each rollout: PPO's, and the group
# methods' (GRPO, RLOO); the suggestions name those the run has.
PPO_PASSES, GROUP_PASSES = "ppo_epochs", "epochs"


@dataclass(frozen=True)
class Alarm:
    """One health problem seen in a policy run, explained in plain language."""

    code: str        # stable id, one of ALARM_CODES
    step: int        # step at which the condition was seen (the last step of the window that triggered it)
    severity: str    # "warning" or "error"
    message: str     # what is happening, in plain language, with the numbers
    suggestion: str  # what to try


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (bools and strings excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _rows(metrics: Sequence[Any] | None) -> list[tuple[int, Mapping]]:
    """The metric rows that are mappings, each with its step (the row's own, else its 1-based position)."""
    rows = []
    for position, row in enumerate(metrics or (), start=1):
        if not isinstance(row, Mapping):
            continue
        step = _number(row.get("step"))
        rows.append((int(step) if step is not None and math.isfinite(step) else position, row))
    return rows


def _series(rows: list[tuple[int, Mapping]], *keys: str) -> list[tuple[int, tuple[float, ...]]]:
    """(step, values) for every row where all ``keys`` hold finite numbers, in stream order."""
    out = []
    for step, row in rows:
        values = tuple(_number(row.get(key)) for key in keys)
        if all(v is not None and math.isfinite(v) for v in values):
            out.append((step, values))
    return out


def _mean(values: Sequence[float]) -> float:
    """Arithmetic mean of a non-empty sequence."""
    return sum(values) / len(values)


def _recent_mean(rows, key: str, window: int) -> tuple[int, float] | None:
    """(last step, mean) of a metric over its last ``window`` values; None while fewer are logged."""
    values = _series(rows, key)[-window:]
    if len(values) < window:
        return None
    return values[-1][0], _mean([v for _, (v,) in values])


def _slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against their positions 0, 1, 2, ..."""
    n = len(values)
    x_mean = (n - 1) / 2
    y_mean = _mean(values)
    num = sum((i - x_mean) * (y - y_mean) for i, y in enumerate(values))
    den = sum((i - x_mean) ** 2 for i in range(n))
    return num / den if den else 0.0


def _setting(config: Mapping | None, key: str, default: Any) -> Any:
    """``config[key]`` when present and not None, else ``default``."""
    if not isinstance(config, Mapping):
        return default
    value = config.get(key)
    return default if value is None else value


def _check_nan(rows, status) -> Alarm | None:
    """A NaN/infinite tracked metric anywhere in the stream, or a run that failed on one."""
    suggestion = ("Lower the learning rate, use a smaller β (KL coefficient), and check that the reward "
                  "model's scores are finite and of a sensible size.")
    for step, row in rows:
        for key in TRACKED_KEYS:
            value = _number(row.get(key))
            if value is not None and not math.isfinite(value):
                return Alarm("nan", step, "error",
                             f"{key} was {value} at step {step}; the run was stopped because training "
                             "produced NaN or infinite numbers.", suggestion)
    if isinstance(status, Mapping) and status.get("state") == "failed":
        error = status.get("error")
        if isinstance(error, str) and re.search(r"\bnan\b|infinite", error, re.IGNORECASE):
            found = re.search(r"at step (\d+)", error)
            step = int(found.group(1)) if found else (rows[-1][0] if rows else 0)
            return Alarm("nan", step, "error",
                         f"The run was stopped at step {step} because training produced NaN or infinite "
                         f"numbers ({error.split(';')[0].strip()}).", suggestion)
    return None


def _check_kl_negative(rows, config) -> Alarm | None:
    """With k1, the mean KL of the last KL_WINDOW steps below KL_NEGATIVE_BELOW."""
    if str(_setting(config, "kl_estimator", DEFAULT_KL_ESTIMATOR)).lower() != "k1":
        return None
    recent = _recent_mean(rows, "objective/kl", KL_WINDOW)
    if recent is None or recent[1] >= KL_NEGATIVE_BELOW:
        return None
    step, mean = recent
    return Alarm(
        "kl_negative", step, "warning",
        f"KL is {mean:.2f} nats per response on average over the last {KL_WINDOW} steps (up to step {step}); "
        "a true KL is never negative.",
        "The k1 estimator is unbiased but a single batch can go negative; a persistently negative mean means "
        "the sampled tokens are ones the reference model prefers. Switch to the k3 estimator (never "
        "negative), or use a larger batch.",
    )


def _check_kl_runaway(rows, config) -> Alarm | None:
    """The last RUNAWAY_WINDOW KL values (nearly) all rising, ending far above where the window started.

    Not in a run's first RUNAWAY_WINDOW steps (every run's KL rises from 0 as it leaves the reference), and
    not at a fixed β of 0, where nothing is meant to hold the policy (a sweep's no-penalty baseline: its
    growing KL is what the sweep shows, and "raise β" is what the other runs do)."""
    if _setting(config, "adaptive_kl", False) is not True and _number(_setting(config, "kl_coef", None)) == 0:
        return None
    series = _series(rows, "objective/kl")
    kl = series[-RUNAWAY_WINDOW:]
    if len(series) < 2 * RUNAWAY_WINDOW:
        return None
    values = [v for _, (v,) in kl]
    dips = sum(1 for a, b in zip(values, values[1:]) if b <= a)
    first, last = values[0], values[-1]
    if dips > RUNAWAY_MAX_DIPS or last <= max(RUNAWAY_MIN_KL, RUNAWAY_GROWTH * first):
        return None
    step, first_step = kl[-1][0], kl[0][0]
    if _setting(config, "adaptive_kl", False) is True:
        target = _number(_setting(config, "kl_target", DEFAULT_KL_TARGET))
        target_text = f" of {target:.1f} nats" if target is not None else ""
        suggestion = (f"Adaptive β is on with a KL target{target_text}: lower the target, or lower the learning "
                      "rate so β has time to catch up.")
    elif isinstance(config, Mapping) and "adaptive_kl" not in config and _passes_setting(config, "") == GROUP_PASSES:
        suggestion = "Raise β (the KL coefficient), or lower the learning rate."  # a group method: no adaptive β
    else:
        suggestion = "Raise β (the KL coefficient), use adaptive β with a KL target, or lower the learning rate."
    return Alarm(
        "kl_runaway", step, "warning",
        f"KL keeps growing: {first:.2f} nats at step {first_step} to {last:.2f} nats at step {step}; the policy "
        "is drifting away from the reference model without anything holding it back.",
        suggestion,
    )


def _check_reward_hacking(rows, config, probes) -> Alarm | None:
    """On the held-out probes where the run has them (``_judged_on_probes``), else on its training batches."""
    if not _judged_on_probes(config, probes):
        return _batch_hacking_alarm(rows)
    found = probe_reward_hacking(probes)
    return None if found is None else Alarm("reward_hacking", found["step"], "warning", *probe_hacking_words(found))


def _judged_on_probes(config: Mapping | None, probes: Sequence[Mapping] | None) -> bool:
    """Whether reward hacking is judged on the run's held-out probes: it has probe answers, or answers them
    (``probe_every``) and has none yet. ``probes`` None: the caller has none to give (the training-batch rule)."""
    if probes is None:
        return False
    every = _number(_setting(config, "probe_every", 0))
    return bool(probes) or (every is not None and every > 0)


def _batch_hacking_alarm(rows) -> Alarm | None:
    """Proxy trending up while gold trends down over HACK_WINDOW steps, and the gold score's running mean
    (HACK_SMOOTH steps) at least HACK_MIN_DROP below its best while the proxy's is above its value there."""
    pairs = _series(rows, "objective/scores", "gold/score")
    if len(pairs) < max(HACK_WINDOW, HACK_SMOOTH + 1):
        return None
    window = pairs[-HACK_WINDOW:]
    if _slope([p for _, (p, _) in window]) <= 0 or _slope([g for _, (_, g) in window]) >= 0:
        return None
    smooth = [(pairs[i][0], (sum(p for _, (p, _) in pairs[i - HACK_SMOOTH + 1:i + 1]) / HACK_SMOOTH,
                             sum(g for _, (_, g) in pairs[i - HACK_SMOOTH + 1:i + 1]) / HACK_SMOOTH))
              for i in range(HACK_SMOOTH - 1, len(pairs))]
    best_step, (best_proxy, best_gold) = max(smooth, key=lambda item: item[1][1])
    step, (proxy, gold) = smooth[-1]
    if gold > best_gold - HACK_MIN_DROP or proxy < best_proxy:
        return None
    return Alarm(
        "reward_hacking", step, "warning",
        f"On {HACK_SMOOTH}-step means of the training batches, the reward model's score keeps rising "
        f"({best_proxy:.2f} at step {best_step} to {proxy:.2f} at step {step}) while the true (gold) score falls "
        f"({best_gold:.2f} to {gold:.2f}): the policy is exploiting the reward model's mistakes (over-optimisation, "
        "Gao et al. 2022). Training batches are noisy; held-out probes (probe_every) judge this more surely.",
        f"Raise β, stop at the checkpoint with the best gold score (near step {best_step}), or train the reward "
        "model on more or fresher preference pairs.",
    )


def _check_entropy_collapse(rows) -> Alarm | None:
    """Mean entropy per token of the last EDGE_WINDOW steps below ENTROPY_COLLAPSE_RATIO x the first ones."""
    pairs = [(step, (entropy / length,)) for step, (entropy, length)
             in _series(rows, "objective/entropy", "response_length") if length > 0]
    if len(pairs) < 2 * EDGE_WINDOW:
        return None
    start = _mean([v for _, (v,) in pairs[:EDGE_WINDOW]])
    end = _mean([v for _, (v,) in pairs[-EDGE_WINDOW:]])
    if start <= 0 or end >= ENTROPY_COLLAPSE_RATIO * start:
        return None
    step = pairs[-1][0]
    return Alarm(
        "entropy_collapse", step, "warning",
        f"Entropy per token fell from {start:.2f} to {end:.2f} nats ({end / start:.0%} of the start) by step "
        f"{step}: the policy answers almost deterministically (mode collapse).",
        "Raise β, lower the learning rate, or raise the sampling temperature.",
    )


def _passes_setting(config: Mapping | None, metric: str) -> str | None:
    """Which of the passes settings the run has: from its config's fields, else (no config, or one without
    either) from the clip metric it logs (``policy/clipfrac`` is PPO's, ``clip_ratio/region_mean`` a group
    method's); None when neither tells."""
    if isinstance(config, Mapping):
        for name in (PPO_PASSES, GROUP_PASSES):
            if name in config:
                return name
    return {"policy/clipfrac": PPO_PASSES, "clip_ratio/region_mean": GROUP_PASSES}.get(metric)


def _check_clipfrac_high(rows, config) -> Alarm | None:
    """Mean clip fraction (PPO's policy/clipfrac, GRPO's clip_ratio/region_mean) of the last EDGE_WINDOW steps
    above CLIPFRAC_HIGH."""
    metric = "policy/clipfrac"
    recent = _recent_mean(rows, metric, EDGE_WINDOW)
    if recent is None:
        metric = "clip_ratio/region_mean"
        recent = _recent_mean(rows, metric, EDGE_WINDOW)
    if recent is None or recent[1] <= CLIPFRAC_HIGH:
        return None
    step, mean = recent
    passes = _passes_setting(config, metric)
    if passes == PPO_PASSES:
        clip, who = "the PPO clip", "PPO"
        suggestion = ("Updates move the policy too far per rollout: lower the learning rate or ppo_epochs, or raise "
                      "num_mini_batches.")
    elif passes == GROUP_PASSES:
        clip, who = "the clip of the policy ratio (cliprange ε)", "the update"
        suggestion = ("Updates move the policy too far per rollout: lower the learning rate, or epochs (the passes "
                      "over each rollout; with 1 nothing is clipped).")
    else:
        clip, who = "the clip of the policy ratio", "the update"
        suggestion = "Updates move the policy too far per rollout: lower the learning rate."
    return Alarm(
        "clipfrac_high", step, "warning",
        f"{mean:.0%} of tokens hit {clip} on average over the last {EDGE_WINDOW} steps (up to step "
        f"{step}); {who} is throwing away much of each update.",
        suggestion,
    )


def _check_value_loss(rows) -> Alarm | None:
    """The value loss rising VALUE_LOSS_RISES times in a row to over VALUE_LOSS_GROWTH x its minimum."""
    losses = _series(rows, "loss/value")
    if len(losses) < VALUE_LOSS_RISES + 1:
        return None
    values = [v for _, (v,) in losses]
    recent = values[-(VALUE_LOSS_RISES + 1):]
    if not all(b > a for a, b in zip(recent, recent[1:])):
        return None
    lowest, last = min(values), values[-1]
    if last <= VALUE_LOSS_FLOOR or last <= VALUE_LOSS_GROWTH * lowest:
        return None
    step = losses[-1][0]
    return Alarm(
        "value_loss_diverging", step, "warning",
        f"The value loss rose for {VALUE_LOSS_RISES} steps in a row to {last:.3g} at step {step}, over "
        f"{VALUE_LOSS_GROWTH:g} times its lowest value ({lowest:.3g}); the value head is not keeping up.",
        "Lower the learning rate or vf_coef, and check cliprange_value; normalised rewards help.",
    )


def _check_length_cap(rows, config) -> Alarm | None:
    """Mean eos_fraction of the last EDGE_WINDOW steps below LENGTH_CAP_EOS."""
    recent = _recent_mean(rows, "eos_fraction", EDGE_WINDOW)
    if recent is None or recent[1] >= LENGTH_CAP_EOS:
        return None
    step, mean = recent
    cap = _number(_setting(config, "response_length", DEFAULT_RESPONSE_LENGTH))
    cap_text = f"the {int(cap)}-token" if cap is not None and math.isfinite(cap) else "the"
    penalty = _number(_setting(config, "missing_eos_penalty", None))
    if penalty is not None:
        suggestion = (f"Raise response_length; missing_eos_penalty is already set ({penalty:g}), so try a "
                      "larger penalty so unfinished answers score lower.")
    else:
        suggestion = "Raise response_length, or set missing_eos_penalty so unfinished answers score lower."
    return Alarm(
        "length_cap", step, "warning",
        f"Only {mean:.0%} of responses ended with EOS over the last {EDGE_WINDOW} steps (up to step {step}): "
        f"nearly all answers are cut off at {cap_text} length cap.",
        suggestion,
    )


def _check_zero_std_groups(rows, config) -> Alarm | None:
    """Mean frac_reward_zero_std of the last EDGE_WINDOW steps above ZERO_STD_HIGH."""
    recent = _recent_mean(rows, "frac_reward_zero_std", EDGE_WINDOW)
    if recent is None or recent[1] <= ZERO_STD_HIGH:
        return None
    step, mean = recent
    group = _number(_setting(config, "group_size", None))
    answers = f"all {int(group)} answers" if group is not None and math.isfinite(group) else "all the answers"
    return Alarm(
        "zero_std_groups", step, "warning",
        f"In {mean:.0%} of the prompts of the last {EDGE_WINDOW} steps (up to step {step}), {answers} scored the "
        "same: their advantages are all zero, so those prompts teach the policy nothing.",
        "Make the answers to a prompt differ: raise group_size or the temperature; or use harder prompts or a "
        "reward model whose scores tell the answers apart.",
    )


def _check_length_drift(rows) -> Alarm | None:
    """The answer length moving steadily over the last LENGTH_WINDOW (smoothed) steps by at least
    LENGTH_DRIFT_SHARE of its value at the window's start and LENGTH_DRIFT_MIN_TOKENS."""
    lengths = _series(rows, "response_length")
    if len(lengths) < LENGTH_WINDOW + HACK_SMOOTH - 1:
        return None
    values = [v for _, (v,) in lengths]
    smooth = [_mean(values[i - HACK_SMOOTH + 1:i + 1]) for i in range(HACK_SMOOTH - 1, len(values))][-LENGTH_WINDOW:]
    change = _slope(smooth) * (LENGTH_WINDOW - 1)
    start, end = smooth[0], smooth[-1]
    if abs(change) < max(LENGTH_DRIFT_MIN_TOKENS, LENGTH_DRIFT_SHARE * start):
        return None
    steps = [b - a for a, b in zip(smooth, smooth[1:])]
    if sum((d > 0) == (change > 0) for d in steps if d) < LENGTH_DRIFT_STEADY * len(steps):
        return None
    step = lengths[-1][0]
    if change > 0:
        message = (f"Answers grew steadily from {start:.1f} to {end:.1f} tokens over the last {LENGTH_WINDOW} steps "
                   f"(up to step {step}): the policy may have learnt that length pays.")
        suggestion = ("Check whether the reward model prefers longer answers (score against length); with GRPO "
                      "try loss_type=dr_grpo (no per-answer length mean); a larger β holds the policy nearer the "
                      "reference.")
    else:
        message = (f"Answers shrank steadily from {start:.1f} to {end:.1f} tokens over the last {LENGTH_WINDOW} "
                   f"steps (up to step {step}): the policy may have learnt that ending early pays.")
        suggestion = ("Check whether the reward model prefers short answers; with GRPO's per-answer mean, short "
                      "wrong answers are punished more per token than long ones: try loss_type=dr_grpo; a larger β "
                      "holds the policy nearer the reference.")
    return Alarm("length_drift", step, "warning", message, suggestion)


def check(metrics: Sequence[dict], config: Mapping | None = None, status: Mapping | None = None,
          probes: Sequence[Mapping] | None = None) -> list[Alarm]:
    """Alarms holding at the end of the metric stream (each code at most once), errors first, then ALARM_CODES order.

    ``probes``: the run's probes.jsonl rows, where it answers probe prompts (then reward hacking is judged on them
    alone); None where the caller has none to give."""
    rows = _rows(metrics)
    found = [
        _check_nan(rows, status),
        _check_kl_negative(rows, config),
        _check_kl_runaway(rows, config),
        _check_reward_hacking(rows, config, probes),
        _check_entropy_collapse(rows),
        _check_clipfrac_high(rows, config),
        _check_value_loss(rows),
        _check_length_cap(rows, config),
        _check_zero_std_groups(rows, config),
        _check_length_drift(rows),
    ]
    alarms = [alarm for alarm in found if alarm is not None]
    return sorted(alarms, key=lambda a: (a.severity != "error", ALARM_CODES.index(a.code)))


def new_alarms(alarms: Sequence[Alarm], already: set[str]) -> list[Alarm]:
    """Those whose code is not in `already` (for logging each alarm once per run)."""
    return [alarm for alarm in alarms if alarm.code not in already]
