"""The driver's side of a Ray task: ``RayJob``, a run folder's job placed on the cluster, with the interface of a
local job (``start``, ``stop``, ``join``, ``alive``, ``state``), so a ``JobQueue`` holds it as it holds a process.

``stop`` writes ``stop-requested`` into the run folder, which the task reads within a second (the run then
checkpoints and ends, wherever it is), and cancels a task that has not started. ``join`` waits for the task and,
when it ended without recording how (its worker killed by Ray's memory monitor, its node lost, its retries used
up), writes the reason into its runs: ``interrupted``, so that Resume continues them from their checkpoints. A group
of runs trained in one task is interrupted together; runs in other tasks go on.
"""

from __future__ import annotations

import threading
import time

from rlhf_engine.cluster.connect import Cluster
from rlhf_engine.cluster.placement import DEFAULT_CPUS, TaskResources, task_resources
from rlhf_engine.cluster.task import run_placed
from rlhf_engine.runs.group_job import STOP_FILE
from rlhf_engine.runs.job import recorded_state
from rlhf_engine.runs.members import end_job_runs, runs_of
from rlhf_engine.runs.runfolder import ACTIVE_STATES, RunFolder

DEFAULT_RETRIES = 2  # times Ray runs a task again after its worker died (Ray's own default for tasks is 3)
RESUME = "Resume continues from the last checkpoint"


class RayJob:
    """A prepared (queued) run folder's job as one Ray task; see the module."""

    def __init__(self, run: RunFolder, cluster: Cluster, cpus: int = DEFAULT_CPUS, retries: int = DEFAULT_RETRIES):
        self.run, self.cluster, self.cpus, self.retries = run, cluster, int(cpus), int(retries)
        self.resources: TaskResources | None = None  # sized at start: a group's runs are those it holds then
        self.stop_event = threading.Event()
        self.ref = None  # the task's result, once submitted
        self.error: str | None = None
        self._ended = False

    pid = None  # no process of this host: a restarted server cannot adopt it
    detached = False

    def start(self) -> "RayJob":
        import ray

        (self.run.path / STOP_FILE).unlink(missing_ok=True)  # a stop asked of an earlier time
        self.resources = task_resources(self.run, runs_of(self.run), self.cpus, self.cluster.gpu_memory_bytes,
                                        self.cluster.gpus)
        self.run.set_status("queued", placement=None, ray={"cluster": self.cluster.address,
                                                           "asks": self.resources.as_dict()})
        remote = ray.remote(max_calls=1)(run_placed).options(  # a fresh worker process per task
            num_cpus=self.resources.cpus, num_gpus=self.resources.gpus, memory=self.resources.memory_bytes,
            max_retries=self.retries, retry_exceptions=False, name=f"rlhf:{self.run.id}")
        self.ref = remote.remote(str(self.run.path), self.resources.as_dict(), self.retries)
        self.run.log(f"handed to {self.cluster.describe()}; the task asks for {self.resources.describe()}")
        return self

    def stop(self) -> None:
        self.stop_event.set()
        (self.run.path / STOP_FILE).touch()
        if self.ref is not None and self.alive and not (self.run.status().get("placement") or {}):
            import ray

            ray.cancel(self.ref)  # not started: it never will (a start racing this reads the stop file first)

    @property
    def alive(self) -> bool:
        if self.ref is None or self._ended:
            return False
        import ray

        ready, _ = ray.wait([self.ref], timeout=0)
        return not ready

    @property
    def state(self) -> str:
        return self.run.status().get("state", "unknown")

    def join(self, timeout: float | None = None) -> str:
        if self.ref is None:
            return self.state
        import ray

        ready, _ = ray.wait([self.ref], timeout=timeout)
        if not ready:
            return self.state
        try:
            ray.get(self.ref)
        except Exception as err:  # noqa: BLE001 - every way a task ends must reach its run folder
            self._record(*task_failure(err))
        self._ended = True
        if recorded_state(self.run) in ACTIVE_STATES:  # ended without saying so (it never started, say)
            self._record("stopped" if self.stop_event.is_set() else "interrupted",
                         None if self.stop_event.is_set() else f"the Ray task ended without recording how; {RESUME}")
        return self.state

    def _record(self, state: str, reason: str | None) -> None:
        """The task's end, written by the driver into the job's run and its runs still active."""
        self.error = reason
        end_job_runs(self.run, state, reason, f"{state}: {reason}" if reason else state)


def task_failure(err: BaseException) -> tuple[str, str | None]:
    """(state, reason) of a Ray task that raised ``err`` at ``ray.get``: cancelled is stopped; a worker killed by the
    memory monitor, a node lost or a worker dead past its retries is interrupted (resumable); the job's own error is
    failed with its first line."""
    from ray import exceptions as rx

    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if isinstance(err, rx.TaskCancelledError):
        return "stopped", None
    if isinstance(err, rx.OutOfMemoryError):
        return "interrupted", (f"Ray's memory monitor killed the task: its node ran low on memory ({_short(first)}). "
                               f"{RESUME}; give the runs more memory or fewer runs per node")
    if isinstance(err, rx.NodeDiedError) or "node" in first.lower() and "died" in first.lower():
        return "interrupted", f"the node running the task was lost ({_short(first)}). {RESUME}"
    if isinstance(err, (rx.WorkerCrashedError, rx.RaySystemError, rx.ObjectLostError)):
        return "interrupted", f"the task's worker died and Ray's retries are used up ({_short(first)}). {RESUME}"
    if isinstance(err, rx.RayTaskError):
        cause = err.cause if getattr(err, "cause", None) is not None else err
        return "failed", (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return "interrupted", f"the Ray task ended: {_short(first)}. {RESUME}"


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def wait_all(jobs: list[RayJob], poll_s: float = 1.0) -> None:
    """Join every job, each as it ends."""
    left = list(jobs)
    while left:
        for job in list(left):
            if not job.alive:
                job.join()
                left.remove(job)
        if left:
            time.sleep(poll_s)
