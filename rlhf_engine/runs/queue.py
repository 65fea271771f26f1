"""The dashboard's job queue: one heavy job per device at a time, in submission order."""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

from rlhf_engine.runs.job import Job, end_run


class JobQueue:
    """One heavy job per device at a time: submitted jobs wait (state queued) and run in submission order.

    The dashboard keeps one queue per server process; the CLI runs one job per process and needs none.
    A job stopped while it waits is marked stopped and never starts.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._pending: deque[Job] = deque()
        self._current: Job | None = None
        self._worker: threading.Thread | None = None

    def submit(self, job: Job) -> Job:
        """Queue a prepared (not started) job; it starts when the jobs before it have ended."""
        with self._lock:
            if any(j.run.path.resolve() == job.run.path.resolve() for j in self.jobs()):
                raise ValueError(f"run {job.run.id} is already queued or running")
            self._pending.append(job)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="job-queue", daemon=True)
                self._worker.start()
            self._lock.notify_all()
        return job

    def jobs(self) -> list[Job]:
        """The running job (if any) followed by the waiting ones."""
        with self._lock:
            return ([self._current] if self._current is not None else []) + list(self._pending)

    def find(self, run_path: Path) -> Job | None:
        """The queued or running job of a run folder, if this queue holds one."""
        target = Path(run_path).resolve()
        return next((j for j in self.jobs() if j.run.path.resolve() == target), None)

    def position(self, job: Job) -> int:
        """0 for the running job, 1 for the next one, and so on; -1 if not held."""
        jobs = self.jobs()
        return jobs.index(job) if job in jobs else -1

    def stop(self, job: Job) -> None:
        """Stop a running job (it checkpoints and ends) or take a waiting one off the queue."""
        with self._lock:
            waiting = job in self._pending
            if waiting:
                self._pending.remove(job)
        job.stop()
        if waiting:
            mark_stopped_before_start(job)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is running or waiting; return whether that happened in time."""
        with self._lock:
            return self._lock.wait_for(lambda: self._current is None and not self._pending, timeout)

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._worker = None
                    self._lock.notify_all()
                    return
                job = self._current = self._pending.popleft()
            if job.stop_event.is_set():
                mark_stopped_before_start(job)
            else:
                job.start()
                job.join()
            with self._lock:
                self._current = None
                self._lock.notify_all()


def mark_stopped_before_start(job) -> None:
    job.run.log("stopped before it started")
    end_run(job.run, "stopped")
