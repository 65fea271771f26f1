"""Does each method learn? PPO, GRPO, RLOO and DPO side by side on the bundled model, the workshop's reward model
and its held-out probe prompts, with the best-of-n baseline: one frontier, and each method's gold gain.

    .venv/bin/python benchmarks/method_sweep.py --workspace /tmp/methods [--reward DIR] [--json OUT]

Trains the workshop's reward model first unless ``--reward`` names one (e.g. a workshop run's
``workshop-rm``). Every method gets the workshop sweep's budget: 10 steps of 8 answers (GRPO and RLOO: 2
prompts × 4 answers; DPO: 8 pairs of the reward model's own 210), answers of 40 tokens at T 0.7, the
missing-EOS penalty, one constant LoRA rate (1e-3) and 54 held-out probe prompts answered at the end, each
paired with the mean of the reference's 2 answers. Each method keeps its own β default (PPO 0.05, GRPO 0.04,
RLOO 0.05, DPO 0.1) and GRPO takes 2 passes per rollout as the PPO runs do (ppo_epochs 2). Prints one line per
run; ``--json`` writes the figures; ``benchmarks/sweep_figures.py --prefix methods`` draws the README's figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

from bench import machine_line, write_json

from rlhf_engine.config import ModelConfig  # noqa: E402
from rlhf_engine.lab import workshop  # noqa: E402
from rlhf_engine.lab.sweep import Sweep, parse_method_betas, plan_methods
from rlhf_engine.lab.sweep_job import prepare_sweep
from rlhf_engine.runs.reward_job import start_reward_job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--reward", type=Path, help="a trained workshop reward model (copied); default: train one")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--methods", default="ppo,grpo,rloo,dpo", help="comma-separated (default all four)")
    parser.add_argument("--betas", default="", help="e.g. ppo=0,rloo=0 (default: each method's own β)")
    parser.add_argument("--best-of-n", type=int, default=workshop.CPU.best_of_n, help="0: no best-of-n run")
    parser.add_argument("--name", default="methods", help="the sweep's folder name")
    parser.add_argument("--rloo-epochs", type=int, default=1, help="RLOO's passes per rollout (1: REINFORCE)")
    args = parser.parse_args()
    runs = args.workspace / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    model = ModelConfig(quant="none")  # the workshop's CPU model
    rm_dir = runs / "workshop-rm"
    started = time.perf_counter()
    if rm_dir.exists():  # a second sweep in the same workspace: the same reward model
        pass
    elif args.reward:
        shutil.copytree(args.reward, rm_dir)
    else:
        job = start_reward_job(rm_dir, workshop.reward_config(model, workshop.CPU), workshop.PAIRS_FILE,
                               background=False)
        assert job.state == "completed", job.run.status()
    rm_seconds = time.perf_counter() - started
    every = workshop.method_configs(model, workshop.CPU)
    every["rloo"] = dataclasses.replace(every["rloo"], epochs=args.rloo_epochs)
    configs = {m: every[m] for m in args.methods.split(",")}
    betas = parse_method_betas(args.betas) if args.betas else {}
    (job,) = prepare_sweep(runs / args.name, every["ppo"], rm_dir, best_of_n=args.best_of_n,
                           best_of_n_prompts=workshop.CPU.best_of_n_prompts, methods=plan_methods(configs, betas))
    started = time.perf_counter()
    job.start()
    state = job.join()
    sweep_seconds = time.perf_counter() - started
    print(f"sweep {state} in {sweep_seconds:.0f} s (reward model {rm_seconds:.0f} s)")
    sweep = Sweep(runs / args.name)
    result = {"machine": machine_line(), "state": state, "sweep_s": sweep_seconds,
              "reward_model_s": rm_seconds, "runs": {}, "best_of_n": sweep.best_of_n()}
    for point in sweep.frontier():
        keep = ("kl", "kl_se", "score", "score_se", "gold", "gold_se", "gold_gain", "gold_gain_se", "score_gain",
                "score_gain_se", "prompts", "probe_step", "beta", "train_kl")
        result["runs"][point["label"]] = {k: point[k] for k in keep if k in point}
        print(f"{point['label']:16} KL {point['kl']:6.2f} ± {point['kl_se']:.2f} nats  RM {point['score']:+.3f}  "
              f"gold {point['gold']:+.3f}, gain {point['gold_gain']:+.3f} ± {point['gold_gain_se']:.3f} "
              f"({point['gold_gain'] / point['gold_gain_se']:.2f} SE) on {point['prompts']} prompts")
    if args.json:
        write_json(args.json, result)
    return 0 if state == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
