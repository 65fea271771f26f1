"""Each step's metrics mirrored to the experiment trackers people follow runs in (``report_to``, as in the
Hugging Face trainers): TensorBoard, Trackio and Weights & Biases, each through its own library and in its
offline or local mode.

The run folder stays the source of truth: ``RunFolder.append_metrics`` writes the metrics line, then hands
a copy to ``mirror``, which opens the trackers a run's config names the first time it logs (so every path
that logs, a sweep's runs side by side included, is mirrored alike) and keeps them open for the process.
A tracker that fails to start or to log is reported once in the run's events.log and dropped: the run goes on.

Where they write, and the command that opens each (``open_command``):

- tensorboard: ``<run>/tensorboard/`` (an event file per process), ``tensorboard --logdir <run>/tensorboard``;
- trackio: its local database (``$TRACKIO_DIR``, by default under the Hugging Face cache), project
  ``rlhf-workbench``, the run under its folder's name; ``trackio show --project rlhf-workbench``;
- wandb: offline, ``<run>/wandb/``; ``wandb sync <run>/wandb/latest-run`` uploads it when online.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)

TRACKERS = ("tensorboard", "trackio", "wandb")
PROJECT = "rlhf-workbench"  # the Trackio and W&B project every run logs under (each tracker's package: its name)


def parse_report_to(text: str) -> tuple[str, ...]:
    """"none", or trackers separated by commas ("tensorboard,wandb"); raises ValueError naming the choices."""
    names = tuple(dict.fromkeys(n.strip() for n in str(text).split(",") if n.strip()))
    if names in ((), ("none",)):
        return ()
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"report_to: unknown tracker {unknown[0]!r}: choose from {', '.join(TRACKERS)} (or none)")
    return names


def open_command(name: str, run_dir: Path) -> str:
    """The shell command that shows a run's mirrored metrics in tracker ``name``."""
    run_dir = Path(run_dir)
    return {"tensorboard": f"tensorboard --logdir {run_dir / 'tensorboard'}",
            "trackio": f"trackio show --project {PROJECT}",
            "wandb": f"wandb sync {run_dir / 'wandb' / 'latest-run'}"}[name]


def reported_commands(run) -> list[tuple[str, str]]:
    """(tracker, the command that opens it) for each tracker a run (a RunFolder) mirrors its metrics to."""
    try:
        names = parse_report_to(run.config().get("config", {}).get("report_to", "none"))
    except (OSError, ValueError, AttributeError):
        return []
    return [(name, open_command(name, run.path)) for name in names]


class TensorBoardTracker:
    """Scalars with torch's SummaryWriter, flushed every step (a live TensorBoard sees each one)."""

    def __init__(self, run_dir: Path, run_id: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        self.writer.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```")

    def log(self, metrics: dict, step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class TrackioTracker:
    """A Trackio run in its local database (no Space, no server)."""

    def __init__(self, run_dir: Path, run_id: str, config: dict):
        import trackio

        self.run = trackio.init(project=PROJECT, name=run_id, config=config, resume="allow", embed=False,
                                auto_log_gpu=False, auto_log_cpu=False)

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class WandbTracker:
    """A W&B run in offline mode under ``<run>/wandb`` (``wandb sync`` uploads it later)."""

    def __init__(self, run_dir: Path, run_id: str, config: dict):
        import wandb

        self.run = wandb.init(project=PROJECT, name=run_id, dir=str(run_dir), mode="offline", config=config,
                              reinit="create_new")

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


TRACKER_CLASSES = {"tensorboard": TensorBoardTracker, "trackio": TrackioTracker, "wandb": WandbTracker}

_open: dict[Path, dict[str, object]] = {}  # run folder -> {tracker name: tracker}
_lock = threading.Lock()


def mirror(run, metrics: dict) -> None:
    """Log one metrics line of ``run`` (a RunFolder) to the trackers its config's ``report_to`` names."""
    numbers = {k: float(v) for k, v in metrics.items()
               if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    step = int(metrics.get("step", 0))
    key = Path(run.path).resolve()
    with _lock:
        trackers = _open.get(key)
        if trackers is None:
            trackers = _open[key] = _start(run)
        for name, tracker in list(trackers.items()):
            try:
                tracker.log(numbers, step)
            except Exception as err:  # noqa: BLE001 - a tracker never stops a run
                run.log(f"{name}: logging failed ({type(err).__name__}: {err}); no more metrics are sent to it")
                del trackers[name]


def _start(run) -> dict[str, object]:
    try:
        saved = run.config()
    except (OSError, ValueError):
        return {}
    config = saved.get("config", {})
    try:
        names = parse_report_to(config.get("report_to", "none"))
    except ValueError:
        return {}
    started = {}
    for name in names:
        try:
            started[name] = TRACKER_CLASSES[name](run.path, run.id, {"kind": saved.get("kind"), **config})
        except Exception as err:  # noqa: BLE001 - a tracker that cannot start never stops a run
            run.log(f"{name}: not mirroring metrics ({type(err).__name__}: {err})")
            continue
        run.log(f"mirroring metrics to {name}: {open_command(name, run.path)}")
    return started


def close(run_dir: Path) -> None:
    """Close the trackers of one run (its job ended); the next metrics line would open them again."""
    with _lock:
        trackers = _open.pop(Path(run_dir).resolve(), {})
    for tracker in trackers.values():
        try:
            tracker.close()
        except Exception as err:  # noqa: BLE001
            log.warning("closing a tracker failed: %s", err)


@atexit.register
def _close_all() -> None:
    for run_dir in list(_open):
        close(run_dir)


def require(report_to: str) -> None:
    """Raise ValueError (one line) when a tracker ``report_to`` names has no library installed here."""
    import importlib.util

    for name in parse_report_to(report_to):
        if importlib.util.find_spec(name) is None:
            raise ValueError(f"report_to {name}: the {name} package is not installed here (requirements.txt has it: "
                             "`make setup` installs it)")
