"""Gao, Schulman & Hilton (2022)'s over-optimisation curves, fitted to one run's own numbers.

"Scaling laws for reward model overoptimization" found that, with d = √KL (nats, to the reference), the gold
reward gained over the reference follows

    best-of-n:  gain(d) = d·(a − b·d)         peak at d = a / (2b)
    RL:         gain(d) = d·(a − b·log d)     peak at d = exp(a/b − 1)

(the paper's α and β; here a and b, so as not to clash with the KL coefficient β). Both are 0 at d = 0, so
they are fitted to the gold *gain over the reference*, paired by prompt, not to the absolute gold score, and
both are linear in (a, b): least squares without intercept on the features [d, −d·log d] or [d, −d²].

The uncertainty is a bootstrap over prompts, not the least-squares formula: best-of-n's points are nested
samples of the same answers and one run's probe points are answers of one policy at successive steps, so the
points are correlated and the formula's independence is false. Each resample redraws the prompt list with
replacement and recomputes every point from the drawn prompts (a probe step that covered only a subset of the
prompts uses the drawn prompts it has) before refitting.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rlhf_engine.lab.best_of_n import best_of_n_kl

RL_FORM = "rl"  # gain(d) = d·(a − b·log d): a policy trained by RL against the reward model
BON_FORM = "bon"  # gain(d) = d·(a − b·d): best-of-n sampling from the reference
FORM_NAMES = {RL_FORM: "RL", BON_FORM: "best-of-n"}
FORM_FORMULAS = {RL_FORM: "gain(d) = d·(a − b·log d)", BON_FORM: "gain(d) = d·(a − b·d)"}
MIN_RL_POINTS = 6  # fewer policy probe points than this leave two coefficients and a curvature underdetermined
RESAMPLES = 500  # bootstrap resamples of the prompt list
SEED = 0  # the bootstrap's seed: the same run gives the same interval on every page load
INTERVAL = 0.95  # coverage of the predicted peak's bootstrap percentile interval
LOOSE_R2 = 0.5  # below this R² the sentences say the form fits the points loosely
PEAKS_APART = 0.25  # predicted and measured peaks further apart than this share of the measured one are said to differ
CURVE_REACH = 3.0  # a predicted peak past this many times the largest measured √KL is not drawn to
CURVE_MARGIN = 1.05  # the drawn curve runs this far past the last point it has to show


# ----------------------------------------------------------------------------------------------
# The two forms: features, least squares, peak
# ----------------------------------------------------------------------------------------------

def features(form: str, ds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two regressors of ``form`` at √KL values ``ds``: (d, −d·log d) for RL (0 at d = 0, its limit),
    (d, −d²) for best-of-n."""
    ds = np.asarray(ds, dtype=float)
    if form == RL_FORM:
        with np.errstate(divide="ignore", invalid="ignore"):
            curvature = np.where(ds > 0, -ds * np.log(np.where(ds > 0, ds, 1.0)), 0.0)
        return ds, curvature
    if form == BON_FORM:
        return ds, -ds ** 2
    raise ValueError(f"unknown form {form!r}; one of {', '.join(FORM_NAMES)}")


def fit_form(form: str, ds, gains, weights=None):
    """Least squares without intercept of ``gains`` on ``form``'s features: (a, b).

    Works on one set of points (floats back) or a stack of them (``ds``, ``gains`` of shape (..., points):
    arrays back), which is how the bootstrap refits 500 resamples at once. ``weights`` (0 or 1 per point) drop
    points, e.g. a probe step that a resample left without prompts. Solved from the 2×2 normal equations; a set
    of points that cannot fix both coefficients (all at one d) gives NaN.
    """
    ds, gains = np.asarray(ds, dtype=float), np.asarray(gains, dtype=float)
    weights = np.ones_like(ds) if weights is None else np.asarray(weights, dtype=float)
    x1, x2 = features(form, ds)
    x1, x2, y = x1 * weights, x2 * weights, np.where(weights > 0, gains, 0.0)
    s11, s12, s22 = (x1 * x1).sum(-1), (x1 * x2).sum(-1), (x2 * x2).sum(-1)
    t1, t2 = (x1 * y).sum(-1), (x2 * y).sum(-1)
    det = s11 * s22 - s12 ** 2
    scale = np.maximum(s11 * s22, np.finfo(float).tiny)
    with np.errstate(divide="ignore", invalid="ignore"):
        singular = det <= 1e-12 * scale
        a = np.where(singular, np.nan, (s22 * t1 - s12 * t2) / det)
        b = np.where(singular, np.nan, (s11 * t2 - s12 * t1) / det)
    return (float(a), float(b)) if a.ndim == 0 else (a, b)


def gain_at(form: str, a: float, b: float, ds):
    """``form``'s gold gain over the reference at √KL ``ds``."""
    x1, x2 = features(form, ds)
    return a * x1 + b * x2


def peak_of(form: str, a, b):
    """√KL where ``form``'s gain is largest: exp(a/b − 1) for RL, a/(2b) for best-of-n; inf where b ≤ 0 (the
    gain never turns down) or a, b are NaN. Takes floats or arrays."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        safe_b = np.where(b > 0, b, 1.0)
        peak = np.exp(a / safe_b - 1.0) if form == RL_FORM else a / (2.0 * safe_b)
        peak = np.where((b > 0) & np.isfinite(a), peak, np.inf)
    return float(peak) if peak.ndim == 0 else peak


def r_squared(gains, predicted) -> float:
    """1 − SS_res / SS_tot on the points (NaN when every gain is the same)."""
    gains, predicted = np.asarray(gains, dtype=float), np.asarray(predicted, dtype=float)
    total = float(((gains - gains.mean()) ** 2).sum())
    return 1.0 - float(((gains - predicted) ** 2).sum()) / total if total > 0 else float("nan")


# ----------------------------------------------------------------------------------------------
# The points: a run's probes, and best-of-n's samples
# ----------------------------------------------------------------------------------------------

class ProbePoint(NamedTuple):
    """One policy probe step on the gain-vs-√KL axes."""

    step: int  # the training step the probe answered at
    d: float  # √ of the mean KL to the reference over the step's prompts (nats, clipped at 0)
    gain: float  # mean over the step's prompts of (gold − the reference's mean gold on that prompt)
    prompts: int  # how many probe prompts the step answered
    full: bool  # whether the step answered every probe prompt (not a subset)


@dataclass
class ProbeData:
    """A run's probe answers as per-prompt numbers: each prompt's reference gold, and per policy probe step each
    answered prompt's (KL, gold gain over the reference)."""

    prompts: list[str]  # the probe prompts (as JSON keys), in the reference's order
    reference_gold: dict[str, float]  # the reference's mean gold per prompt (over its samples)
    steps: list[int]  # the policy's probe steps, in order
    answers: dict[int, dict[str, tuple[float, float]]]  # step -> prompt -> (KL, gold gain over the reference)
    full: dict[int, bool]  # step -> whether it answered every probe prompt

    @property
    def baseline(self) -> float:
        """The reference's mean gold over the prompts: where a gain curve sits on the absolute gold axis."""
        return float(np.mean([self.reference_gold[p] for p in self.prompts]))

    def points(self) -> list[ProbePoint]:
        """One point per policy probe step, from the prompts it answered."""
        return [self._point(step) for step in self.steps]

    def _point(self, step: int) -> ProbePoint:
        kls, gains = zip(*self.answers[step].values())
        d = math.sqrt(max(float(np.mean(kls)), 0.0))
        return ProbePoint(step, d, float(np.mean(gains)), len(gains), self.full[step])

    def matrices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(KL, gain, answered), each steps × prompts; unanswered cells are 0 with answered 0."""
        shape = (len(self.steps), len(self.prompts))
        kl, gain, answered = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        column = {prompt: j for j, prompt in enumerate(self.prompts)}
        for i, step in enumerate(self.steps):
            for prompt, (k, g) in self.answers[step].items():
                j = column[prompt]
                kl[i, j], gain[i, j], answered[i, j] = k, g, 1.0
        return kl, gain, answered


def _prompt_key(row: dict) -> str:
    return json.dumps(row["prompt"])


def _has_gold(row: dict) -> bool:
    return isinstance(row.get("gold"), (int, float)) and not isinstance(row.get("gold"), bool)


def _means_by_prompt(rows: list[dict], key: str) -> dict[str, float]:
    """Each prompt's mean ``key`` over its rows (a missing KL counts as 0: the reference's own answers)."""
    grouped: dict[str, list[float]] = {}
    for row in rows:
        grouped.setdefault(_prompt_key(row), []).append(float(row.get(key) or 0.0))
    return {prompt: float(np.mean(values)) for prompt, values in grouped.items()}


def rl_points(rows: list[dict]) -> ProbeData | None:
    """A run's probes.jsonl rows as per-prompt data (``ProbeData``; ``.points()`` gives one point per step).

    The reference's rows (policy "reference", step 0, possibly several samples per prompt) give each prompt's
    baseline gold; each policy probe step gives, per prompt it answered, (KL, gold − that baseline). A step
    is full when it answered every reference prompt and no row of it says "subset". None without gold on
    every row, without reference rows or without a policy step; policy answers to a prompt the reference did
    not answer have no baseline and are left out.
    """
    reference = [r for r in rows if r.get("policy") == "reference"]
    policy = [r for r in rows if r.get("policy") == "policy" and int(r.get("step", 0)) > 0]
    if not reference or not policy or not all(_has_gold(r) for r in reference + policy):
        return None
    reference_gold = _means_by_prompt(reference, "gold")
    by_step: dict[int, list[dict]] = {}
    for row in policy:
        if _prompt_key(row) in reference_gold:
            by_step.setdefault(int(row["step"]), []).append(row)
    answers, full = {}, {}
    for step, step_rows in sorted(by_step.items()):
        golds, kls = _means_by_prompt(step_rows, "gold"), _means_by_prompt(step_rows, "kl")
        answers[step] = {p: (kls[p], golds[p] - reference_gold[p]) for p in golds}
        full[step] = len(golds) == len(reference_gold) and not any(r.get("subset") for r in step_rows)
    if not answers:
        return None
    return ProbeData(list(reference_gold), reference_gold, list(answers), answers, full)


def enough_points(data: ProbeData | None) -> bool:
    """Whether a run has the MIN_RL_POINTS policy probe points Gao's RL form is fitted to."""
    return data is not None and len(data.steps) >= MIN_RL_POINTS


class BonPoint(NamedTuple):
    """Best-of-n at one n on the gain-vs-√KL axes."""

    n: int
    d: float  # √(log n − (n − 1)/n)
    gain: float  # mean over prompts of (expected gold of best-of-n − mean gold of the prompt's samples)


def best_of_n_weights(total: int) -> np.ndarray:
    """W[n − 1, rank]: the chance that the sample of this rank (by proxy, ascending) of ``total`` is the best of a
    random n-subset, C(rank, n − 1) / C(total, n) (best_of_n.expected_best_of_n's weights, as one matrix)."""
    weights = np.zeros((total, total))
    for n in range(1, total + 1):
        subsets = math.comb(total, n)
        for rank in range(n - 1, total):
            weights[n - 1, rank] = math.comb(rank, n - 1) / subsets
    return weights


def bon_gains_by_prompt(proxy, gold) -> np.ndarray:
    """prompts × N: each prompt's expected gold of best-of-n for n = 1..N minus its samples' mean gold (every
    prompt cut to the fewest samples any prompt has, as best_of_n_curve does)."""
    total = min(len(scores) for scores in proxy)
    proxy_arr = np.array([p[:total] for p in proxy], dtype=float)
    gold_arr = np.array([g[:total] for g in gold], dtype=float)
    order = np.argsort(proxy_arr, axis=1, kind="stable")
    gold_by_rank = np.take_along_axis(gold_arr, order, axis=1)
    expected = gold_by_rank @ best_of_n_weights(total).T
    return expected - gold_arr.mean(axis=1, keepdims=True)


def bon_points(proxy, gold) -> list[BonPoint]:
    """Best-of-n for n = 1..N from best_of_n.json's per-prompt sample lists (``proxy[p][i]``, ``gold[p][i]``)."""
    gains = bon_gains_by_prompt(proxy, gold).mean(axis=0)
    return [BonPoint(n, math.sqrt(best_of_n_kl(n)), float(g)) for n, g in enumerate(gains, start=1)]


# ----------------------------------------------------------------------------------------------
# The fit, with a bootstrap over prompts
# ----------------------------------------------------------------------------------------------

@dataclass
class GaoFit:
    """One of Gao's forms fitted to one run's points, with bootstrap uncertainty over its prompts."""

    form: str  # RL_FORM or BON_FORM
    label: str  # what was fitted, for sentences and legends
    a: float  # the gain's initial slope per unit √KL
    b: float  # its curvature: how fast the gain turns down (≤ 0: it never does)
    a_se: float  # bootstrap standard deviation of a
    b_se: float  # bootstrap standard deviation of b
    r2: float  # 1 − SS_res/SS_tot of the fit on its own points
    points: list[tuple[float, float, bool]]  # (d, gain, full) of every point fitted
    baseline: float  # the reference's mean gold: gain 0 on the absolute gold axis
    prompts: int  # the prompts the bootstrap resamples
    predicted_peak_d: float | None  # √KL of the fitted gain's peak; None when b ≤ 0 (no peak)
    peak_interval: tuple[float, float]  # INTERVAL bootstrap percentile interval of the peak (inf: no peak)
    peak_share: float  # share of bootstrap resamples whose fit has a peak (b > 0)
    observed_peak_d: float  # √KL of the point with the largest gain
    d_max: float  # the largest measured √KL
    resamples: int = RESAMPLES  # bootstrap resamples with a fit (all but degenerate draws)

    @property
    def peak_in_range(self) -> bool:
        """Whether the predicted peak lies within the measured √KL, [0, d_max]."""
        return self.predicted_peak_d is not None and 0.0 <= self.predicted_peak_d <= self.d_max

    @property
    def turn_observed(self) -> bool:
        """Whether the measured gain peaked before the largest measured √KL (a turn the points show)."""
        return self.observed_peak_d < self.d_max

    def gain(self, d):
        """The fitted gold gain over the reference at √KL ``d`` (a float or an array)."""
        return gain_at(self.form, self.a, self.b, d)

    def curve(self, n: int = 60) -> tuple[list[float], list[float]]:
        """(√KL, gold) along the fitted curve, on the absolute gold axis, from 0 past the last point (and past
        the predicted peak when it lies within CURVE_REACH times the measured range), to overlay on a
        gold-vs-√KL chart."""
        top = self.d_max
        if self.predicted_peak_d is not None and self.predicted_peak_d < CURVE_REACH * self.d_max:
            top = max(top, self.predicted_peak_d)
        ds = np.linspace(0.0, top * CURVE_MARGIN, n)
        return ds.tolist(), (self.baseline + self.gain(ds)).tolist()


def bootstrap_counts(prompts: int, resamples: int, seed: int) -> np.ndarray:
    """resamples × prompts: how often each prompt is drawn when the prompt list is redrawn with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(prompts, np.full(prompts, 1.0 / prompts), size=resamples).astype(float)


def _fit(form: str, label: str, points: list[tuple[float, float, bool]], baseline: float, prompts: int,
         boot_a: np.ndarray, boot_b: np.ndarray) -> GaoFit | None:
    """The point fit on ``points`` and the bootstrap's spread from the resamples' coefficients; None when the
    points cannot fix both coefficients."""
    ds = np.array([p[0] for p in points])
    gains = np.array([p[1] for p in points])
    a, b = fit_form(form, ds, gains)
    if not (math.isfinite(a) and math.isfinite(b)):
        return None
    fitted = np.isfinite(boot_a) & np.isfinite(boot_b)
    boot_a, boot_b = boot_a[fitted], boot_b[fitted]
    peaks = peak_of(form, boot_a, boot_b)
    tail = (1.0 - INTERVAL) / 2.0
    low, high = (np.quantile(peaks, [tail, 1.0 - tail], method="inverted_cdf") if peaks.size
                 else (math.inf, math.inf))
    peak = peak_of(form, a, b)
    return GaoFit(form=form, label=label, a=a, b=b, a_se=_sd(boot_a), b_se=_sd(boot_b),
                  r2=r_squared(gains, gain_at(form, a, b, ds)), points=[tuple(p) for p in points],
                  baseline=baseline, prompts=prompts, predicted_peak_d=peak if math.isfinite(peak) else None,
                  peak_interval=(float(low), float(high)),
                  peak_share=float(np.isfinite(peaks).mean()) if peaks.size else 0.0,
                  observed_peak_d=float(ds[int(np.argmax(gains))]), d_max=float(ds.max()), resamples=int(peaks.size))


def _sd(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if values.size > 1 else float("nan")


def fit_rl(data: ProbeData | None, label: str = "this run", resamples: int = RESAMPLES,
           seed: int = SEED) -> GaoFit | None:
    """Gao's RL form fitted to a run's probe points (``rl_points``), bootstrapped over its probe prompts; None
    with fewer than MIN_RL_POINTS points.

    Each resample recomputes every step's point (√ of the mean KL, mean gain) from the drawn prompts it answered,
    as weighted sums: a prompt drawn twice counts twice, a subset step left with no drawn prompt drops out.
    """
    if not enough_points(data):
        return None
    kl, gain, answered = data.matrices()
    counts = bootstrap_counts(len(data.prompts), resamples, seed)
    drawn = counts @ answered.T  # resamples × steps: answers drawn per step
    with np.errstate(divide="ignore", invalid="ignore"):
        ds = np.sqrt(np.maximum((counts @ kl.T) / drawn, 0.0))
        gains = (counts @ gain.T) / drawn
    present = drawn > 0
    boot_a, boot_b = fit_form(RL_FORM, np.where(present, ds, 0.0), np.where(present, gains, 0.0), present)
    points = [(p.d, p.gain, p.full) for p in data.points()]
    return _fit(RL_FORM, label, points, data.baseline, len(data.prompts), boot_a, boot_b)


def fit_bon(proxy, gold, label: str = "best-of-n", resamples: int = RESAMPLES, seed: int = SEED) -> GaoFit | None:
    """Gao's best-of-n form fitted to best-of-n for n = 1..N (``bon_points``), bootstrapped over the prompts; None
    without gold or with a single sample per prompt."""
    if not proxy or not gold or min(len(p) for p in proxy) < 2:
        return None
    by_prompt = bon_gains_by_prompt(proxy, gold)  # prompts × N
    ds = np.sqrt([best_of_n_kl(n) for n in range(1, by_prompt.shape[1] + 1)])
    counts = bootstrap_counts(len(by_prompt), resamples, seed)
    boot_gains = counts @ by_prompt / len(by_prompt)
    boot_a, boot_b = fit_form(BON_FORM, np.broadcast_to(ds, boot_gains.shape), boot_gains)
    points = [(d, float(g), True) for d, g in zip(ds.tolist(), by_prompt.mean(axis=0))]
    total = by_prompt.shape[1]
    baseline = float(np.mean([np.mean(g[:total]) for g in gold]))
    return _fit(BON_FORM, label, points, baseline, len(by_prompt), boot_a, boot_b)


# ----------------------------------------------------------------------------------------------
# What the fit says, in words, from its numbers
# ----------------------------------------------------------------------------------------------

def too_few_sentence(label: str, points) -> str:
    """Why a run's RL form is not fitted: too few probe points (``points``: their count or the points)."""
    count = points if isinstance(points, int) else len(points)
    noun = "probe point" if count == 1 else "probe points"
    return f"{label} has {count} {noun}; Gao's RL form needs at least {MIN_RL_POINTS}, so it is not fitted."


def fit_sentences(fit: GaoFit) -> list[str]:
    """The fit in words: its coefficients with their bootstrap spread and R², where it puts the peak against where
    the points peaked, and, when they disagree or the peak is within the noise, what that means."""
    lines = [_form_sentence(fit), _peak_sentence(fit)]
    if fit.r2 < LOOSE_R2:
        lines.append(f"The form fits these points loosely (R² = {fit.r2:.2f}): it explains little of how the gain "
                     "moved from probe to probe; read the dotted curve as a rough summary, not a forecast.")
    low, high = fit.peak_interval
    apart = fit.predicted_peak_d is not None and abs(fit.predicted_peak_d - fit.observed_peak_d) > \
        PEAKS_APART * fit.observed_peak_d
    what = "this run's probes" if fit.form == RL_FORM else "these samples"
    if fit.turn_observed and not low <= fit.observed_peak_d <= high:
        lines.append(f"The two differ: the fit describes {what}, not a law of this model.")
    elif fit.turn_observed and apart:
        lines.append(f"The fitted peak (√KL {fit.predicted_peak_d:.1f}) and the measured one "
                     f"(√KL {fit.observed_peak_d:.1f}) differ, yet the bootstrap interval holds both: these points "
                     f"do not place the peak more closely. The fit describes {what}, not a law of this model.")
    if fit.peak_share < 1.0 - (1.0 - INTERVAL) / 2.0:
        lines.append(f"Whether the gold gain turns down at all is within the noise: in "
                     f"{100 * (1 - fit.peak_share):.0f} % of the bootstrap resamples b ≤ 0 and the fitted gain "
                     "never falls.")
    return lines


def _form_sentence(fit: GaoFit) -> str:
    kind = "probe" if fit.form == RL_FORM else "best-of-n"
    partial = sum(1 for _, _, full in fit.points if not full)
    subset = f" ({partial} of them on a subset of the prompts)" if partial else ""
    return (f"Gao's {FORM_NAMES[fit.form]} form, fitted to the {len(fit.points)} {kind} points of {fit.label}"
            f"{subset}: {FORM_FORMULAS[fit.form]} with d = √KL, a = {fit.a:.2f} ± {fit.a_se:.2f} and "
            f"b = {fit.b:.2f} ± {fit.b_se:.2f} (bootstrap over the {fit.prompts} prompts), R² = {fit.r2:.2f}.")


def _interval_text(fit: GaoFit) -> str:
    low, high = fit.peak_interval
    if math.isfinite(high):
        return f"{100 * INTERVAL:.0f} % interval {low:.1f}–{high:.1f}"
    if math.isfinite(low):
        return f"{100 * INTERVAL:.0f} % interval from {low:.1f} upward"
    return "most bootstrap resamples have no peak"


def _peak_sentence(fit: GaoFit) -> str:
    measured = "the probes'" if fit.form == RL_FORM else "best-of-n's"
    if fit.turn_observed:
        observed = f"{measured} measured gain peaked at √KL {fit.observed_peak_d:.1f}."
    else:
        observed = f"{measured} measured gain was largest at the largest √KL measured, {fit.d_max:.1f}: no turn yet."
    if fit.predicted_peak_d is None:
        return (f"With b ≤ 0 the fitted gain never turns down: its peak lies outside the measured "
                f"range (√KL up to {fit.d_max:.1f}); {observed}")
    if not fit.peak_in_range:
        return (f"Its peak lies outside the measured range (√KL up to {fit.d_max:.1f}): the fit extrapolates it to "
                f"√KL {fit.predicted_peak_d:.1f} ({_interval_text(fit)}); {observed}")
    return (f"It puts the peak of the gold gain at √KL {fit.predicted_peak_d:.1f} ({_interval_text(fit)}); "
            f"{observed}")
