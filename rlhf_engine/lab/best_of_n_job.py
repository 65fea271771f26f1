"""The best-of-n job: the no-training baseline of a sweep, ``n`` reference answers to each prompt, scored."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from rlhf_engine.config import PPOConfig, to_dict
from rlhf_engine.core.batching import batch_indices
from rlhf_engine.core.models import load_model_and_tokenizer, set_seed
from rlhf_engine.lab.best_of_n import best_of_n_curve, sample_and_score
from rlhf_engine.runs.job import Job, Stopped, progress_or_stop
from rlhf_engine.runs.policy_job import (
    jsonable,
    policy_run_inputs,
    reward_normalisation,
    run_prompts,
    trained_reward_dir,
    uses_gold_score,
)
from rlhf_engine.runs.runfolder import RunFolder, atomic_write_text

BEST_OF_N_KIND = "best_of_n"  # the kind of a best-of-n run


def prepare_best_of_n_job(run_dir: Path, config: PPOConfig, reward_dir: Path, n: int, n_prompts: int = 16,
                          prompts_path: Path | None = None) -> Job:
    """Create the run folder of a best-of-n job: ``n`` reference samples for each of ``n_prompts`` prompts.

    ``config`` is the PPO config of the runs it is compared with: same model, response length,
    temperature, seed and reward normalisation. The result is ``best_of_n.json`` (one row per n).
    """
    if n < 2:
        raise ValueError(f"best-of-n needs n >= 2, got {n}")
    reward_dir = trained_reward_dir(reward_dir)
    # The PPO runs' probe prompts (held out, the first of them), so their answers and best-of-n's are
    # scored on the same prompts; from a user's prompt file, a seeded choice as before.
    prompts, held_out = run_prompts(prompts_path)
    if prompts_path:
        chosen = [prompts[i] for i in batch_indices(len(prompts), min(n_prompts, len(prompts)), 1, config.seed)]
    else:
        chosen = held_out[:n_prompts]
    run = RunFolder(run_dir)
    run.create(BEST_OF_N_KIND, {"config": to_dict(config), "reward": str(reward_dir.resolve()), "n": n,
                                "gold": uses_gold_score(config, reward_dir)}, len(chosen) * n)
    atomic_write_text(run.path / "prompts.json", json.dumps([jsonable(p) for p in chosen]) + "\n")
    return Job(run, best_of_n_body)


def best_of_n_body(job: Job) -> str:
    _, config, _, reward_model, _ = policy_run_inputs(job.run)
    set_seed(config.seed)
    model, tokenizer = load_model_and_tokenizer(config.model)
    return run_best_of_n(job, job.run, model, tokenizer, reward_model)


def run_best_of_n(job: Job, run: RunFolder, model, tokenizer, reward_model,
                  policy_context=contextlib.nullcontext) -> str:
    """Sample and score the best-of-n run's answers from ``model`` (the reference, entered with
    ``policy_context``), write best_of_n.json; "completed", or "stopped" when the job was asked to stop."""
    saved, config, prompts, reward_model, gold_scorer = policy_run_inputs(run, reward_model)
    reward_normalisation(reward_model, Path(saved["reward"]), model, tokenizer, prompts, config, run,
                         policy_context)

    progress = progress_or_stop(job, run)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            proxy, gold = sample_and_score(model, tokenizer, prompts, saved["n"], reward_model, config.response_length,
                                           config.temperature, config.model.chat_template, gold_scorer,
                                           on_progress=progress, policy_context=policy_context)
    except Stopped:
        return "stopped"
    rows = best_of_n_curve(proxy, gold)
    atomic_write_text(run.path / "best_of_n.json", json.dumps({"rows": rows, "proxy": proxy, "gold": gold}) + "\n")
    run.log("best-of-n: " + ", ".join(f"n={r['n']} KL {r['kl']:.2f} score {r['score']:.3f}" for r in rows))
    return "completed"
