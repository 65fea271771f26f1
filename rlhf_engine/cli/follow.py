"""Following a job from the terminal: a line per logged step (the metrics the run's kind follows) and each
health alarm once, until the job ends; Ctrl-C or SIGTERM stops it cleanly, checkpoint first."""

from __future__ import annotations

import sys

from rlhf_engine.methods import registry

REWARD_MODEL_FOLLOWED = ("loss", "accuracy", "eval/accuracy")  # a reward-model run's; no method record has them


def followed_metrics(kind: str) -> tuple[str, ...]:
    """What the commands that run a job print each step, by the run's kind: a policy run's are its method's
    (registry), a reward model's its own; `runs` shows the last row's, less the time."""
    if kind == "reward_model":
        return REWARD_MODEL_FOLLOWED
    return registry.get(kind).followed if registry.is_policy_kind(kind) else ()


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Ctrl-C, ``kill -INT`` and a plain ``kill`` (SIGTERM) all stop a run cleanly, checkpoint first.

    A command started in the background (``nohup ... &``, or a server started so) gets SIGINT ignored, and
    Python then never raises KeyboardInterrupt: take it back, or the dashboard's Stop would do nothing.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def follow(job) -> int:
    """Print one line per logged step (and each health alarm once) until the job ends; 1 if it failed."""
    import time

    from rlhf_engine.core import distributed

    stop_on_signals()
    if not distributed.is_main():  # process 0 prints; the others train beside it
        try:
            job.join()
        except KeyboardInterrupt:
            job.stop()
            job.join()
        return 1 if job.error else 0
    followed = _followed_runs(job)
    seen = {run.id: (len(run.metrics()), len(_alarm_lines(run))) for run, _, _ in followed}
    _print_trackers(followed)

    def print_new() -> None:
        for run, prefix, keys in followed:
            rows, alarms = seen[run.id]
            seen[run.id] = (_print_new_metrics(run, rows, keys, prefix), _print_new_alarms(run, alarms, prefix))

    try:
        while job.alive:
            time.sleep(0.5)
            print_new()
    except KeyboardInterrupt:
        print("stopping (writing a checkpoint)...", file=sys.stderr)
        job.stop()
        job.join()
    print_new()
    status = job.run.status()
    print(f"run {job.run.path}: {status['state']} at step {status.get('step', 0)}")
    if status["state"] == "failed":
        print(f"error: {status.get('error')}", file=sys.stderr)
        return 1
    return 0


def _followed_runs(job) -> list[tuple]:
    """(run, prefix of its lines, its followed metrics) of each run the job trains: a sweep's every member,
    each line with its run's name."""
    kind = job.run.config()["kind"]
    if kind != "sweep":
        return [(job.run, "", followed_metrics(kind))]
    from rlhf_engine.lab.sweep import Sweep

    return [(run, f"{run.id}: ", followed_metrics(run.config()["kind"])) for run in Sweep(job.run.path).runs()]


def _print_trackers(followed: list[tuple]) -> None:
    """Where the metrics are mirrored (tensorboard, trackio, wandb), each command to see them once."""
    from rlhf_engine.runs.trackers import reported_commands

    shown = set()
    for run, prefix, _ in followed:
        for name, command in reported_commands(run):
            if command not in shown:  # trackio's one project serves every run of a sweep
                shown.add(command)
                print(f"{prefix}metrics mirrored to {name}: {command}", flush=True)


def _print_new_metrics(run, seen: int, keys, prefix: str = "") -> int:
    rows = run.metrics()
    for row in rows[seen:]:
        parts = [f"step {row.get('step')}"] + [f"{k} {row[k]:.4g}" for k in keys
                                               if isinstance(row.get(k), (int, float))]
        print(prefix + "  ".join(parts), flush=True)
    return len(rows)


def _alarm_lines(run) -> list[str]:
    return [line.split(" ", 1)[1] for line in run.events().splitlines() if " alarm at step " in line]


def _print_new_alarms(run, seen: int, prefix: str = "") -> int:
    lines = _alarm_lines(run)
    for line in lines[seen:]:
        print(f"  ! {prefix}{line}", flush=True)
    return len(lines)
