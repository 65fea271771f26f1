"""The one test of every "within the noise" the pages say: a change is called a change when it is at least CLEAR_SE
standard errors. Stdlib only, so every part of the engine that judges a number (sweep sentences, alarms, reward
models, rankings) reads the same rule without importing each other."""

from __future__ import annotations

import math
import statistics

CLEAR_SE = 2.0  # a gain of at least this many standard errors is called a gain; below, it is within the noise


def standard_errors(gain: float, se: float) -> float:
    """|gain| in standard errors: inf for a nonzero gain with no spread, NaN with no standard error (one prompt)."""
    if se != se:
        return float("nan")
    if se == 0:
        return float("inf") if gain else 0.0
    return abs(gain) / se


def is_clear(gain: float, se: float) -> bool:
    """Whether a gain is at least CLEAR_SE standard errors (a gain without a standard error is not clear)."""
    return standard_errors(gain, se) >= CLEAR_SE


def mean_and_se(values: list[float]) -> tuple[float, float]:
    """(mean, standard error of the mean) of values; the standard error is NaN for a single value."""
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se
