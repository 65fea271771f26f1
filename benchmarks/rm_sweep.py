"""One reward-model setting on a pairs file, with held-out agreement printed every few steps.

Run by hand, one setting per call (the sweep in benchmarks/RESULTS.md is a list of such calls):

    .venv/bin/python benchmarks/rm_sweep.py --pairs out/pairs.jsonl --lr 1e-4 --steps 120
    .venv/bin/python benchmarks/rm_sweep.py --pairs out/pairs.jsonl --head-lr 3e-3 --lora-r 4
    .venv/bin/python benchmarks/rm_sweep.py --pairs out/pairs.jsonl --pooling mean

It uses the engine's model, split, loss and evaluation; only the optimiser is built here, so the
score head can get its own learning rate (``--head-lr``), which the engine does not offer.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bench import set_threads, threads_flag

from rlhf_engine.config import POOLINGS, ModelConfig, RewardConfig  # noqa: E402
from rlhf_engine.core.batching import batch_indices  # noqa: E402
from rlhf_engine.core.models import set_seed  # noqa: E402
from rlhf_engine.core.reward import (  # noqa: E402
    bradley_terry_loss,
    evaluate,
    linear_warmup_decay,
    new_reward_model,
    pair_scores,
    split_pairs,
)
from rlhf_engine.data.pairs import read_pairs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--lr", type=float, default=1e-4, help="adapter learning rate")
    parser.add_argument("--head-lr", type=float, help="score-head learning rate (default: --lr)")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank; alpha is twice the rank")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--quant", default="4bit")
    parser.add_argument("--pooling", choices=POOLINGS, default="last",
                        help="score the last real token (the default) or the mean of the response tokens")
    threads_flag(parser, default=torch.get_num_threads())
    args = parser.parse_args()
    set_threads(args.threads)

    config = RewardConfig(model=ModelConfig(quant=args.quant, lora_r=args.lora_r, lora_alpha=2 * args.lora_r),
                          steps=args.steps, learning_rate=args.lr, pooling=args.pooling)
    set_seed(config.seed)
    train, held_out = split_pairs(read_pairs(args.pairs), config.eval_fraction, config.seed)
    rm = new_reward_model(config)
    head = list(rm.head.parameters())
    head_ids = {id(p) for p in head}
    adapter = [p for p in rm.parameters() if p.requires_grad and id(p) not in head_ids]
    optimizer = torch.optim.AdamW([{"params": adapter, "lr": args.lr}, {"params": head, "lr": args.head_lr or args.lr}],
                                  weight_decay=config.weight_decay)
    scheduler = linear_warmup_decay(optimizer, args.steps, config.warmup_ratio)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = [train[i] for i in batch_indices(len(train), config.batch_size, step, config.seed)]
        loss = bradley_terry_loss(*pair_scores(rm, batch))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter + head, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % args.eval_every == 0 or step == args.steps:
            result = evaluate(rm, held_out)
            print(json.dumps({"step": step, "wall_s": round(time.perf_counter() - started),
                              "train_loss": round(loss.item(), 3), "held_out_accuracy": round(result["accuracy"], 3),
                              "margin": round(result["margin_mean"], 3)}),
                  flush=True)


if __name__ == "__main__":
    main()
