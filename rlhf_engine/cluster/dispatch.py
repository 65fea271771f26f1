"""A sweep on a Ray cluster: each of its runs becomes a task (``runs_per_task`` > 1: that many runs of one kind
trained side by side in one task, as a group), the cluster places them by the resources they ask for, and the
driver follows them, printing a line as each run moves on. Ctrl-C asks every task to stop (each checkpoints);
``resume --ray`` continues what did not complete.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rlhf_engine.cluster.connect import Cluster
from rlhf_engine.cluster.placement import DEFAULT_CPUS
from rlhf_engine.cluster.ray_job import DEFAULT_RETRIES, RayJob, wait_all
from rlhf_engine.runs.group_job import group_key, prepare_group
from rlhf_engine.runs.runfolder import RunFolder, atomic_write_text

GROUPS = "groups"  # the folder, inside a sweep's, of the groups its tasks train side by side
POLL_S = 2.0  # how often the driver reads its runs' progress


def plan_tasks(sweep_dir: Path, runs: list[RunFolder], runs_per_task: int = 1) -> list[RunFolder]:
    """The run folders whose jobs become tasks: each run alone, or (``runs_per_task`` > 1) groups of up to that many
    runs that can train side by side (``group_key``), each a group folder in the sweep's ``groups/``."""
    if runs_per_task <= 1:
        return list(runs)
    tasks, by_key = [], {}
    for run in runs:
        key = group_key(run)
        if key is None:
            tasks.append(run)  # best-of-n, say: a task of its own
        else:
            by_key.setdefault(key, []).append(run)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k, members in enumerate(by_key.values()):
        for i in range(0, len(members), runs_per_task):
            chunk = members[i:i + runs_per_task]
            if len(chunk) == 1:
                tasks.append(chunk[0])
                continue
            folder = Path(sweep_dir) / GROUPS / f"task-{stamp}-{k}-{i // runs_per_task}"
            folder.parent.mkdir(parents=True, exist_ok=True)
            tasks.append(prepare_group(folder, [m.path for m in chunk], grace_s=0.0))
    return tasks


def record_dispatch(sweep_dir: Path, cluster: Cluster, tasks: list[RunFolder]) -> None:
    """sweep.json says where the sweep went: the cluster and the task folders."""
    path = Path(sweep_dir) / "sweep.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record["ray"] = {"cluster": cluster.address, "tasks": [str(t.path) for t in tasks]}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def run_on_cluster(tasks: list[RunFolder], cluster: Cluster, cpus: int = DEFAULT_CPUS, retries: int = DEFAULT_RETRIES,
                   out=sys.stdout) -> list[RayJob]:
    """Hand every task to the cluster and follow them to their end; Ctrl-C stops them all (each checkpoints)."""
    jobs = [RayJob(task, cluster, cpus=cpus, retries=retries).start() for task in tasks]
    for job in jobs:
        print(f"{job.run.id}: queued on the cluster, asks for {job.resources.describe()}", file=out, flush=True)
    shown: dict[str, tuple] = {}
    try:
        while any(job.alive for job in jobs):
            _progress(jobs, shown, out)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        print("stopping: every run checkpoints at the end of its step", file=out, flush=True)
        for job in jobs:
            job.stop()
    wait_all(jobs)
    _progress(jobs, shown, out)
    return jobs


def _progress(jobs: list[RayJob], shown: dict, out) -> None:
    """One line for each run whose state, step or node changed since the last look."""
    from rlhf_engine.runs.members import runs_of

    for job in jobs:
        for run in runs_of(job.run):
            status = run.status()
            place = status.get("placement") or {}
            seen = (status.get("state"), status.get("step"), place.get("node"), place.get("attempt"))
            if shown.get(run.id) == seen:
                continue
            shown[run.id] = seen
            where = f" on {place['node']} ({place.get('cpus')} CPU, attempt {place.get('attempt')})" if place else ""
            error = f": {status['error']}" if status.get("error") and seen[0] != "completed" else ""
            print(f"{run.id}: {seen[0]} step {seen[1] or 0}/{status.get('total_steps', '?')}{where}{error}",
                  file=out, flush=True)
