"""The best-of-n job: the no-training baseline of a sweep, ``n`` reference answers to each of the runs' held-out
probe prompts, scored as the runs score their probe answers."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from rlhf_engine.config import PPOConfig, to_dict
from rlhf_engine.core.models import load_model_and_tokenizer, set_seed
from rlhf_engine.lab.best_of_n import ReferenceAnswers, best_of_n_curve, sample_and_score, scores_as_probed
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


def prepare_best_of_n_job(run_dir: Path, config: PPOConfig, reward_dir: Path, n: int, n_prompts: int | None = None,
                          prompts_path: Path | None = None) -> Job:
    """Create the run folder of a best-of-n job: ``n`` reference samples for each of the runs' probe prompts.

    ``config`` is the PPO config of the runs it is compared with: same model, response length, temperature,
    probe prompts (its ``probe_prompts`` first held-out prompts, as ``prepare_policy_job`` picks them), scoring
    and reward normalisation. ``n_prompts``: only the first that many of them (default: all, so best-of-n and
    the runs stand on the same prompts). The result is ``best_of_n.json`` (one row per n, with standard errors).

    Cost: prompts × n answers (the workshop: 54 × 8 = 432). In a batched sweep the first
    ``reference_probe_samples`` of each prompt's (54 × 2 = 108) are the runs' reference probe answers, which the
    runs then take instead of decoding them again (``sweep_job``): 324 answers more than the runs alone.
    """
    if n < 2:
        raise ValueError(f"best-of-n needs n >= 2, got {n}")
    reward_dir = trained_reward_dir(reward_dir)
    _, held_out = run_prompts(prompts_path)
    probes = held_out[:config.probe_prompts]
    chosen = probes[:n_prompts] if n_prompts else probes
    run = RunFolder(run_dir)
    run.create(BEST_OF_N_KIND, {"config": to_dict(config), "reward": str(reward_dir.resolve()), "n": n,
                                "gold": uses_gold_score(config, reward_dir)}, len(chosen) * n)
    atomic_write_text(run.path / "prompts.json", json.dumps([jsonable(p) for p in chosen]) + "\n")
    return Job(run, best_of_n_body)


def best_of_n_body(job: Job) -> str:
    _, config, _, reward_model, _ = policy_run_inputs(job.run)
    set_seed(config.seed)
    model, tokenizer = load_model_and_tokenizer(config.model)
    state, _ = run_best_of_n(job, job.run, model, tokenizer, reward_model)
    return state


def run_best_of_n(job: Job, run: RunFolder, model, tokenizer, reward_model,
                  policy_context=contextlib.nullcontext) -> tuple[str, list[ReferenceAnswers]]:
    """Sample and score the best-of-n run's answers from ``model`` (the reference, entered with
    ``policy_context``), write best_of_n.json. Returns its end state ("completed", or "stopped" when the job was
    asked to stop) and the reference's probe answers among its samples (the first ``reference_probe_samples`` of
    each prompt, as decoded) for the runs beside it."""
    saved, config, prompts, reward_model, gold_scorer = policy_run_inputs(run, reward_model)
    reward_normalisation(reward_model, Path(saved["reward"]), model, tokenizer, prompts, config, run,
                         policy_context)
    reference_samples = min(config.reference_probe_samples, saved["n"])
    try:
        samples = sample_and_score(model, tokenizer, prompts, saved["n"], scores_as_probed(reward_model, config),
                                   config.response_length, config.temperature, config.model.chat_template,
                                   gold_scorer, keep=reference_samples, on_progress=progress_or_stop(job, run),
                                   policy_context=policy_context)
    except Stopped:
        return "stopped", []
    rows = best_of_n_curve(samples.proxy, samples.gold, reference_samples=reference_samples)
    atomic_write_text(run.path / "best_of_n.json", json.dumps(
        {"rows": rows, "proxy": samples.proxy, "gold": samples.gold, "reference_samples": reference_samples}) + "\n")
    run.log(f"best-of-n on {len(prompts)} held-out prompts: " + ", ".join(
        f"n={r['n']} KL {r['kl']:.2f} score {r['score']:.3f} ± {r['score_se']:.3f}" for r in rows))
    return "completed", samples.kept
