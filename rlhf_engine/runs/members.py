"""The runs one job trains: a group's members, a batched sweep's members and its best-of-n, else the run itself
(what a Ray task beats the heartbeat of, and what ends with a job that could not say how it ended)."""

from __future__ import annotations

from pathlib import Path

from rlhf_engine.lab.sweep import SWEEP_FILE, Sweep
from rlhf_engine.runs.group_job import MEMBERS_FILE, members_of
from rlhf_engine.runs.job import end_run, recorded_state
from rlhf_engine.runs.runfolder import ACTIVE_STATES, RunFolder


def runs_of(run: RunFolder) -> list[RunFolder]:
    """The runs ``run``'s job trains (see the module); ``[run]`` for a run alone."""
    if (run.path / MEMBERS_FILE).is_file():
        return [RunFolder(Path(m["run"])) for m in members_of(run.path)]
    if (run.path / SWEEP_FILE).is_file() and run.exists():
        return Sweep(run.path).runs()
    return [run]


def job_and_runs(run: RunFolder) -> list[RunFolder]:
    """The job's own folder, then the runs it trains, each once."""
    seen, kept = set(), []
    for each in [run, *runs_of(run)]:
        if each.path.resolve() not in seen:
            seen.add(each.path.resolve())
            kept.append(each)
    return kept


def end_job_runs(run: RunFolder, state: str, reason: str | None, said: str) -> None:
    """A job that ended without recording how: it and every run of it still active end in ``state`` with the
    ``reason``, and ``said`` in their events."""
    for each in job_and_runs(run):
        if recorded_state(each) in ACTIVE_STATES:
            each.log(said)
            end_run(each, state, reason)
