"""A job: one run executing in a thread of this process (``Job``) or in a process of its own (``ProcessJob``),
with a stop event and the run folder as its only output.

A job's body (each kind of run has its own: ``reward_job``, ``policy_job``, ``lab.sweep_job``, ...) writes
metrics, samples, checkpoints and status as it goes; an exception marks the run failed with its message in
status.json and the traceback in events.log.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from rlhf_engine.lab.sweep import SWEEP_FILE, SWEEP_KIND, Sweep
from rlhf_engine.runs import trackers
from rlhf_engine.runs.runfolder import ACTIVE_STATES, ReplicaRunFolder, RunFolder, pid_alive

DETACHED_ENV = "RLHF_DETACHED"  # set for a detached job: run-job then outlives its server (no watch on the parent)
THREADS_ENV = "RLHF_THREADS"  # torch threads of a job process (with OMP_NUM_THREADS and MKL_NUM_THREADS)
CPUS_ENV = "RLHF_JOB_CPUS"  # the CPUs a job process runs on, e.g. "0-3"


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

    ``detached`` (a workshop room's jobs): the process gets a session and process group of its own, so a Ctrl-C
    to the server is not a Ctrl-C to the job, and it outlives the server (a restarted server takes it back:
    ``JobQueue.restore``); stop() then sends SIGINT to its whole group. ``env``: extra environment, such as the
    threads and CPUs of the room's slot (``THREADS_ENV``, ``CPUS_ENV``; read by ``apply_job_resources``).
    """

    def __init__(self, run: RunFolder, detached: bool = False, env: dict[str, str] | None = None):
        self.run = run
        self.detached = detached
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.stop_event = threading.Event()
        self.process: subprocess.Popen | None = None
        self.error: str | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "rlhf_engine", "run-job", str(self.run.path)]

    def start(self) -> "ProcessJob":
        package_parent = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, **self.env,
               "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)}
        if self.detached:
            env[DETACHED_ENV] = "1"
        with open(self.run.path / "process.log", "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env, start_new_session=self.detached)
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.alive:
            if self.detached:
                interrupt(self.process.pid)
            else:
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
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def state(self) -> str:
        return self.run.status().get("state", "unknown")


class AdoptedJob:
    """A job process that an earlier server started (detached, so it outlived that server), taken back by the
    server restarted on the same room: not our child, so it is watched by its pid. Same interface as Job.

    stop() sends SIGINT (checkpoint, then end); join() polls. A process that ends without recording an end in its
    run folder leaves the run stopped (if Stop was asked) or interrupted, with the reason.
    """

    POLL_S = 0.2

    def __init__(self, run: RunFolder, pid: int):
        self.run = run
        self.pid = int(pid)
        self.stop_event = threading.Event()
        self.error: str | None = None

    def start(self) -> "AdoptedJob":
        return self  # already running

    def stop(self) -> None:
        self.stop_event.set()
        if self.alive:
            interrupt(self.pid)

    def join(self, timeout: float | None = None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.alive:
            if deadline is not None and time.monotonic() >= deadline:
                return self.state
            time.sleep(self.POLL_S)
        if recorded_state(self.run) in ACTIVE_STATES:
            if self.stop_event.is_set():
                end_run(self.run, "stopped")
            else:
                self.error = ("the job process ended without recording how (its server had restarted); "
                              "Resume continues from the last checkpoint")
                end_run(self.run, "interrupted", self.error)
        return self.state

    @property
    def alive(self) -> bool:
        return process_alive(self.pid)

    @property
    def state(self) -> str:
        return self.run.status().get("state", "unknown")


def interrupt(pid: int) -> None:
    """SIGINT to a job process: to its whole process group when it leads one of its own (a detached job, with the
    processes it started), else to it alone; never to this server's own group."""
    try:
        if os.getpgid(pid) == pid and pid != os.getpgrp():
            os.killpg(pid, signal.SIGINT)
        else:
            os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        pass


def process_alive(pid: int | None) -> bool:
    """``pid_alive``, less zombies: a child that ended but whose exit its parent has not read yet."""
    if not pid_alive(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust pid_alive
    fields = stat.rpartition(")")[2].split()
    return not fields or fields[0] not in ("Z", "X")


def runs_job_of(pid: int | None, run: RunFolder) -> bool:
    """Whether process ``pid`` is alive and names this run folder on its command line: after a restart, a pid
    read from a file may since have been given to another process, which must never be adopted or signalled."""
    if not process_alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid
    return any(Path(os.fsdecode(arg)).name == run.path.name for arg in args[1:] if arg)


def recorded_state(run: RunFolder) -> str:
    """The state status.json records, as written (``RunFolder.status`` reads an active run whose pid is gone as
    interrupted); "unknown" without one."""
    return run.recorded().get("state", "unknown")


def parse_cpus(text: str) -> set[int]:
    """CPU numbers from a list such as "0-3,6" (the form of ``taskset -c`` and cgroups' cpuset)."""
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if part:
            first, _, last = part.partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def apply_job_resources() -> None:
    """In a job process (``run-job``), before it trains: the CPUs (``RLHF_JOB_CPUS``, e.g. "0-3") and torch threads
    (``RLHF_THREADS``) that its slot gives it. Set from the environment, so that a job does not inherit the
    pinning of a server started under ``taskset``, and K jobs side by side do not each use every core."""
    cpus = os.environ.get(CPUS_ENV, "").strip()
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, parse_cpus(cpus))
        except (OSError, ValueError) as err:
            print(f"could not run on CPUs {cpus}: {err}", file=sys.stderr)
    threads = os.environ.get(THREADS_ENV, "").strip()
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))


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
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return (f"the server's disk is full ({err.strerror or 'No space left on device'}): nothing more can be saved "
                "until some space is freed")
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
