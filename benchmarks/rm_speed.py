"""Reward-model training throughput of our engine (pairs per second) and its peak memory.

Run by hand, alone on the machine (``benchmarks/compare_trl.py`` runs it beside TRL's RewardTrainer):

    .venv/bin/python benchmarks/rm_speed.py --pairs pairs.jsonl --steps 10 --warmup 1 --out /tmp/rm.json

Same settings as ``benchmarks/peer/trl_reward.py``: 8 pairs a step, LoRA rank 8 on every linear layer,
fp32, 256 tokens at most, the score read at the last token. Step times come from the training loop's
metric callback (one per optimiser step); the held-out evaluation at the end is not timed.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from bench import out_flag, peak_rss_bytes, timing_flags, write_result
from turns import StepClock

from rlhf_engine.config import ModelConfig, RewardConfig  # noqa: E402
from rlhf_engine.core.reward import train_reward_model  # noqa: E402
from rlhf_engine.data.pairs import read_pairs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    timing_flags(parser, "--steps", default=10, unit="steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--quant", default="none")
    out_flag(parser)
    args = parser.parse_args()

    pairs = read_pairs(args.pairs)
    total = args.warmup + args.steps + 1  # one more: the last step also evaluates the held-out pairs (untimed)
    config = RewardConfig(model=ModelConfig(quant=args.quant, lora_r=args.lora_r, lora_alpha=args.lora_alpha),
                          steps=total, batch_size=args.batch_size, learning_rate=args.lr, max_length=args.max_length,
                          pooling="last", eval_every=total + 1, checkpoint_every=total + 1)
    clock = StepClock()  # the first step includes loading
    train_reward_model(config, pairs, on_metrics=lambda m: clock.step_done())
    step_s = clock.step_s[:args.warmup + args.steps]
    measured = step_s[args.warmup:]
    median = statistics.median(measured)
    result = {
        "peer": "ours-reward",
        "threads": torch.get_num_threads(),
        "step_s": step_s,
        "measured_s": measured,
        "median_step_s": median,
        "pairs_per_s": args.batch_size / median,
        "peak_rss_bytes": peak_rss_bytes(),
        "settings": {k: str(v) for k, v in vars(args).items() if k != "out"},
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
