"""What a Ray task runs on its node: the job of one prepared run folder (a run, a group of runs side by side, a
batched sweep), exactly as ``python -m rlhf_engine run-job`` would, in the task's own worker process.

Around the job, every ``HEARTBEAT_S`` seconds, the task writes its runs' heartbeat into their status.json (a run on
another node reads as running while it is fresh: ``runfolder.writer_alive``); every second it looks for
``stop-requested`` in the job's folder, written by whoever asks it to stop (the driver, a page): the job then
checkpoints and ends, as on Ctrl-C. Its placement (node, CPUs, GPU share, memory, torch threads, attempt) goes
into every run's status.json.

**Retries.** Ray runs a task again when its worker died (killed, out of memory, its node lost), up to the task's
``max_retries``. Each start counts an attempt in the placement; a start after the first logs that the task was
retried, and the job resumes from its runs' checkpoints (metrics past the checkpoint are dropped first, so no step is
logged twice). An attempt past ``retries + 1`` (Ray retries tasks its memory monitor killed without that limit)
ends the runs interrupted instead of training again.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from rlhf_engine.runs.group_job import STOP_FILE
from rlhf_engine.runs.job import recorded_state
from rlhf_engine.runs.members import end_job_runs, job_and_runs
from rlhf_engine.runs.runfolder import ACTIVE_STATES, HEARTBEAT_S, HOST, RunFolder, checkpoint_step

THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
STOP_POLL_S = 1.0  # how often the task looks for stop-requested (its heartbeat: every HEARTBEAT_S)


def run_placed(run_path: str, resources: dict, retries: int) -> str:
    """The task's body (``ray_job`` wraps it in ``ray.remote``): train the run folder's job here; its end state."""
    import ray

    run = RunFolder(Path(run_path))
    _log_to(run)
    threads = _threads(int(resources["cpus"]))
    attempt = int((run.status().get("placement") or {}).get("attempt", 0)) + 1
    placement = {"node": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
                 "host": HOST, **resources, "threads": threads, "attempt": attempt}
    runs = job_and_runs(run)
    for each in runs:
        each.beat(placement=placement)
    if attempt > 1:
        _say_retried(runs, attempt, retries, placement["node"])
    if attempt > retries + 1:
        reason = (f"Ray started this task {attempt} times (its worker kept dying: out of memory?); "
                  "Resume continues from the last checkpoint")
        end_job_runs(run, "interrupted", reason, f"interrupted: {reason}")
        return "interrupted"
    if (run.path / STOP_FILE).exists():  # a group's runs too, not the group's folder alone
        end_job_runs(run, "stopped", None, "stopped before it started")
        return "stopped"
    return _train(run)


def _train(run: RunFolder) -> str:
    from rlhf_engine.runs.resume import prepared_job

    job = prepared_job(run.path).start()
    beaten = time.monotonic()
    while job.alive:
        job.thread.join(STOP_POLL_S)
        if time.monotonic() - beaten >= HEARTBEAT_S:
            for each in job_and_runs(run):  # a group's newcomers too
                each.beat()
            beaten = time.monotonic()
        if (run.path / STOP_FILE).exists() and not job.stop_event.is_set():
            run.log("stop asked through the run folder")
            job.stop()
    (run.path / STOP_FILE).unlink(missing_ok=True)
    return job.state


def _say_retried(runs: list[RunFolder], attempt: int, retries: int, node: str) -> None:
    for each in runs:
        if recorded_state(each) not in ACTIVE_STATES:
            continue
        latest = each.latest_checkpoint()
        since = f"the checkpoint at step {checkpoint_step(latest)}" if latest else "the start (no checkpoint yet)"
        each.log(f"retried by Ray (attempt {attempt} of at most {retries + 1}, on node {node}): the previous "
                 f"attempt's worker died; resuming from {since}")


def _threads(cpus: int) -> int:
    """Torch's threads to the CPUs the task asked for (Ray starts tasks with OMP_NUM_THREADS=1); how many it has."""
    for name in THREAD_ENVS:
        os.environ[name] = str(cpus)
    import torch

    torch.set_num_threads(max(1, cpus))
    return torch.get_num_threads()


def _log_to(run: RunFolder) -> None:
    """The task's output into the run's process.log, as a job process's (the worker serves this task only)."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(run.path / "process.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)

