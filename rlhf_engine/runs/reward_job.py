"""The reward-model job: Bradley-Terry training on a run folder's own copy of the pairs, then the held-out
evaluation and the score normalisation on the base model's samples. Torch is imported by the job itself, so
that the pages and the report can read REWARD_KIND without it."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf_engine.config import RewardConfig, from_dict, to_dict
from rlhf_engine.data.pairs import read_pairs, write_pairs
from rlhf_engine.runs import trackers
from rlhf_engine.runs.job import Job, launch
from rlhf_engine.runs.runfolder import RunFolder, atomic_write_text

REWARD_KIND = "reward_model"  # the kind of a reward-model run


def prepare_reward_job(run_dir: Path, config: RewardConfig, data_path: Path) -> Job:
    """Validate the pairs and create the run folder (state queued, with a copy of the pairs); not started."""
    pairs = read_pairs(data_path)  # raises DataError before anything is created
    trackers.require(config.report_to)
    run = RunFolder(run_dir)
    run.create(REWARD_KIND, {"config": to_dict(config), "data": str(data_path), "pairs": len(pairs)}, config.steps)
    write_pairs(pairs, run.path / "pairs.jsonl")
    return Job(run, reward_body)


def start_reward_job(run_dir: Path, config: RewardConfig, data_path: Path, background: bool = True) -> Job:
    """Validate the pairs, create the run folder and start training."""
    return launch(prepare_reward_job(run_dir, config, data_path), background)


def reward_body(job: Job) -> str:
    import torch
    from safetensors.torch import load_file, save_file

    from rlhf_engine.core.models import policy_name
    from rlhf_engine.core.reward import (
        held_out_scores,
        normalize_on_policy,
        split_pairs,
        train_reward_model,
        unique_prompts,
    )

    run = job.run
    config = from_dict(RewardConfig, run.config()["config"])
    pairs = read_pairs(run.path / "pairs.jsonl")
    resume = None
    latest = run.latest_checkpoint()
    if latest is not None:
        resume = {"model": load_file(str(latest / "trainable.safetensors")),
                  **torch.load(latest / "trainer_state.pt", weights_only=True)}
        run.truncate_to_step(resume["step"])
        run.log(f"resuming from {latest.name}")
    else:
        run.truncate_to_step(0)

    def on_metrics(metrics: dict) -> None:
        run.append_metrics(metrics)
        run.set_status("running", step=metrics["step"])

    def on_checkpoint(rm, state: dict) -> None:
        def write(folder: Path) -> None:
            save_file({k: v.contiguous() for k, v in state["model"].items()}, str(folder / "trainable.safetensors"))
            torch.save({k: state[k] for k in ("optimizer", "scheduler", "step")}, folder / "trainer_state.pt")
        run.write_checkpoint(state["step"], write)

    rm, result = train_reward_model(config, pairs, on_metrics, job.stop_event.is_set, on_checkpoint, resume)
    if result is None:
        return "stopped"
    run.log(f"held-out accuracy {result['accuracy']:.3f}, mean margin {result['margin_mean']:.3f}; "
            f"normalising scores on {config.norm_samples} samples of the base model")
    # the initial policy is the RM's own base model: sample with the adapter off, score with it on
    norm = normalize_on_policy(rm, rm.backbone, rm.tokenizer, unique_prompts(pairs), config.norm_samples,
                               config.norm_response_length, config.norm_temperature, config.model.chat_template,
                               policy_context=rm.backbone.disable_adapter)
    rm.normalized_on = policy_name(config.model)
    rm.save(run.path)
    held_out = split_pairs(pairs, config.eval_fraction, config.seed)[1]
    result["held_out"] = held_out_scores(rm, held_out)
    atomic_write_text(run.path / "eval.json", json.dumps({**result, **norm}, indent=2) + "\n")
    run.set_status("running", step=config.steps, eval_accuracy=result["accuracy"],
                   eval_margin=result["margin_mean"])
    return "completed"
