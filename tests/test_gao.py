"""Gao et al. (2022)'s over-optimisation forms fitted to a run's own numbers (rlhf_engine/lab/gao.py): known
coefficients come back from noisy synthetic per-prompt data within their bootstrap spread, and the sentences say
what the numbers say. No model: probes and best-of-n samples are made up from the forms themselves."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from rlhf_engine.lab import gao
from rlhf_engine.lab.best_of_n import best_of_n_curve, best_of_n_kl

PROMPTS = 54
RL_DS = np.linspace(1.0, 10.0, 10)  # √KL of 10 probe steps; the RL truth below peaks at e² ≈ 7.4, inside
# the over-optimisation run's committed probe means: (step, KL nats, gold); step 0 is the reference
COMMITTED = [(0, 0, 0.418), (4, 6.18, 0.465), (8, 16.54, 0.531), (12, 29.43, 0.551), (16, 35.15, 0.459),
             (20, 54.66, 0.427), (24, 71.53, 0.364), (28, 75.31, 0.322), (32, 85.69, 0.302), (36, 80.97, 0.368),
             (40, 94.85, 0.345)]


def probe_rows(kls, gains, prompts=PROMPTS, noise=0.1, kl_noise=0.2, seed=0, subset_steps=(), subset_size=16):
    """probes.jsonl rows: a reference (2 samples per prompt) and one policy answer per prompt at each step
    (4, 8, ...) whose mean KL is ``kls[i]`` and mean gold gain ``gains[i]``; each prompt also carries its own
    offset at every step (a prompt the policy does well on stays one), so the points are correlated as a real
    run's are. Steps in ``subset_steps`` answer only the first ``subset_size`` prompts."""
    rng = np.random.default_rng(seed)
    base, offset = rng.normal(0.4, 0.2, prompts), rng.normal(0.0, noise / 2, prompts)
    rows = [{"step": 0, "policy": "reference", "prompt": f"prompt {p}", "sample": s, "response": "", "score": 0.0,
             "kl": 0.0, "eos": True, "gold": float(base[p] + rng.normal(0.0, noise))}
            for p in range(prompts) for s in range(2)]
    for i, (kl, gain) in enumerate(zip(kls, gains)):
        step = 4 * (i + 1)
        subset = step in subset_steps
        for p in range(subset_size if subset else prompts):
            row = {"step": step, "policy": "policy", "prompt": f"prompt {p}", "sample": 0, "response": "",
                   "score": 0.0, "kl": float(kl * (1.0 + rng.normal(0.0, kl_noise))), "eos": True,
                   "gold": float(base[p] + gain + offset[p] + rng.normal(0.0, noise))}
            rows.append({**row, "subset": True} if subset else row)
    return rows


def rl_rows(a=0.15, b=0.05, ds=RL_DS, **kwargs):
    return probe_rows(ds ** 2, ds * (a - b * np.log(ds)), **kwargs)


def bon_samples(a=0.3, b=0.1, total=32, prompts=PROMPTS, noise=0.1, seed=0):
    """best_of_n.json's proxy and gold lists: each prompt's gold, by the proxy's rank, is the curve that makes the
    expected best-of-n gain exactly d·(a − b·d) (solved through the rank weights), plus noise per sample."""
    rng = np.random.default_rng(seed)
    ds = np.sqrt([best_of_n_kl(n) for n in range(1, total + 1)])
    by_rank = np.linalg.solve(gao.best_of_n_weights(total), ds * (a - b * ds))
    proxy, gold = [], []
    for _ in range(prompts):
        order = rng.permutation(total)  # sample i has proxy rank order[i]
        proxy.append([float(r) for r in order])
        gold.append([float(by_rank[r] + rng.normal(0.0, noise)) for r in order])
    return proxy, gold


def test_least_squares_core_puts_the_committed_runs_peak_before_its_observed_one():
    """The committed over-optimisation run: its gold rose to √KL 5.4 and fell after; Gao's RL form, fitted to the
    same gains, peaks near √KL 2.7. The form is a description of the points, not where they turned."""
    ds = np.sqrt([kl for _, kl, _ in COMMITTED[1:]])
    gains = np.array([gold - COMMITTED[0][2] for *_, gold in COMMITTED[1:]])
    a, b = gao.fit_form(gao.RL_FORM, ds, gains)
    assert 2.0 <= gao.peak_of(gao.RL_FORM, a, b) <= 4.0
    assert ds[np.argmax(gains)] == pytest.approx(5.42, abs=0.01)


def test_fit_form_recovers_exact_coefficients_and_stacks():
    ds = np.linspace(0.5, 3.0, 8)
    for form, (a, b) in ((gao.RL_FORM, (0.15, 0.05)), (gao.BON_FORM, (0.3, 0.1))):
        gains = gao.gain_at(form, a, b, ds)
        assert gao.fit_form(form, ds, gains) == pytest.approx((a, b))
        stacked_a, stacked_b = gao.fit_form(form, np.stack([ds, ds]), np.stack([gains, 2 * gains]))
        assert stacked_a == pytest.approx([a, 2 * a]) and stacked_b == pytest.approx([b, 2 * b])
    assert all(math.isnan(c) for c in gao.fit_form(gao.RL_FORM, [1.0, 1.0], [0.1, 0.2]))  # one d: no fit
    assert gao.peak_of(gao.BON_FORM, 0.3, 0.1) == pytest.approx(1.5)
    assert gao.peak_of(gao.RL_FORM, 0.15, 0.05) == pytest.approx(math.e ** 2)
    assert gao.peak_of(gao.RL_FORM, 0.15, -0.01) == math.inf


def test_rl_fit_recovers_known_coefficients_within_the_bootstrap():
    data = gao.rl_points(rl_rows())
    fit = gao.fit_rl(data, label="β 0")
    assert fit.form == gao.RL_FORM and len(fit.points) == 10 and fit.prompts == PROMPTS
    assert abs(fit.a - 0.15) <= 3 * fit.a_se and abs(fit.b - 0.05) <= 3 * fit.b_se
    assert 0 < fit.a_se < 0.1 and 0 < fit.b_se < 0.05
    low, high = fit.peak_interval
    assert low <= math.e ** 2 <= high and fit.peak_in_range
    assert fit.baseline == pytest.approx(np.mean(list(data.reference_gold.values())))


def test_bon_fit_recovers_known_coefficients_within_the_bootstrap():
    fit = gao.fit_bon(*bon_samples(), label="best-of-32")
    assert fit.form == gao.BON_FORM and len(fit.points) == 32
    assert abs(fit.a - 0.3) <= 3 * fit.a_se and abs(fit.b - 0.1) <= 3 * fit.b_se
    low, high = fit.peak_interval
    assert low <= 1.5 <= high


def test_clean_data_fits_almost_perfectly():
    rl = gao.fit_rl(gao.rl_points(rl_rows(noise=0.0, kl_noise=0.0)))
    bon = gao.fit_bon(*bon_samples(noise=0.0))
    assert rl.r2 > 0.999 and bon.r2 > 0.999
    assert (rl.a, rl.b) == pytest.approx((0.15, 0.05), abs=1e-6)
    assert (bon.a, bon.b) == pytest.approx((0.3, 0.1), abs=1e-6)


def test_bon_points_agree_with_best_of_n_curve():
    """bon_points' gains are best_of_n_curve's gold rows less the samples' mean gold, at √ of its KL."""
    proxy, gold = bon_samples(total=8, prompts=5)
    rows = best_of_n_curve(proxy, gold, ns=range(1, 9))
    mean_gold = np.mean(gold)
    for point, row in zip(gao.bon_points(proxy, gold), rows):
        assert point.n == row["n"] and point.d == pytest.approx(math.sqrt(row["kl"]))
        assert point.gain == pytest.approx(row["gold"] - mean_gold)


def test_too_few_points_are_not_fitted():
    data = gao.rl_points(rl_rows(ds=RL_DS[:5]))
    assert not gao.enough_points(data) and gao.fit_rl(data) is None
    assert gao.too_few_sentence("β 0.2", data.points()) == (
        "β 0.2 has 5 probe points; Gao's RL form needs at least 6, so it is not fitted.")


def test_probes_without_gold_give_no_data():
    rows = rl_rows()
    rows[3] = {k: v for k, v in rows[3].items() if k != "gold"}
    assert gao.rl_points(rows) is None
    assert gao.rl_points([r for r in rl_rows() if r["policy"] == "reference"]) is None


def test_subset_steps_use_the_prompts_they_answered():
    """Steps 8 and 20 answered only the first 16 prompts: their points come from those prompts, and the fit still
    finds the truth. A step that answered one prompt drops out of the resamples that miss it (about a third)."""
    data = gao.rl_points(rl_rows(subset_steps=(8, 20)))
    assert [data.full[s] for s in data.steps] == [s not in (8, 20) for s in data.steps]
    assert {p.step: p.prompts for p in data.points()}[8] == 16
    fit = gao.fit_rl(data)
    assert abs(fit.a - 0.15) <= 3 * fit.a_se and abs(fit.b - 0.05) <= 3 * fit.b_se
    assert "(2 of them on a subset of the prompts)" in gao.fit_sentences(fit)[0]
    lonely = gao.fit_rl(gao.rl_points(rl_rows(subset_steps=(32,), subset_size=1)))
    assert lonely.resamples == gao.RESAMPLES and math.isfinite(lonely.a_se)


def test_sentences_for_a_fit_whose_peak_disagrees_with_the_probes():
    """Probes shaped like the committed run: the fit's peak (≈ 2.7) is far from the probes' (5.4), and says so."""
    kls = [kl for _, kl, _ in COMMITTED[1:]]
    gains = [gold - COMMITTED[0][2] for *_, gold in COMMITTED[1:]]
    fit = gao.fit_rl(gao.rl_points(probe_rows(kls, gains, noise=0.05, kl_noise=0.1)), label="the β 0 run")
    lines = gao.fit_sentences(fit)
    assert lines[0].startswith("Gao's RL form, fitted to the 10 probe points of the β 0 run: gain(d) = d·(a − b·log d)")
    assert f"a = {fit.a:.2f} ± {fit.a_se:.2f}" in lines[0] and f"R² = {fit.r2:.2f}" in lines[0]
    assert "(bootstrap over the 54 prompts)" in lines[0]
    low, high = fit.peak_interval
    assert f"It puts the peak of the gold gain at √KL {fit.predicted_peak_d:.1f} (95 % interval {low:.1f}–{high:.1f})" \
        in lines[1]
    assert "the probes' measured gain peaked at √KL 5.4" in lines[1]
    assert "The two differ: the fit describes this run's probes, not a law of this model." in lines


def test_a_gain_that_only_rises_is_reported_as_peaking_outside_the_range():
    ds = np.linspace(0.5, 4.0, 8)
    fit = gao.fit_rl(gao.rl_points(rl_rows(a=0.05, b=-0.01, ds=ds)), label="β 0.2")
    assert not fit.peak_in_range and not fit.turn_observed
    text = " ".join(gao.fit_sentences(fit))
    assert f"peak lies outside the measured range (√KL up to {fit.d_max:.1f})" in text
    assert "measured gain was largest at the largest √KL measured" in text and "The two differ" not in text
    bon = gao.fit_bon(*bon_samples(total=16, noise=0.02))  # true peak 1.5, measured up to √KL 1.35
    assert bon.predicted_peak_d is None or bon.predicted_peak_d > bon.d_max
    assert "peak lies outside the measured range (√KL up to 1.4)" in " ".join(gao.fit_sentences(bon))


def test_curve_runs_from_the_baseline_past_the_peak():
    fit = gao.fit_rl(gao.rl_points(rl_rows(noise=0.0, kl_noise=0.0)))
    ds, golds = fit.curve(n=30)
    assert len(ds) == 30 and ds[0] == 0.0 and golds[0] == pytest.approx(fit.baseline)
    assert ds[-1] == pytest.approx(max(fit.d_max, fit.predicted_peak_d) * gao.CURVE_MARGIN)
    assert golds[int(np.argmax(golds))] == pytest.approx(fit.baseline + fit.gain(fit.predicted_peak_d), abs=1e-3)


def test_bootstrap_is_fast_and_seeded():
    data = gao.rl_points(rl_rows())
    start = time.perf_counter()
    fit = gao.fit_rl(data)
    assert time.perf_counter() - start < 1.0  # about 0.02 s here; the page fits on every load
    assert gao.fit_rl(data).a_se == fit.a_se
