"""A job: one run executing in a thread of this process (``Job``) or in a process of its own (``ProcessJob``),
with a stop event and the run folder as its only output.

A job's body (each kind of run has its own: ``reward_job``, ``policy_job``, ``lab.sweep_job``, ...) writes
metrics, samples, checkpoints and status as it goes; an exception marks the run failed with its message in
status.json and the traceback in events.log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from rlhf_engine.lab.sweep import SWEEP_FILE, SWEEP_KIND, Sweep
from rlhf_engine.runs import trackers
from rlhf_engine.runs.runfolder import ReplicaRunFolder, RunFolder


class Job:
    """A run executing in a background thread; stop() asks it to checkpoint and end."""

    def __init__(self, run: RunFolder, body: Callable[["Job"], str]):
        from rlhf_engine.core import distributed  # torch: not for the pages and commands that only read runs

        if not distributed.is_main():  # a data-parallel replica: process 0 writes the run folder
            run = ReplicaRunFolder(run.path)
        self.run = run
        self._body = body
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._main, name=f"job-{run.id}", daemon=True)
        self.error: str | None = None

    def start(self) -> "Job":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> str:
        self.thread.join(timeout)
        return self.state

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    @property
    def state(self) -> str:
        return self.run.status().get("state", "unknown")

    def _main(self) -> None:
        run = self.run
        run.set_status("running", error=None)
        run.log("started")
        try:
            final_state = self._body(self)
        except BaseException as err:  # noqa: BLE001 - every failure must reach the run folder
            self.error = describe_error(err, step=int(run.status().get("step", 0)) + 1)
            run.log("failed: " + self.error + "\n" + traceback.format_exc())
            run.set_status("failed", error=self.error)
            return
        finally:
            close_trackers(run)
        run.log(final_state)
        run.set_status(final_state)


def close_trackers(run: RunFolder) -> None:
    """The trackers of a run that ended (and of a sweep's runs): their last metrics flushed."""

    trackers.close(run.path)
    if (run.path / SWEEP_FILE).is_file():
        for member in Sweep(run.path).runs():
            trackers.close(member.path)


class ProcessJob:
    """A prepared run folder executed by ``python -m rlhf_engine run-job <folder>`` in a process of its own.

    The dashboard runs jobs this way: its own threads (one script run a second per open page) would
    otherwise compete with training for the GIL, and a job that crashes or runs out of memory cannot take
    the server with it. stop() sends SIGINT, which the job answers as Ctrl-C: checkpoint, then end.
    Same interface as Job, so a JobQueue holds either.
    """

    def __init__(self, run: RunFolder):
        self.run = run
        self.stop_event = threading.Event()
        self.process: subprocess.Popen | None = None
        self.error: str | None = None

    def start(self) -> "ProcessJob":
        package_parent = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH"))
                                                           if p)}
        with open(self.run.path / "process.log", "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "rlhf_engine", "run-job", str(self.run.path)],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.alive:
            self.process.send_signal(signal.SIGINT)

    def join(self, timeout: float | None = None) -> str:
        if self.process is not None:
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                return self.state
            if self.run.status().get("state") in ("queued", "running", "interrupted"):
                # the process ended without recording an end (killed, or stopped before it began)
                if self.stop_event.is_set():
                    end_run(self.run, "stopped")
                elif code < 0:  # killed by a signal: nothing wrong with the run, which resumes from its checkpoint
                    self.error = describe_kill(-code)
                    end_run(self.run, "interrupted", self.error)
                else:
                    self.error = f"the job process ended with exit code {code}; see process.log in the run folder"
                    end_run(self.run, "failed", self.error)
        return self.state

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def state(self) -> str:
        return self.run.status().get("state", "unknown")


def end_run(run: RunFolder, state: str, error: str | None = None) -> None:
    """Record that a run's job ended without saying so itself (killed, failed to start, stopped in the queue);
    a sweep's members that had not ended end with it."""
    run.set_status(state, **({"error": error} if error else {}))
    try:
        kind = run.config().get("kind")
    except (OSError, ValueError):
        return
    if kind == SWEEP_KIND:
        for member in Sweep(run.path).runs():
            if member.status().get("state") in ("queued", "running", "interrupted"):
                member.set_status(state, **({"error": error} if error else {}))


def describe_kill(signal_number: int) -> str:
    """Why a job process that a signal ended stopped, for the run's status line."""
    try:
        name = signal.Signals(signal_number).name
    except ValueError:
        name = f"signal {signal_number}"
    why = " (often the system running out of memory)" if signal_number == signal.SIGKILL else ""
    return f"the job process was killed by {name}{why}; Resume continues from the last checkpoint"


def describe_error(err: BaseException, step: int | None = None) -> str:
    """One line for the user, with a suggestion where there is an obvious one; ``step``: the step it failed in."""
    torch = sys.modules.get("torch")  # no torch loaded: the error is not torch's
    if isinstance(err, (MemoryError, *((torch.OutOfMemoryError,) if torch else ()))):
        where = f" in step {step}" if step else ""
        return (f"out of memory{where}: try a smaller batch size or response length, or 4-bit quantization "
                f"({type(err).__name__})")
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


class Stopped(Exception):
    """Raised from a progress callback when the job was asked to stop."""


def progress_or_stop(job: Job, run: RunFolder) -> Callable[[int, int], None]:
    """A progress callback (done, total): the run's step is ``done``; raises Stopped once Stop was asked."""
    def progress(done: int, total: int) -> None:
        run.set_status("running", step=done)
        if job.stop_event.is_set():
            raise Stopped

    return progress


def launch(job: Job, background: bool) -> Job:
    job.start()
    if not background:
        job.join()
    return job
