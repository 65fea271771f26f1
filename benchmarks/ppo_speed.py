"""Seconds per PPO iteration of our engine on the bundled model, with the time of each phase.

Run by hand (not in CI), alone on the machine:

    .venv/bin/python benchmarks/ppo_speed.py --iterations 5 --warmup 1 --out /tmp/ours.json

The settings mirror ``benchmarks/peer/trl_ppo.py`` (TRL's PPO): 8 prompts per batch, 32 new tokens,
4 PPO epochs, one minibatch, LoRA rank 8 on every linear layer, fp32 on CPU, and a reward model with an
untrained head on the same base (the speed of a step does not depend on what the reward model learnt).
Writes one JSON object: every iteration's seconds and phases, the median, response tokens per second,
and peak resident memory of this process (``ru_maxrss``). ``benchmarks/compare_trl.py`` runs it beside
TRL's trainer. Under ``accelerate launch --multi_gpu --num_processes N`` it runs data parallel (the batch
split over the processes); process 0 writes the JSON, with the processes' peak memories summed.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch
from bench import out_flag, peak_rss_bytes, set_threads, threads_flag, timing_flags, write_result
from turns import take_turn

from rlhf_engine.cli import set_fields  # noqa: E402
from rlhf_engine.config import ModelConfig, PPOConfig, RewardConfig, to_dict  # noqa: E402
from rlhf_engine.core import distributed  # noqa: E402
from rlhf_engine.core.reward import new_reward_model  # noqa: E402
from rlhf_engine.core.rollout import PHASES  # noqa: E402
from rlhf_engine.lab.demo import demo_prompts  # noqa: E402
from rlhf_engine.methods.ppo import PPOTrainer  # noqa: E402


def rss_now() -> int:
    """Resident bytes of this process now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    timing_flags(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--quant", default="none", help="policy base: none, 4bit or 8bit")
    parser.add_argument("--rm-quant", default="none", help="reward-model base: none, 4bit or 8bit")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other PPOConfig field, e.g. value_model=separate")
    parser.add_argument("--no-reuse-rollout-pass", action="store_true",
                        help="recompute the update's first pass instead of keeping the rollout's (to measure it)")
    threads_flag(parser)
    out_flag(parser)
    args = parser.parse_args()
    distributed.init_from_environment()
    set_threads(args.threads)

    model = ModelConfig(quant=args.quant, dtype=args.dtype, lora_r=args.lora_r, lora_alpha=args.lora_alpha)
    rm_model = ModelConfig(quant=args.rm_quant, dtype=args.dtype, lora_r=args.lora_r, lora_alpha=args.lora_alpha)
    config = PPOConfig(model=model, steps=args.iterations + args.warmup, batch_size=args.batch_size,
                       response_length=args.response_length, ppo_epochs=args.epochs, num_mini_batches=1,
                       probe_every=0, gold_score="off", lr_schedule="constant", **set_fields(PPOConfig, args.set))
    started = time.perf_counter()
    reward_model = new_reward_model(RewardConfig(model=rm_model))
    trainer = PPOTrainer(config, reward_model, demo_prompts())
    if args.no_reuse_rollout_pass:
        trainer.reuses_rollout_pass = False
    load_s = time.perf_counter() - started
    rss_after_load = rss_now()

    steps = []
    for _ in range(config.steps):
        metrics, _ = trainer.step()
        steps.append(metrics)
        if distributed.is_main():
            print(f"iteration {metrics['step']}: {metrics['time/step_s']:.2f} s  " +
                  "  ".join(f"{p} {metrics[f'time/{p}_s']:.2f}" for p in PHASES), flush=True)
        take_turn()  # under compare_trl.py: TRL's process runs its next iteration now (not timed here)
    measured = steps[args.warmup:]
    median_s = statistics.median(m["time/step_s"] for m in measured)
    tokens = statistics.median(m["response_length"] * args.batch_size for m in measured)
    result = {
        "peer": "ours",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "iteration_s": [m["time/step_s"] for m in steps],
        "measured_s": [m["time/step_s"] for m in measured],
        "median_s": median_s,
        "phases_median_s": {p: statistics.median(m[f"time/{p}_s"] for m in measured) for p in PHASES},
        "response_tokens_per_iteration": tokens,
        "sequence_tokens_per_iteration": statistics.median(m["sequence_tokens"] for m in measured),
        "tokens_per_s": tokens / median_s,
        "processes": distributed.world_size(),
        "peak_rss_bytes": int(distributed.all_sum(
            torch.tensor(peak_rss_bytes(), dtype=torch.float64)).item()),
        "rss_after_load_bytes": rss_after_load,
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"config": to_dict(config)},
    }
    if not distributed.is_main():
        return
    write_result(result, args.out)


if __name__ == "__main__":
    main()
