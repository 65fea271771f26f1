"""The job that makes simulated preference pairs (the gold annotator's) and stores them in a pair store when
complete: all of them or none."""

from __future__ import annotations

from pathlib import Path

from rlhf_engine.config import ModelConfig, from_dict, to_dict
from rlhf_engine.data.pairs import write_pairs
from rlhf_engine.data.store import PairStore
from rlhf_engine.lab.demo import make_demo_pairs
from rlhf_engine.runs.job import Job, Stopped, progress_or_stop
from rlhf_engine.runs.runfolder import RunFolder

DEMO_PAIRS_KIND = "demo_pairs"  # the kind of a run that makes simulated pairs


def prepare_demo_pairs_job(run_dir: Path, n: int, store_path: Path, model_config: ModelConfig | None = None,
                           seed: int = 0) -> Job:
    """Create the run folder of a make-demo-pairs job (progress = pairs made); not started."""
    run = RunFolder(run_dir)
    run.create(DEMO_PAIRS_KIND, {"config": {"n": n, "seed": seed, "model": to_dict(model_config or ModelConfig())},
                                 "store": str(Path(store_path).resolve())}, n)
    return Job(run, demo_pairs_body)


def demo_pairs_body(job: Job) -> str:

    run = job.run
    saved = run.config()
    model_config = from_dict(ModelConfig, saved["config"]["model"])

    progress = progress_or_stop(job, run)
    try:
        pairs = make_demo_pairs(saved["config"]["n"], model_config, seed=saved["config"]["seed"], on_progress=progress)
    except Stopped:
        return "stopped"  # nothing stored: the store gets all the pairs or none
    write_pairs(pairs, run.path / "pairs.jsonl")
    PairStore(saved["store"]).add_many(pairs, source="simulated")
    run.log(f"stored {len(pairs)} simulated pairs in {saved['store']}")
    run.set_status("running", step=len(pairs))
    return "completed"
