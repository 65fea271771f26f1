"""``sweep --ray`` and ``resume --ray``: the runs handed to a Ray cluster as tasks (``rlhf_engine.cluster``)."""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import UserError
from .follow import stop_on_signals


def _connected(args, folder: Path):
    """The cluster of --ray, its nodes checked to see ``folder``; the user's one line (exit 2) if not."""
    from rlhf_engine.cluster.connect import ClusterError, check_shared_folder, connect

    if args.retries < 0:
        raise UserError(f"--retries must be 0 or more, got {args.retries}")
    try:
        cluster = connect(args.ray)
        if not cluster.local:  # a local Ray is this machine alone: its one node sees what the driver sees
            check_shared_folder(folder)
    except ClusterError as err:
        raise UserError(str(err)) from None
    print(f"ray: {cluster.describe()}", flush=True)
    stop_on_signals()  # after Ray's own handlers: Ctrl-C, kill -INT and kill stop every task with a checkpoint
    return cluster


def sweep_on_cluster(args, prepare) -> int:
    """Check the cluster first (nothing is created when it cannot be used), then prepare the sweep's runs and hand
    them to it; the exit code is 0 when every run completed, 130 when stopped, 1 otherwise."""
    from rlhf_engine.cluster.dispatch import plan_tasks, record_dispatch, run_on_cluster
    from rlhf_engine.lab.sweep import Sweep

    cluster = _connected(args, Path(args.out).resolve().parent)
    prepare()
    sweep = Sweep(args.out)
    todo = [run for run in sweep.runs() if run.status().get("state") != "completed"]  # borrowed runs are done
    tasks = plan_tasks(args.out, todo, args.runs_per_task)
    record_dispatch(args.out, cluster, tasks)
    print(f"sweep {args.out}: {len(todo)} runs in {len(tasks)} Ray task{'s' * (len(tasks) != 1)}", flush=True)
    return _ended(run_on_cluster(tasks, cluster, args.task_cpus, args.retries), args.out)


def resume_on_cluster(args) -> int:
    """A run, or a sweep's runs not completed (one task each), continued on the cluster."""
    from rlhf_engine.cluster.dispatch import run_on_cluster
    from rlhf_engine.lab.sweep import SWEEP_FILE, Sweep
    from rlhf_engine.runs.resume import prepare_resume
    from rlhf_engine.runs.runfolder import RunFolder

    path = Path(args.run)
    cluster = _connected(args, path.resolve().parent)
    if (path / SWEEP_FILE).is_file() and not RunFolder(path).exists():  # a sweep whose runs were tasks of their own
        runs = [run for run in Sweep(path).runs() if run.status().get("state") != "completed"]
        if not runs:
            raise UserError(f"every run of {path} has completed; nothing to resume")
    else:
        runs = [RunFolder(path)]
    for run in runs:
        prepare_resume(run.path)
    return _ended(run_on_cluster(runs, cluster, args.task_cpus, args.retries), path)


def _ended(jobs, out: Path) -> int:
    from rlhf_engine.runs.members import runs_of

    states = {run.id: run.status().get("state") for job in jobs for run in runs_of(job.run)}
    if all(state == "completed" for state in states.values()):
        print(f"done: python -m rlhf_engine report {out} writes its one-file HTML report")
        return 0
    left = ", ".join(f"{name} {state}" for name, state in states.items() if state != "completed")
    print(f"not completed: {left}; 'python -m rlhf_engine resume --ray ADDRESS {out}' continues them",
          file=sys.stderr)
    return 130 if all(state in ("completed", "stopped") for state in states.values()) else 1
