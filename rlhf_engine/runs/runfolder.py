"""The run folder: the single source of truth that the UI, the CLI and comparisons read.

runs/<run-id>/
  config.json       settings of the run (kind, config, data paths)
  status.json       state, step, total steps, error, pid and host; written atomically (a Ray task's run also its
                    heartbeat and placement: ``cluster``)
  metrics.jsonl     one JSON object per step (mirrored to the trackers of the config's report_to)
  samples.jsonl     logged samples (prompt, response, score, KL)
  probes.jsonl      answers of the reference and the policy to fixed probe prompts (PPO)
  events.log        human-readable log
  checkpoints/step-NNNNNN/   resumable state, written to a temp folder then renamed
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

STATES = ("queued", "running", "completed", "stopped", "failed", "interrupted")
ACTIVE_STATES = ("queued", "running")
CLAIM_FILE = ".created"  # made with O_EXCL when a run folder is created
KEEP_CHECKPOINTS = 2
HOST = socket.gethostname()  # written beside the pid: a pid names a process on its own host only
HEARTBEAT_S = 5.0  # how often a Ray task writes its runs' heartbeat (``beat``)
HEARTBEAT_STALE_S = 45.0  # a run whose heartbeat is older reads as interrupted (its node or task is gone)
_STATUS_LOCK = threading.Lock()  # status.json is read, updated and written whole: one writer at a time here
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str, private: bool = False) -> None:
    """Write a file so readers see the old or the new content, never a torn one. A write that fails (a full
    disk) leaves the old file as it was and no temp file behind. ``private``: readable by its owner only (0600)
    from its first byte (a room's tokens)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if not private:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_jsonl(path: Path) -> list[dict]:
    """All complete JSON lines; a torn last line (a crash mid-write) is skipped."""
    if not Path(path).is_file():
        return []
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id exists."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_alive(status: dict) -> bool:
    """Whether the process that last wrote an active status is still there: its heartbeat is fresh (a run placed by
    Ray, maybe on another node), else its pid answers on this host. A heartbeat counts only while the process that
    wrote it is still the status's writer (a run resumed without Ray writes no heartbeat)."""
    beat = status.get("heartbeat") or {}
    if beat.get("pid") == status.get("pid") and beat.get("host") == status.get("host") and "at" in beat:
        if time.time() - float(beat["at"]) > HEARTBEAT_STALE_S:
            return False
        return status.get("host") != HOST or pid_alive(status.get("pid"))
    if status.get("host") not in (None, HOST):
        return False  # written on another host without a heartbeat: nothing here can tell it is alive
    return pid_alive(status.get("pid"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunFolder:
    """Reads and writes one run's files."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def id(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / "status.json").is_file()

    def create(self, kind: str, config: dict, total_steps: int) -> None:
        """Start a new run folder; refuse to overwrite an existing run."""
        taken = FileExistsError(f"{self.path} already holds a run; resume it or choose another folder")
        if self.exists():
            raise taken
        self.path.mkdir(parents=True, exist_ok=True)
        try:  # the claim: of two processes (two tabs, two clicks) creating the same run, exactly one gets here
            (self.path / CLAIM_FILE).open("x").close()
        except FileExistsError:
            raise taken from None
        atomic_write_text(self.path / "config.json", json.dumps({"kind": kind, **config}, indent=2) + "\n")
        self.set_status("queued", step=0, total_steps=total_steps, created_at=_now())

    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    def status(self) -> dict:
        """status.json; a run marked active whose process is gone reads as 'interrupted'."""
        status = self.recorded()
        if not status:
            return {"state": "unknown", "step": 0}
        if status.get("state") in ACTIVE_STATES and not writer_alive(status):
            status["state"] = "interrupted"
        return status

    def set_status(self, state: str, **fields) -> None:
        """Update status.json atomically (fields merge into the previous status)."""
        assert state in STATES, state
        with _STATUS_LOCK:
            status = self.recorded()
            status.update(fields, state=state, pid=os.getpid(), host=HOST, updated_at=_now())
            self._write_status(status)

    def beat(self, **fields) -> bool:
        """The heartbeat of a run this process trains (a Ray task's): its status.json's ``heartbeat`` set to now, and
        ``fields`` merged, if the run is active; its state is left as it is. Returns whether it was active."""
        with _STATUS_LOCK:
            status = self.recorded()
            if status.get("state") not in ACTIVE_STATES:
                return False
            status.update(fields, pid=os.getpid(), host=HOST,
                          heartbeat={"at": round(time.time(), 1), "pid": os.getpid(), "host": HOST})
            self._write_status(status)
            return True

    def recorded(self) -> dict:
        """status.json as written ({} without a readable one): ``status`` reads an active run whose process is gone
        as interrupted, this does not."""
        try:
            return json.loads((self.path / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def _write_status(self, status: dict) -> None:
        atomic_write_text(self.path / "status.json", json.dumps(status, indent=2) + "\n")

    def append_metrics(self, metrics: dict) -> None:
        """One step's metrics line; then a copy to the trackers the run reports to (``trackers.mirror``)."""
        self._append(self.path / "metrics.jsonl", [metrics])
        from rlhf_engine.runs import trackers

        trackers.mirror(self, metrics)

    def append_samples(self, samples: list[dict]) -> None:
        self._append(self.path / "samples.jsonl", samples)

    def metrics(self) -> list[dict]:
        return read_jsonl(self.path / "metrics.jsonl")

    def samples(self) -> list[dict]:
        return read_jsonl(self.path / "samples.jsonl")

    def append_probes(self, rows: list[dict]) -> None:
        self._append(self.path / "probes.jsonl", rows)

    def probes(self) -> list[dict]:
        """Answers to the probe prompts: the reference's (step 0) and the policy's every few steps."""
        return read_jsonl(self.path / "probes.jsonl")

    def eval(self) -> dict:
        """eval.json of a finished reward-model run, or {}."""
        path = self.path / "eval.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def log(self, message: str) -> None:
        """One line in events.log."""
        with open(self.path / "events.log", "a", encoding="utf-8") as f:
            f.write(f"{_now()} {message}\n")

    def events(self) -> str:
        path = self.path / "events.log"
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def truncate_to_step(self, step: int) -> None:
        """Drop metrics and samples logged after ``step`` (before resuming from that checkpoint)."""
        for name in ("metrics.jsonl", "samples.jsonl", "probes.jsonl"):
            if not (self.path / name).is_file():
                continue
            rows = [r for r in read_jsonl(self.path / name) if r.get("step", 0) <= step]
            atomic_write_text(self.path / name, "".join(json.dumps(r) + "\n" for r in rows))

    @staticmethod
    def _append(path: Path, rows: list[dict]) -> None:
        text = "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()

    # -- checkpoints ---------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.path / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        if not self.checkpoint_root.is_dir():
            return None
        done = sorted(p for p in self.checkpoint_root.glob("step-*") if p.is_dir())
        return done[-1] if done else None

    def write_checkpoint(self, step: int, writer) -> Path:
        """Call writer(tmp_folder), then rename it into place atomically; keep the last two."""
        self.checkpoint_root.mkdir(parents=True, exist_ok=True)
        final = self.checkpoint_root / f"step-{step:06d}"
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.checkpoint_root))
        try:
            writer(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in sorted(p for p in self.checkpoint_root.glob("step-*") if p.is_dir())[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        for torn in self.checkpoint_root.glob(".tmp-*"):  # left by a process killed while writing one
            shutil.rmtree(torn, ignore_errors=True)
        return final


def safe_name(name: str, what: str = "run name") -> str:
    """A run or file name that is one plain name: letters, digits, '.', '_' and '-', no leading dot.

    Raises ValueError for names that would leave the runs folder (``../x``, ``a/b``) or are empty.
    """
    name = name.strip()
    if not name or not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}", name):
        raise ValueError(f"{what} {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
                         "not starting with '.'")
    return name


def new_run_name(prefix: str) -> str:
    """prefix-YYYYmmdd-HHMMSS in local time."""
    return f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def checkpoint_step(folder: Path) -> int:
    """The step number of a checkpoint folder name."""
    return int(Path(folder).name.split("-")[1])


def list_runs(root: Path) -> list[RunFolder]:
    """Run folders directly under root, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [RunFolder(p) for p in root.iterdir() if (p / "status.json").is_file()]
    return sorted(runs, key=lambda r: (r.path / "config.json").stat().st_mtime if (r.path / "config.json").exists()
                  else time.time(), reverse=True)


class ReplicaRunFolder(RunFolder):
    """A run folder as seen by a data-parallel process other than process 0: it reads, and writes nothing."""

    def create(self, kind: str, config: dict, total_steps: int) -> None:
        pass

    def set_status(self, state: str, **fields) -> None:
        pass

    def beat(self, **fields) -> bool:
        return False

    def append_metrics(self, metrics: dict) -> None:
        pass

    def append_samples(self, samples: list[dict]) -> None:
        pass

    def append_probes(self, rows: list[dict]) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def truncate_to_step(self, step: int) -> None:
        pass

    def write_checkpoint(self, step: int, writer) -> Path:
        return self.checkpoint_root / f"step-{step:06d}"
