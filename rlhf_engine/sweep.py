"""Sweeps: PPO runs that differ in one setting only (β by default), queued one after another.

A sweep folder ``<runs>/<name>/`` holds ``sweep.json`` (what varies, the members, in order); each
member is an ordinary PPO run folder beside it, ``<runs>/<name>-<label>/``, so the Runs page, the CLI
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

from .config import KL_ESTIMATORS, PPOConfig, to_dict
from .runfolder import RunFolder, atomic_write_text, safe_name

SWEEP_FILE = "sweep.json"
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
            value = float(item)
            if value < 0:
                raise ValueError(f"kl_coef must be >= 0, got {item}")
        elif field in ("normalize_reward", "whiten_advantages"):
            if item.lower() not in ("on", "off", "true", "false", "1", "0"):
                raise ValueError(f"{field} takes on/off values, got {item!r}")
            value = item.lower() in ("on", "true", "1")
        elif field == "missing_eos_penalty":
            value = None if item.lower() in ("none", "off") else float(item)
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


def member_label(field: str, value) -> str:
    """A short folder-safe label: beta-0.05, whiten_advantages-off, missing_eos_penalty-none, kl_estimator-k3."""
    if field == "kl_coef":
        return f"beta-{value:g}"
    if isinstance(value, bool):
        return f"{field}-{'on' if value else 'off'}"
    return f"{field}-{'none' if value is None else format(value, 'g') if isinstance(value, float) else value}"


def plan(base: PPOConfig, field: str, values: list, adaptive: bool = False) -> list[tuple[str, PPOConfig]]:
    """(label, config) of each member: base with ``field`` set to each value; then the adaptive-β run.

    The adaptive run starts at the base β and adapts it towards ``base.kl_target``.
    """
    members = [(member_label(field, v), dataclasses.replace(base, **{field: v}, adaptive_kl=False)) for v in values]
    if adaptive:
        members.append(("adaptive", dataclasses.replace(base, adaptive_kl=True)))
    return members


def prepare_sweep(sweep_dir: Path, base: PPOConfig, reward_dir: Path, field: str = "kl_coef",
                  values: list | None = None, adaptive: bool = False, best_of_n: int = 0,
                  best_of_n_prompts: int = 16, prompts_path: Path | None = None) -> list:
    """Create the sweep folder and its members' run folders (all queued); return their Jobs, in order.

    Nothing is created if any input is wrong: the members are checked before the first folder is made.
    """
    from .jobs import prepare_best_of_n_job, prepare_ppo_job

    sweep_dir = Path(sweep_dir)
    safe_name(sweep_dir.name, "sweep name")
    if (sweep_dir / SWEEP_FILE).exists():
        raise FileExistsError(f"{sweep_dir} already holds a sweep; choose another name")
    members = plan(base, field, values if values is not None else list(DEFAULT_BETAS), adaptive)
    folders = [sweep_dir.parent / f"{sweep_dir.name}-{label}" for label, _ in members]
    bon_folder = sweep_dir.parent / f"{sweep_dir.name}-best-of-{best_of_n}" if best_of_n else None
    for folder in folders + ([bon_folder] if bon_folder else []):
        if RunFolder(folder).exists():
            raise FileExistsError(f"{folder} already holds a run; choose another sweep name")
    if not (Path(reward_dir) / "reward_model.json").is_file():
        raise FileNotFoundError(f"{reward_dir} holds no trained reward model (no reward_model.json)")
    if prompts_path is not None and not Path(prompts_path).is_file():
        raise FileNotFoundError(f"{prompts_path}: file not found")

    sweep_dir.mkdir(parents=True, exist_ok=True)
    record = {"kind": "sweep", "vary": field, "values": values, "adaptive": adaptive, "base": to_dict(base),
              "reward": str(Path(reward_dir).resolve()),
              "members": [{"label": label, "run": folder.name, "changes": _changes(base, config)}
                          for (label, config), folder in zip(members, folders)],
              "best_of_n": {"n": best_of_n, "run": bon_folder.name} if bon_folder else None}
    atomic_write_text(sweep_dir / SWEEP_FILE, json.dumps(record, indent=2) + "\n")
    jobs = [prepare_best_of_n_job(bon_folder, base, reward_dir, best_of_n, best_of_n_prompts, prompts_path)] \
        if bon_folder else []
    jobs += [prepare_ppo_job(folder, config, reward_dir, prompts_path) for (_, config), folder in zip(members, folders)]
    return jobs


def _changes(base: PPOConfig, config: PPOConfig) -> dict:
    before, after = to_dict(base), to_dict(config)
    return {k: v for k, v in after.items() if before[k] != v}


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
        """Each member's final point: label, KL, proxy score, gold score (if logged), β; runs with no steps left out."""
        points = []
        for member in self.members():
            rows = member.run.metrics()
            if not rows:
                continue
            point = {"label": member.label, "run": member.run.id, "steps": rows[-1]["step"],
                     "kl": final_value(rows, "objective/kl"), "score": final_value(rows, "objective/scores"),
                     "beta": rows[-1].get("beta"), "state": member.run.status().get("state")}
            gold = final_value(rows, "gold/score")
            if gold is not None:
                point["gold"] = gold
            points.append(point)
        return points

    def best_of_n(self) -> list[dict]:
        """The best-of-n rows {n, kl, score, gold}, or [] until that job has finished."""
        run = self.best_of_n_run()
        path = run.path / "best_of_n.json" if run else None
        return json.loads(path.read_text())["rows"] if path and path.is_file() else []


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
