"""Resuming a run, and the job of a prepared run folder by its kind (what ``python -m rlhf_engine run-job`` runs)."""

from __future__ import annotations

from pathlib import Path

from rlhf_engine.lab.best_of_n_job import BEST_OF_N_KIND, best_of_n_body
from rlhf_engine.lab.demo_job import DEMO_PAIRS_KIND, demo_pairs_body
from rlhf_engine.lab.sweep import SWEEP_KIND
from rlhf_engine.lab.sweep_job import sweep_body
from rlhf_engine.methods import registry
from rlhf_engine.runs.group_job import GROUP_KIND, group_job
from rlhf_engine.runs.job import Job, launch
from rlhf_engine.runs.policy_job import policy_body
from rlhf_engine.runs.reward_job import REWARD_KIND, reward_body
from rlhf_engine.runs.runfolder import RunFolder


def resume_job(run_dir: Path, background: bool = True) -> Job:
    """Continue a stopped, failed or interrupted run from its last checkpoint (or from the start)."""
    return launch(prepare_resume(run_dir), background)


def prepare_resume(run_dir: Path) -> Job:
    """The Job that continues a stopped, failed or interrupted run (state set to queued); not started."""
    run = RunFolder(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"no run at {run_dir}")
    state = run.status()["state"]
    if state in ("running", "queued"):
        raise ValueError(f"run {run.id} is still {state}")
    if state == "completed":
        raise ValueError(f"run {run.id} has completed; nothing to resume")
    run.set_status("queued", placement=None, ray=None)  # where it ran last; a Ray task writes its own anew
    return prepared_job(run_dir)


def prepared_job(run_dir: Path) -> Job:
    """The Job of a run folder that prepare_* or prepare_resume left queued (what ``run-job`` executes)."""
    run = RunFolder(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"no run at {run_dir}")
    kind = run.config()["kind"]
    if kind == GROUP_KIND:  # participants' runs side by side: its Job knows their owners
        return group_job(run_dir)
    bodies = {REWARD_KIND: reward_body, DEMO_PAIRS_KIND: demo_pairs_body, BEST_OF_N_KIND: best_of_n_body,
              SWEEP_KIND: sweep_body, **dict.fromkeys(registry.names(), policy_body)}
    return Job(run, bodies[kind])
