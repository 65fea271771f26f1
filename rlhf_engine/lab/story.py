"""What a sweep or a run showed, in sentences built from its own numbers, saying so when a difference is inside the
noise (``noise.is_clear``): the words under the Workshop, Sweep and Runs pages' plots and in the HTML report.

- ``sweep_story``: the gain at the smallest β, KL ordered by β, each method's gain (over seeds, ranked only beyond
  their spread: ``method_ranking``), best-of-n beside the runs, over-optimisation where a run's probes show it;
- ``overoptimisation``: the held-out probes' test of over-optimisation, the reward-hacking alarm's own rule
  (``probe_hacking``): the gold score more than 2 standard errors below its peak while the reward model's score is
  more than 2 standard errors above its value there, paired by prompt;
- ``sweep_fits`` / ``run_fit``: Gao et al.'s curves fitted to what the runs measured (``gao``), with their words.
"""

from __future__ import annotations

import math

from rlhf_engine.lab import gao
from rlhf_engine.lab.method_ranking import gain_line, method_results, ranking_lines
from rlhf_engine.lab.noise import CLEAR_SE, is_clear, standard_errors
from rlhf_engine.lab.probe_hacking import probe_reward_hacking
from rlhf_engine.lab.sweep import METHOD_FIELD, Sweep, member_title, probe_summary
from rlhf_engine.methods import registry
from rlhf_engine.runs.runfolder import RunFolder


def gain_sentence(label: str, before: float, after: float, gain: float, se: float, prompts: int) -> str:
    """'β = 0: gold score 0.27 → 0.83 on 24 held-out prompts, +0.55 ± 0.12 (4.7 standard errors)', and what
    that means."""
    text = (f"{label}: gold score {before:.2f} → {after:.2f} on {prompts} held-out prompts, "
            f"{gain:+.2f} ± {se:.2f} ({standard_errors(gain, se):.1f} standard errors)")
    if not is_clear(gain, se):
        return text + ": within the noise, no clear change yet."
    return text + (": the true reward rose." if gain > 0 else ": the true reward fell.")


def sweep_story(sweep: Sweep) -> list[str]:
    """What the sweep's plots show, as sentences built from its numbers (held-out probes, best-of-n). Empty until a
    run has a held-out probe of every prompt."""
    points = [p for p in sweep.frontier() if p.get("source") == "held-out"]
    if not points:
        return []
    runs = {m.label: m.run for m in sweep.members()}
    fixed = sorted((p for p in points if not p.get("adaptive") and isinstance(p.get("beta"), (int, float))),
                   key=lambda p: p["beta"])
    by_method = sweep.record().get("vary") == METHOD_FIELD
    lines = _methods_lines(points, runs) if by_method else []
    if sweep.record().get("vary") == "kl_coef" and fixed:
        lines += _beta_lines(fixed, runs)
    lines += best_of_n_sentences(sweep.best_of_n(), fixed, by_method)
    found = [line for point in points if (line := overoptimisation_sentence(_name(point, by_method),
                                                                             runs[point["label"]].probes()))]
    lines += found
    if not found and any("gold" in p for p in points):
        lines.append("No run shows over-optimisation yet: on the held-out probes no gold score fell clearly "
                     f"({CLEAR_SE:g} standard errors) below its peak while the reward model's score rose clearly.")
    return lines


def _name(point: dict, by_method: bool) -> str:
    return member_title(point["label"]) if by_method else f"β = {point['beta']:g}"


def _methods_lines(points: list[dict], runs: dict[str, RunFolder]) -> list[str]:
    """Each method's gain in gold score over the reference's on the same held-out prompts: over its seeds, then the
    ranking, when the sweep trained several seeds; else one sentence per run."""
    results = method_results(points)
    if any(len(result.gains) > 1 for result in results):
        return [gain_line(result) for result in results] + ranking_lines(results)
    lines = []
    for point in points:
        summary = probe_summary(runs[point["label"]].probes())
        if summary and summary[0]["step"] == 0 and "gold_gain" in point:
            lines.append(gain_sentence(f"{member_title(point['label'])}, after {point['probe_step']} steps",
                                       summary[0]["gold"], point["gold"], point["gold_gain"], point["gold_gain_se"],
                                       point["prompts"]))
    if len(lines) > 1:
        lines.append("One seed per method: the next seed may order them otherwise, so they are not ranked here.")
    return lines


def _beta_lines(fixed: list[dict], runs: dict[str, RunFolder]) -> list[str]:
    """The gain at the smallest β, and whether the KL to the reference falls as β grows."""
    lines = []
    smallest = fixed[0]
    summary = probe_summary(runs[smallest["label"]].probes())
    reference = summary[0] if summary and summary[0]["step"] == 0 else None
    if reference is not None and "gold_gain" in smallest:
        label = f"At the smallest β ({smallest['beta']:g}), after {smallest['probe_step']} steps"
        lines.append(gain_sentence(label, reference["gold"], smallest["gold"], smallest["gold_gain"],
                                   smallest["gold_gain_se"], smallest["prompts"]))
    if len(fixed) >= 2:
        kls = [p["kl"] for p in fixed]
        listed = ", ".join(f"{p['kl']:.1f}" for p in fixed)
        betas = ", ".join(f"{p['beta']:g}" for p in fixed)
        if all(a > b for a, b in zip(kls, kls[1:])):
            lines.append(f"The KL to the reference falls as β grows: {listed} nats for β {betas}. "
                         "The penalty holds the policy near the reference.")
        else:
            lines.append(f"The KL is not ordered by β in this sweep ({listed} nats for β {betas}): the runs have "
                         "not yet moved far enough apart to tell, or they are inside each other's noise.")
    return lines


def penalty_note(sweep: Sweep) -> str | None:
    """A sentence when the sweep's runs subtract different missing-EOS penalties (the bundled model's GRPO and RLOO
    1.0, PPO 0.5): the RM score on the charts is the score each run optimises, so the same reference answers stand
    lower for a run with the larger penalty. None when they all subtract the same."""
    by_penalty: dict = {}
    for member in sweep.members():
        saved = member.run.config()
        penalty, kind = saved.get("config", {}).get("missing_eos_penalty"), saved.get("kind", "")
        name = registry.get(kind).title if registry.is_policy_kind(kind) else kind
        if name not in by_penalty.setdefault(penalty, []):
            by_penalty[penalty].append(name)
    if len(by_penalty) < 2:
        return None
    parts = ", ".join(f"{' and '.join(names)} {'none' if penalty is None else format(float(penalty), '.1f')}"
                      for penalty, names in sorted(by_penalty.items(), key=lambda kv: kv[0] or 0.0))
    return ("The RM score drawn is the one each run optimises: the reward model's, less the run's missing-EOS penalty "
            f"for an answer cut at the length cap ({parts}), so the same reference answers start lower for a run "
            "with a larger penalty; the gold score has no penalty.")


def best_of_n_sentences(rows: list[dict], points: list[dict], by_method: bool = False) -> list[str]:
    """Best-of-n's largest n in words (± standard errors over the held-out prompts; its paired gain over n = 1, the
    reference's probe answers), then the runs (``points``) whose gold beats it by CLEAR_SE standard errors of the
    difference, sqrt(se_run² + se_bon²): as if independent, which errs towards "within the noise"."""
    if not rows:
        return []
    bon, nan = rows[-1], math.nan
    head = f"Best-of-{bon['n']} from the reference, no training ({bon['kl']:.2f} nats)"
    if "gold_gain" in bon:
        lines = [gain_sentence(head, bon["gold"] - bon["gold_gain"], bon["gold"], bon["gold_gain"], bon["gold_gain_se"],
                               bon["prompts"]) + f" Gold {bon['gold']:.2f} ± {bon['gold_se']:.2f}, RM score "
                 f"{bon['score']:.2f} ± {bon['score_se']:.2f}; n = 1 is the reference's probe answers."]
    elif "score_gain" in bon:
        gain, se = bon["score_gain"], bon["score_gain_se"]
        lines = [f"{head}: RM score {bon['score']:.2f} ± {bon['score_se']:.2f} on {bon['prompts']} held-out prompts, "
                 f"{gain:+.2f} ± {se:.2f} over n = 1{'' if is_clear(gain, se) else ': within the noise'}."]
    else:  # written before best-of-n had standard errors
        lines = [head + f": RM score {bon['score']:.2f}" + (f", gold {bon['gold']:.2f}" if "gold" in bon else "") + "."]
    golds = [p for p in points if "gold" in p]
    if "gold" not in bon or not golds:
        return lines
    bon_gold, bon_se = f"{bon['gold']:.2f} ± {bon.get('gold_se', nan):.2f}", bon.get("gold_se", nan)
    above = [p for p in golds if p["gold"] > bon["gold"]
             and is_clear(p["gold"] - bon["gold"], math.hypot(p.get("gold_se", nan), bon_se))]
    if above:
        return lines + [f"Above best-of-n's gold score ({bon_gold}) by {CLEAR_SE:g} standard errors of the difference "
                        "or more: " + ", ".join(f"{_name(p, by_method)} ({p['gold']:.2f} ± {p['gold_se']:.2f} at "
                                                f"{p['kl']:.1f} nats)" for p in above) + "."]
    kls, who = [p["kl"] for p in golds], "run" if by_method else "PPO run"
    further = (f"; it stayed at {bon['kl']:.2f} nats where the runs moved {min(kls):.1f}–{max(kls):.1f}: per nat of "
               "KL it did at least as well (Gao et al. 2022 found the same)") if min(kls) > bon["kl"] else ""
    return lines + [f"No {who} clearly beat best-of-{bon['n']}'s gold score ({bon_gold}), none by {CLEAR_SE:g} "
                    f"standard errors of the difference{further}; a trained policy costs one sample per answer, not n."]


def overoptimisation(rows: list[dict]) -> dict | None:
    """What a run's probe answers (probes.jsonl rows) show of over-optimisation, by the reward-hacking alarm's rule
    (``probe_hacking.probe_reward_hacking``): its latest probe against the step whose gold score peaked, paired on
    the prompts both answered; None when the gold is not clearly below its peak or the RM score not clearly above."""
    return probe_reward_hacking(rows)


def overoptimisation_sentence(label: str, rows: list[dict]) -> str | None:
    """``overoptimisation`` in words; None when the probes show none."""
    found = overoptimisation(rows)
    if found is None:
        return None
    peak = "the reference's answers" if found["peak_step"] == 0 else f"step {found['peak_step']}"
    return (f"{label}: over-optimisation. The gold score peaked at {peak} ({found['peak_gold']:.2f}) and fell to "
            f"{found['gold']:.2f} by step {found['step']} ({-found['gold_drop']:+.2f} ± {found['gold_drop_se']:.2f} "
            f"on the {found['prompts']} prompts both answered) while the reward model's score went from "
            f"{found['peak_score']:.2f} to {found['score']:.2f} ({found['score_rise']:+.2f} ± "
            f"{found['score_rise_se']:.2f}): the policy found answers the reward model likes more than the annotator "
            "does.")


def overoptimisation_peaks(series: dict[str, list[dict]]) -> dict[str, int]:
    """{label: the probe step where the gold score peaked} of the runs (label: probes.jsonl rows) whose probes show
    over-optimisation: where the charts draw their ★."""
    return {label: found["peak_step"] for label, rows in series.items() if (found := overoptimisation(rows))}


# ----------------------------------------------------------------------------------------------
# Gao et al. 2022's curves, fitted to what the runs measured
# ----------------------------------------------------------------------------------------------

FIT_NOTE = ("A fit describes these measurements, not a law of this model: another seed, reward model or learning "
            "rate moves it.")


def run_fit(run: RunFolder, label: str) -> tuple[gao.GaoFit | None, list[str]]:
    """Gao's RL form fitted to one run's probes (gain(d) = d·(a − b·log d), d = √KL): (the fit or None, its
    sentences, or why it is not fitted: fewer than gao.MIN_RL_POINTS probe points, or no gold score)."""
    return _fit_probes(gao.rl_points(run.probes()), label)


def _fit_probes(data: gao.ProbeData | None, label: str) -> tuple[gao.GaoFit | None, list[str]]:
    """``run_fit`` of a run's probe points already read (``gao.rl_points``)."""
    if data is None:
        return None, []
    if not gao.enough_points(data):
        return None, [gao.too_few_sentence(label, data.points())]
    fit = gao.fit_rl(data, label=label)
    return fit, (gao.fit_sentences(fit) if fit is not None else [])


def sweep_fits(sweep: Sweep) -> tuple[dict, list[str]]:
    """Gao's curves for a sweep: the RL form of every run with enough probe points, the best-of-n form of its
    best-of-n; ({label: GaoFit}, their sentences). Runs with too few points are named in one sentence."""
    by_method = sweep.record().get("vary") == METHOD_FIELD
    fits, lines, few = {}, [], []
    for member in sweep.members():
        point = {"label": member.label, "beta": member.run.config().get("config", {}).get("kl_coef", math.nan)}
        data = gao.rl_points(member.run.probes())
        fit, words = _fit_probes(data, _name(point, by_method))
        if fit is not None:
            fits[member.label] = fit
            lines += words
        elif words:
            few.append(len(data.points()))
    if few:
        counts = sorted(set(few))
        have = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        lines.append(f"Gao's RL form needs at least {gao.MIN_RL_POINTS} probe points of a run; "
                     f"{'this run has' if len(few) == 1 else f'{len(few)} runs here have'} {have}, so it is not fitted "
                     "to them (the over-optimisation run, with a probe every few steps, has enough).")
    raw = sweep.best_of_n_samples()
    if raw is not None:
        fit = gao.fit_bon(*raw, label=f"best-of-{len(raw[0][0])}")
        if fit is not None:
            fits["best-of-n"] = fit
            lines += gao.fit_sentences(fit)
    if fits and "not a law" not in " ".join(lines):
        lines.append(FIT_NOTE)
    return fits, lines
