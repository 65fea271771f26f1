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
import statistics
from dataclasses import dataclass
from pathlib import Path

from rlhf_engine.config import KL_ESTIMATORS, PPOConfig, to_dict
from rlhf_engine.lab.noise import mean_and_se
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


SEED_TAG = "-seed-"  # a methods sweep member's label ends "-seed-<seed>" when the sweep trains several seeds


def plan_methods(configs: dict, betas: dict, seeds: tuple[int, ...] | None = None) -> list[tuple[str, object]]:
    """(label, config) of each member of a methods sweep: each method's config ({method: config}) at each of its
    βs ({method: [β, ...]}; a method without βs runs at its config's own), labelled method-beta-β; with several
    ``seeds``, each of those once per seed, labelled method-beta-β-seed-s (same probes, so seeds differ only in
    their training prompts' order and sampling)."""
    members = []
    for method, config in configs.items():
        for beta in betas.get(method) or [config.kl_coef]:
            for seed in seeds or (None,):
                label = f"{method}-beta-{beta:g}" + (f"{SEED_TAG}{seed}" if seeds and len(seeds) > 1 else "")
                changed = dict(kl_coef=beta) if seed is None else dict(kl_coef=beta, seed=seed)
                members.append((label, dataclasses.replace(config, **changed)))
    return members


def split_label(label: str) -> tuple[str, float | None, int | None]:
    """(method, β, seed) of a methods sweep member's label: "grpo-beta-0.04-seed-2" -> ("grpo", 0.04, 2); a label
    without "-beta-" gives (label, None, None), one without a seed tag seed None."""
    rest, _, seed = label.partition(SEED_TAG)
    method, _, beta = rest.partition("-beta-")
    try:
        return (method, float(beta), int(seed) if seed else None) if beta else (label, None, None)
    except ValueError:
        return label, None, None


# What the runs of a methods sweep built from one PPO config share with it (the dashboard's form): the answer
# budget and length, sampling, scoring, probes and seed; each method keeps its own β, learning rate and knobs.
SHARED_ACROSS_METHODS = ("steps", "batch_size", "response_length", "temperature", "normalize_reward",
                         "missing_eos_penalty", "checkpoint_every", "samples_per_step", "probe_every",
                         "probe_prompts", "probe_subset", "reference_probe_samples", "gold_score", "seed",
                         "trim_memory", "report_to")


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
        """Each member's final point (``final_point``: its last probe of every probe prompt) with its label; runs
        with no steps left out."""
        points = []
        for member in self.members():
            point = final_point(member.run)
            if point is not None:
                points.append({"label": member.label, **point})
        return points

    def best_of_n(self) -> list[dict]:
        """The best-of-n rows, or [] until that job has finished: ``best_of_n.best_of_n_curve``'s {n, kl, prompts,
        score, gold, their ``*_se`` and paired gains over n = 1 ``*_gain``, ``*_gain_se``} (folders written before
        best-of-n had standard errors: {n, kl, score, gold} only)."""
        run = self.best_of_n_run()
        path = run.path / "best_of_n.json" if run else None
        return json.loads(path.read_text())["rows"] if path and path.is_file() else []

    def best_of_n_samples(self) -> tuple[list[list[float]], list[list[float]]] | None:
        """Best-of-n's scored samples, (RM scores, gold scores), each [prompt][sample]: what Gao's best-of-n form
        is fitted to; None until it has finished or without gold scores."""
        run = self.best_of_n_run()
        path = run.path / "best_of_n.json" if run else None
        if not (path and path.is_file()):
            return None
        saved = json.loads(path.read_text())
        return (saved["proxy"], saved["gold"]) if saved.get("gold") else None


def final_point(run: RunFolder) -> dict | None:
    """Where a PPO run ended on the reward-vs-KL axes; None before its first step.

    One definition for every chart: the run's last held-out probe of every probe prompt (``full`` in
    ``probe_summary``; the same prompts and sampling seed at every probe, so a point is not one training batch's
    luck): ``kl``, ``score`` and ``gold`` are their means, with standard errors (``*_se``) and ``prompts``;
    ``source`` is "held-out". The probes of a subset of the prompts between them (``probe_subset``) draw the run's
    path, never its point: runs compare on one set of prompts. A run without such a probe yet (probe_every = 0,
    or only subset probes so far) falls back to the mean of its last FINAL_STEPS training batches, ``source``
    "training". Always also ``train_kl``, ``train_score`` (and ``train_gold``), the
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
    probes = [step for step in probe_summary(run.probes()) if step["step"] > 0 and step["full"]]
    if probes:
        last = probes[-1]
        point.update({k: v for k, v in last.items() if k not in ("step", "full")}, probe_step=last["step"],
                     source="held-out")
    else:
        point.update(kl=point["train_kl"], score=point["train_score"], source="training")
        if train_gold is not None:
            point["gold"] = train_gold
    return point


def probe_summary(rows: list[dict]) -> list[dict]:
    """A run's held-out probe answers summarised per probe step, the reference's first (step 0).

    Each: ``step``, ``prompts``, ``answers``, ``full``, means and standard errors over the prompts of ``kl``,
    ``score`` and ``gold`` (when logged), and for the policy's steps the paired gains over the reference on the
    prompts that step answered: ``score_gain``, ``gold_gain`` with ``*_se`` (the standard error of the mean
    paired difference). A prompt the reference answered several times (``reference_probe_samples``) counts
    once, with the mean of its answers: its gain is the policy's answer against that steadier baseline.

    ``full``: the step answered every prompt the reference did, none of them marked ``subset``. A step that is
    not (a probe of the first ``probe_subset`` prompts, or one still being written) is a point on the run's path;
    its means are over fewer prompts, so the frontiers (``final_point``) leave it out.
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
        entry = {"step": step, "prompts": len(answers), "answers": sum(len(a) for a in answers.values()),
                 "full": _answers_all(answers, reference)}
        for key in ("kl", "score", "gold"):
            means = _prompt_means(answers, key)
            if means is None:
                continue
            entry[key], entry[f"{key}_se"] = mean_and_se(list(means.values()))
            before = baseline.get(key)
            paired = [prompt for prompt in answers if before is not None and prompt in before]
            if step > 0 and paired:
                entry[f"{key}_gain"], entry[f"{key}_gain_se"] = mean_and_se(
                    [means[prompt] - before[prompt] for prompt in paired])
        summary.append(entry)
    return summary


def _answers_all(answers: dict[str, list[dict]], reference: dict[str, list[dict]]) -> bool:
    """Whether a probe step answered every prompt the reference did, with no row marked ``subset`` (a run folder
    from before subset probes has no such mark: every step of it answered all)."""
    marked = any(row.get("subset") for group in answers.values() for row in group)
    return not marked and set(reference) <= set(answers)


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


def member_title(label: str) -> str:
    """A methods sweep's member label in words: "grpo-beta-0.04" -> "GRPO at β 0.04", "grpo-beta-0.04-seed-2" ->
    "GRPO at β 0.04, seed 2"."""
    method, beta, seed = split_label(label)
    if beta is None:
        return label
    title = registry.get(method).title if registry.is_policy_kind(method) else method
    return f"{title} at β {beta:g}" + (f", seed {seed}" if seed is not None else "")
