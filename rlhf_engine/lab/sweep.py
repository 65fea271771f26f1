"""Sweeps: PPO runs that differ in one setting only (β by default), or runs of several methods (any of
``methods.registry``'s, each at its βs) on one reward model and one prompt set: one reward-vs-KL frontier.

A sweep folder ``<runs>/<name>/`` holds ``sweep.json`` (what varies, the members, in order); each
member is an ordinary policy run folder beside it, ``<runs>/<name>-<label>/``, so the Runs page, the CLI
and ``resume`` treat it like any other run. Members share the seed, the prompts, the reward model and
its normalisation, so the varied setting is the only difference. An optional best-of-n member samples
from the reference and gives the no-training baseline on the same reward-vs-KL axes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from rlhf_engine.config import KL_ESTIMATORS, PPOConfig, to_dict
from rlhf_engine.methods import registry
from rlhf_engine.runs.runfolder import RunFolder

SWEEP_FILE = "sweep.json"
SWEEP_KIND = "sweep"  # the kind of a sweep folder that is the run folder of its batched job
# the settings a sweep can vary: β, or one of the implementation details of Huang et al. 2023
SWEEPABLE = ("kl_coef", "normalize_reward", "whiten_advantages", "missing_eos_penalty", "kl_estimator")
DEFAULT_BETAS = (0.0, 0.01, 0.05, 0.2)  # a sweep's β values unless given: none, weak, TRL's default, strong
FINAL_STEPS = 3  # a run's final values are the mean of its last this-many logged steps (batches are noisy)


@dataclass
class Member:
    """One run of a sweep: its label, its folder and the settings it changes."""

    label: str
    run: RunFolder
    changes: dict


def parse_values(field: str, text: str) -> list:
    """Comma-separated values of a sweepable field, typed as the field is."""
    if field not in SWEEPABLE:
        raise ValueError(f"a sweep can vary one of {', '.join(SWEEPABLE)}; not {field!r}")
    values = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if field == "kl_coef":
            value = _number(field, item)
            if value < 0:
                raise ValueError(f"kl_coef must be >= 0, got {item}")
        elif field in ("normalize_reward", "whiten_advantages"):
            if item.lower() not in ("on", "off", "true", "false", "1", "0"):
                raise ValueError(f"{field} takes on/off values, got {item!r}")
            value = item.lower() in ("on", "true", "1")
        elif field == "missing_eos_penalty":
            value = None if item.lower() in ("none", "off") else _number(field, item)
        else:
            if item not in KL_ESTIMATORS:
                raise ValueError(f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, got {item!r}")
            value = item
        values.append(value)
    if not values:
        raise ValueError(f"no values given for {field}")
    if len(set(map(str, values))) != len(values):
        raise ValueError(f"the values of {field} repeat: {text}")
    return values


def _number(field: str, item: str) -> float:
    try:
        return float(item)
    except ValueError:
        raise ValueError(f"{field} takes numbers, got {item!r}") from None


def member_label(field: str, value) -> str:
    """A short folder-safe label: beta-0.05, whiten_advantages-off, missing_eos_penalty-none, kl_estimator-k3."""
    if field == "kl_coef":
        return f"beta-{value:g}"
    if isinstance(value, bool):
        return f"{field}-{'on' if value else 'off'}"
    return f"{field}-{'none' if value is None else format(value, 'g') if isinstance(value, float) else value}"


METHOD_FIELD = "method"  # what a sweep of several methods varies (``prepare_sweep(methods=...)``)


def plan_methods(configs: dict, betas: dict) -> list[tuple[str, object]]:
    """(label, config) of each member of a methods sweep: each method's config ({method: config}) at each of its
    βs ({method: [β, ...]}; a method without βs runs at its config's own), labelled method-beta-β."""
    members = []
    for method, config in configs.items():
        for beta in betas.get(method) or [config.kl_coef]:
            members.append((f"{method}-beta-{beta:g}", dataclasses.replace(config, kl_coef=beta)))
    return members


# What the runs of a methods sweep built from one PPO config share with it (the dashboard's form): the answer
# budget and length, sampling, scoring, probes and seed; each method keeps its own β, learning rate and knobs.
SHARED_ACROSS_METHODS = ("steps", "batch_size", "response_length", "temperature", "normalize_reward",
                         "missing_eos_penalty", "checkpoint_every", "samples_per_step", "probe_every",
                         "probe_prompts", "reference_probe_samples", "gold_score", "seed", "trim_memory",
                         "report_to")


def method_config(base: PPOConfig, method: str):
    """``method``'s config with its own defaults, and what every member shares taken from ``base``."""
    shared = {name: getattr(base, name) for name in SHARED_ACROSS_METHODS}
    return registry.get(method).config(model=base.model, **shared)


def parse_method_betas(text: str) -> dict[str, list[float]]:
    """"ppo=0.02, ppo=0.1, grpo=0.04, dpo" -> {method: [β, ...]} (a method without "=β" runs at its default)."""
    betas: dict[str, list[float]] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        method, sep, value = (part.strip() for part in item.partition("="))
        if method not in registry.names():
            raise ValueError(f"{method!r} is not a method; give method=β items with a method among "
                             f"{', '.join(registry.names())}")
        betas.setdefault(method, [])
        if sep:
            beta = _number("beta", value)
            if beta < 0 or beta in betas[method]:
                raise ValueError(f"{item!r}: β must be >= 0 and not repeat for a method")
            betas[method].append(beta)
    if not betas:
        raise ValueError("no methods given")
    return betas


def plan(base: PPOConfig, field: str, values: list, adaptive: bool = False) -> list[tuple[str, PPOConfig]]:
    """(label, config) of each member: base with ``field`` set to each value; then the adaptive-β run.

    The adaptive run starts at the base β and adapts it towards ``base.kl_target``.
    """
    members = [(member_label(field, v), dataclasses.replace(base, **{field: v}, adaptive_kl=False)) for v in values]
    if adaptive:
        members.append(("adaptive", dataclasses.replace(base, adaptive_kl=True)))
    return members


def changes_of(base: PPOConfig, config) -> dict:
    """What a member changes of the base: its method (when another) and each setting it sets otherwise."""
    before, after = to_dict(base), to_dict(config)
    method = registry.of_config(config)
    changes = {METHOD_FIELD: method.name} if method != registry.of_config(base) else {}
    return {**changes, **{k: v for k, v in after.items() if k not in before or before[k] != v}}


class Sweep:
    """Reads a sweep folder: its members' run folders and the summaries the lab plots draw."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def id(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / SWEEP_FILE).is_file()

    def record(self) -> dict:
        return json.loads((self.path / SWEEP_FILE).read_text())

    def members(self) -> list[Member]:
        return [Member(m["label"], RunFolder(self.path.parent / m["run"]), m["changes"])
                for m in self.record()["members"]]

    def job_run(self) -> RunFolder | None:
        """The sweep folder as the run folder of the one job that trains its runs side by side (batched), or
        None when its runs have jobs of their own."""
        run = RunFolder(self.path)
        return run if run.exists() else None

    def best_of_n_run(self) -> RunFolder | None:
        bon = self.record().get("best_of_n")
        return RunFolder(self.path.parent / bon["run"]) if bon else None

    def runs(self) -> list[RunFolder]:
        """Every run folder of the sweep, in queue order (best-of-n first)."""
        bon = self.best_of_n_run()
        return ([bon] if bon else []) + [m.run for m in self.members()]

    def states(self) -> dict[str, str]:
        return {run.id: run.status().get("state", "unknown") for run in self.runs()}

    def frontier(self) -> list[dict]:
        """Each member's final point (``final_point``) with its label; runs with no steps left out."""
        points = []
        for member in self.members():
            point = final_point(member.run)
            if point is not None:
                points.append({"label": member.label, **point})
        return points

    def best_of_n(self) -> list[dict]:
        """The best-of-n rows {n, kl, score, gold}, or [] until that job has finished."""
        run = self.best_of_n_run()
        path = run.path / "best_of_n.json" if run else None
        return json.loads(path.read_text())["rows"] if path and path.is_file() else []


def final_point(run: RunFolder) -> dict | None:
    """Where a PPO run ended on the reward-vs-KL axes; None before its first step.

    One definition for every chart: the run's last held-out probe answers (the same prompts and sampling
    seed at every probe, so a point is not one training batch's luck): ``kl``, ``score`` and ``gold``
    are their means, with standard errors (``*_se``) and ``prompts``; ``source`` is "held-out". A run
    without probe answers (probe_every = 0) falls back to the mean of its last FINAL_STEPS training
    batches, ``source`` "training". Always also ``train_kl``, ``train_score`` (and ``train_gold``), the
    training-batch means, and ``beta``, ``steps``, ``state``, ``adaptive``.
    """
    rows = run.metrics()
    if not rows:
        return None
    try:
        config = run.config().get("config", {})
    except (OSError, ValueError):
        config = {}
    point = {"run": run.id, "steps": rows[-1]["step"], "beta": rows[-1].get("beta"),
             "adaptive": bool(config.get("adaptive_kl")), "state": run.status().get("state"),
             "train_kl": final_value(rows, "objective/kl"), "train_score": final_value(rows, "objective/scores")}
    train_gold = final_value(rows, "gold/score")
    if train_gold is not None:
        point["train_gold"] = train_gold
    probes = [step for step in probe_summary(run.probes()) if step["step"] > 0]
    if probes:
        last = probes[-1]
        point.update({k: v for k, v in last.items() if k != "step"}, probe_step=last["step"], source="held-out")
    else:
        point.update(kl=point["train_kl"], score=point["train_score"], source="training")
        if train_gold is not None:
            point["gold"] = train_gold
    return point


def probe_summary(rows: list[dict]) -> list[dict]:
    """A run's held-out probe answers summarised per probe step, the reference's first (step 0).

    Each: ``step``, ``prompts``, ``answers``, means and standard errors over the prompts of ``kl``, ``score``
    and ``gold`` (when logged), and for the policy's steps the paired gains over the reference on the same
    prompts: ``score_gain``, ``gold_gain`` with ``*_se`` (the standard error of the mean paired difference).
    A prompt the reference answered several times (``reference_probe_samples``) counts once, with the mean
    of its answers: its gain is the policy's answer against that steadier baseline.
    """
    reference = _by_prompt([r for r in rows if r.get("policy") == "reference"])
    by_step: dict[int, list[dict]] = {}
    for row in rows:
        if row.get("policy") == "policy":
            by_step.setdefault(int(row["step"]), []).append(row)
    steps = ([(0, reference)] if reference else []) + [(step, _by_prompt(answers))
                                                        for step, answers in sorted(by_step.items())]
    baseline = {key: _prompt_means(reference, key) for key in ("score", "gold")}
    summary = []
    for step, answers in steps:
        entry = {"step": step, "prompts": len(answers), "answers": sum(len(a) for a in answers.values())}
        for key in ("kl", "score", "gold"):
            means = _prompt_means(answers, key)
            if means is None:
                continue
            entry[key], entry[f"{key}_se"] = _mean_and_se(list(means.values()))
            before = baseline.get(key)
            if step > 0 and before is not None and list(answers) == list(reference):
                entry[f"{key}_gain"], entry[f"{key}_gain_se"] = _mean_and_se(
                    [means[prompt] - before[prompt] for prompt in answers])
        summary.append(entry)
    return summary


def _by_prompt(rows: list[dict]) -> dict[str, list[dict]]:
    """Answers grouped by prompt, in the order the prompts first appear."""
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(json.dumps(row["prompt"]), []).append(row)
    return grouped


def _prompt_means(answers: dict[str, list[dict]], key: str) -> dict[str, float] | None:
    """Each prompt's mean ``key`` over its answers; None unless every answer has it."""
    if not all(isinstance(r.get(key), (int, float)) for group in answers.values() for r in group):
        return None
    return {prompt: statistics.fmean(r[key] for r in group) for prompt, group in answers.items()}


def _mean_and_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def final_value(rows: list[dict], metric: str, last: int = FINAL_STEPS) -> float | None:
    """Mean of a metric over the last ``last`` rows that have it, or None."""
    values = [r[metric] for r in rows if isinstance(r.get(metric), (int, float))][-last:]
    return statistics.fmean(values) if values else None


def list_sweeps(root: Path) -> list[Sweep]:
    """Sweep folders directly under root, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    sweeps = [Sweep(p) for p in root.iterdir() if (p / SWEEP_FILE).is_file()]
    return sorted(sweeps, key=lambda s: (s.path / SWEEP_FILE).stat().st_mtime, reverse=True)


# ----------------------------------------------------------------------------------------------
# What a sweep showed, in words, from its own numbers
# ----------------------------------------------------------------------------------------------

CLEAR_SE = 2.0  # a gain of at least this many standard errors is called a gain; below, it is within the noise


def standard_errors(gain: float, se: float) -> float:
    """|gain| in standard errors: inf for a nonzero gain with no spread, NaN with no standard error (one prompt)."""
    if se != se:
        return float("nan")
    if se == 0:
        return float("inf") if gain else 0.0
    return abs(gain) / se


def is_clear(gain: float, se: float) -> bool:
    """Whether a gain is at least CLEAR_SE standard errors: the one test of every "within the noise" the pages say
    (a gain without a standard error is not clear)."""
    return standard_errors(gain, se) >= CLEAR_SE


def member_title(label: str) -> str:
    """A methods sweep's member label in words: "grpo-beta-0.04" -> "GRPO at β 0.04"."""
    method, _, beta = label.partition("-beta-")
    title = registry.get(method).title if registry.is_policy_kind(method) else method
    return f"{title} at β {beta}" if beta else label


def gain_sentence(label: str, before: float, after: float, gain: float, se: float, prompts: int) -> str:
    """'β = 0: gold score 0.27 → 0.83 on 24 held-out prompts, +0.55 ± 0.12 (4.7 standard errors)', and what
    that means."""
    text = (f"{label}: gold score {before:.2f} → {after:.2f} on {prompts} held-out prompts, "
            f"{gain:+.2f} ± {se:.2f} ({standard_errors(gain, se):.1f} standard errors)")
    if not is_clear(gain, se):
        return text + ": within the noise, no clear change yet."
    return text + (": the true reward rose." if gain > 0 else ": the true reward fell.")


def sweep_story(sweep: Sweep) -> list[str]:
    """What the sweep's plots show, as sentences built from its numbers (held-out probes, best-of-n), saying
    so when a difference is inside the noise. Empty until a run has a held-out probe."""
    members = sweep.members()
    points = [p for p in sweep.frontier() if p.get("source") == "held-out"]
    if not points:
        return []
    by_label = {m.label: m for m in members}
    lines = []
    fixed = sorted((p for p in points if not p.get("adaptive") and isinstance(p.get("beta"), (int, float))),
                   key=lambda p: p["beta"])
    by_method = sweep.record().get("vary") == METHOD_FIELD
    if by_method:  # each method's gain in gold score over the reference's, on the same held-out prompts
        for point in points:
            summary = probe_summary(by_label[point["label"]].run.probes())
            if summary and summary[0]["step"] == 0 and "gold_gain" in point:
                lines.append(gain_sentence(f"{member_title(point['label'])}, after {point['probe_step']} steps",
                                           summary[0]["gold"], point["gold"], point["gold_gain"],
                                           point["gold_gain_se"], point["prompts"]))
    if sweep.record().get("vary") == "kl_coef" and fixed:
        smallest = fixed[0]
        summary = probe_summary(by_label[smallest["label"]].run.probes())
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
    bon = sweep.best_of_n()
    if bon:
        last = bon[-1]
        lines.append(f"Best-of-{last['n']} from the reference, no training: RM score {last['score']:.2f}"
                     + (f", gold {last['gold']:.2f}" if "gold" in last else "") + f" at {last['kl']:.2f} nats.")
        golds = [p for p in fixed if "gold" in p]
        if "gold" in last and golds:
            beaten = [p for p in golds if p["gold"] - p.get("gold_se", 0.0) > last["gold"]]
            if beaten:
                names = [member_title(p["label"]) if by_method else f"β {p['beta']:g}" for p in beaten]
                lines.append("Above best-of-n's gold score: " + ", ".join(
                    f"{name} ({p['gold']:.2f} at {p['kl']:.1f} nats)" for name, p in zip(names, beaten)) + ".")
            elif by_method:
                lines.append(f"No run clearly beat best-of-{last['n']}'s gold score: per nat of KL, best-of-n is the "
                             "most efficient (Gao et al. 2022 found the same for RL); the trained policies move "
                             "further, and cost one sample per answer instead of n.")
            else:
                lines.append(f"No PPO run clearly beat best-of-{last['n']}'s gold score: per nat of KL, best-of-n is "
                             "the more efficient of the two (Gao et al. 2022 found the same); PPO moves further, and "
                             "its policy costs one sample per answer instead of n.")
    found = [line for point in points
             if (line := overoptimisation_sentence(point["label"],
                                                   probe_summary(by_label[point["label"]].run.probes())))]
    lines += found
    if not found and any("gold" in p for p in points):
        lines.append("No run shows over-optimisation yet: no gold score fell clearly after a peak while the reward "
                     "model's score stood higher.")
    return lines


def overoptimisation_sentence(label: str, summary: list[dict]) -> str | None:
    """What a run's probes show of over-optimisation (gold peaked, then fell while the RM score stood higher),
    in words; None when they show none."""
    summary = [s for s in summary if "gold" in s and "score" in s]
    proxy, gold = [s["score"] for s in summary], [s["gold"] for s in summary]
    peak = gold_peak(proxy, gold)
    if peak is None:
        return None
    low = min(range(peak + 1, len(gold)), key=gold.__getitem__)
    return (f"{label}: over-optimisation. The gold score peaked at step {summary[peak]['step']} ({gold[peak]:.2f}) "
            f"and fell to {gold[low]:.2f} by step {summary[low]['step']} while the reward model's score went from "
            f"{proxy[peak]:.2f} to {proxy[low]:.2f}: the policy found answers the reward model likes more than "
            "the annotator does.")


def gold_peak(proxy: list[float], gold: list[float]) -> int | None:
    """Index of the gold score's peak when it later fell by the reward-hacking alarm's margin
    (alarms.HACK_MIN_DROP) while the proxy stood higher than at the peak (over-optimisation), else None."""
    from rlhf_engine.lab.alarms import HACK_MIN_DROP

    if not gold:
        return None
    peak = max(range(len(gold)), key=gold.__getitem__)
    later = range(peak + 1, len(gold))
    return peak if any(gold[j] <= gold[peak] - HACK_MIN_DROP and proxy[j] > proxy[peak] for j in later) else None
