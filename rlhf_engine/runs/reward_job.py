"""The reward-model job: Bradley-Terry training on a run folder's own copy of the pairs, then the held-out
evaluation and the score normalisation on the base model's samples. Torch is imported by the job itself, so
that the pages and the report can read REWARD_KIND without it."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from rlhf_engine.config import RewardConfig, from_dict, to_dict
from rlhf_engine.data.pairs import read_pairs, write_pairs
from rlhf_engine.lab.noise import is_clear, standard_errors
from rlhf_engine.runs import trackers
from rlhf_engine.runs.job import Job, launch
from rlhf_engine.runs.runfolder import RunFolder, atomic_write_text

REWARD_KIND = "reward_model"  # the kind of a reward-model run
CHANCE = 0.5  # held-out agreement of a reward model that guesses: the chosen answer scores higher half the time


def prepare_reward_job(run_dir: Path, config: RewardConfig, data_path: Path) -> Job:
    """Validate the pairs and create the run folder (state queued, with a copy of the pairs); not started.
    The folder's config holds the pooling "auto" stood for, so the run reads the same whatever the default
    becomes."""
    pairs = read_pairs(data_path)  # raises DataError before anything is created
    config = dataclasses.replace(config, pooling=config.resolved_pooling())
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
    run.log(heldout_verdict(result, config))
    return "completed"


def heldout_agreement(evaluation: dict) -> tuple[float, float, int]:
    """(share p of the held-out pairs whose chosen answer scored higher, its binomial standard error √(p(1−p)/n),
    n). A share of 0 or 1 has no spread of its own: its standard error is then taken at chance, √(¼/n), so that
    3 pairs out of 3 do not read as a certainty."""
    pairs = int(evaluation.get("held_out_pairs") or len(evaluation.get("margins", [])))
    share = float(evaluation["accuracy"])
    spread = share * (1 - share) or CHANCE * (1 - CHANCE)
    return share, math.sqrt(spread / max(pairs, 1)), pairs


def learnt_beyond_chance(evaluation: dict) -> bool:
    """Whether the held-out agreement is above chance by at least CLEAR_SE standard errors (``noise.is_clear``)."""
    share, se, _ = heldout_agreement(evaluation)
    return share > CHANCE and is_clear(share - CHANCE, se)


def heldout_verdict(evaluation: dict, config: RewardConfig | None = None) -> str:
    """How often the reward model agrees with its held-out pairs, ± its standard error, against chance; within
    the noise of chance it says so and names the fixes. The CLI, the pages and events.log print these words.

    'Held-out agreement 57% ± 7% (29 of 51 pairs; chance 50%), within the noise of chance (1.0 standard
    errors): no sign yet that this reward model knows which answer is better. Try ...'
    """
    share, se, pairs = heldout_agreement(evaluation)
    distance = standard_errors(share - CHANCE, se)
    text = (f"Held-out agreement {share:.0%} ± {se:.0%} ({round(share * pairs)} of {pairs} pairs; "
            f"chance {CHANCE:.0%})")
    if not is_clear(share - CHANCE, se):
        return (f"{text}, within the noise of chance ({distance:.1f} standard errors): no sign yet that "
                f"this reward model knows which answer is better. {reward_fixes(evaluation, config)}")
    if share < CHANCE:
        return (f"{text}, {distance:.1f} standard errors below chance: it prefers the rejected answers. Check that "
                "the pairs' chosen and rejected answers are not swapped.")
    return f"{text}, {distance:.1f} standard errors above chance."


def reward_fixes(evaluation: dict, config: RewardConfig | None) -> str:
    """'Try mean pooling (...), more pairs (it learnt from 205) or more steps (it took 120).': what helps a reward
    model that agrees no better than chance, from what it was trained with (``config``; None: not known)."""
    fixes = []
    if config is None or config.resolved_pooling() == "last":
        measured = ""
        if _on_bundled_model(config):  # benchmarks/RESULTS.md, "where the reward model reads its score"
            measured = "; on the demo pairs the bundled model agreed 80% with it, 67% without"
        fixes.append(f"mean pooling (pooling = mean{measured})")
    learnt_from = evaluation.get("train_pairs")
    fixes.append("more pairs" + (f" (it learnt from {learnt_from})" if learnt_from else ""))
    fixes.append("more steps" + (f" (it took {config.steps})" if config is not None else ""))
    return "Try " + ", ".join(fixes[:-1]) + " or " + fixes[-1] + "."


def _on_bundled_model(config: RewardConfig | None) -> bool:
    """Whether ``config`` trains on the bundled model: the one for which "auto" pooling means the mean."""
    return config is not None and dataclasses.replace(config, pooling="auto").resolved_pooling() == "mean"


def reward_verdict(reward_dir: Path) -> str | None:
    """``heldout_verdict`` of a reward-model run folder (its eval.json and config.json); None before its
    evaluation, or for a folder that is not a run (an exported reward model)."""
    run = RunFolder(Path(reward_dir))
    evaluation = run.eval()
    if not evaluation:
        return None
    return heldout_verdict(evaluation, _saved_config(run))


def weak_reward_model_warning(reward_dir: Path) -> str | None:
    """What a policy run on this reward model should hear first when the model agrees with its held-out pairs no
    better than chance (or worse); None when it learnt, or when there is no evaluation to judge by."""
    run = RunFolder(Path(reward_dir))
    evaluation = run.eval()
    if not evaluation or learnt_beyond_chance(evaluation):
        return None
    return (f"The reward model {run.id} does not agree with its preference labels beyond chance, so a policy "
            f"trained on it follows noise. {heldout_verdict(evaluation, _saved_config(run))}")


def _saved_config(run: RunFolder) -> RewardConfig | None:
    """The RewardConfig a reward-model run was trained with, None when the folder has no config.json."""
    if not (run.path / "config.json").is_file():
        return None
    saved = run.config().get("config")
    return from_dict(RewardConfig, saved) if isinstance(saved, dict) else None
