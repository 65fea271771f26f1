"""Seconds per step of our GRPO, RLOO or DPO on the bundled model, beside TRL's (``compare_trl.py --methods``).

Run by hand (not in CI), alone on the machine:

    .venv/bin/python benchmarks/method_speed.py --method grpo --iterations 5 --warmup 1 --out /tmp/ours.json

The settings mirror ``benchmarks/peer/trl_<method>.py``: fp32 on CPU, LoRA rank 8 (alpha 16) on every linear
layer; GRPO and RLOO: 8 answers a step (2 prompts × 4), 32 new tokens at T 0.7, one update per rollout, a
reward model with an untrained head on the same base (the speed of a step does not depend on what it
learnt), and the reference's log-probs every step (GRPO: β = 0.04 in the loss; RLOO: β = 0.05 in the reward);
DPO: 8 pairs a step, at most 256 tokens. Writes one JSON object: every step's seconds, the median, tokens per
second and the peak resident memory of this process (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench import out_flag, peak_rss_bytes, set_threads, threads_flag, timing_flags, write_result
from turns import take_turn

from rlhf_engine.config import DPOConfig, GRPOConfig, ModelConfig, RewardConfig, RLOOConfig, to_dict  # noqa: E402
from rlhf_engine.core.reward import new_reward_model  # noqa: E402
from rlhf_engine.data.pairs import read_pairs  # noqa: E402
from rlhf_engine.lab.demo import demo_prompts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("grpo", "rloo", "dpo"), required=True)
    timing_flags(parser, unit="steps")
    parser.add_argument("--batch-size", type=int, default=8, help="answers per step (DPO: pairs)")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256, help="DPO: tokens of prompt + answer")
    parser.add_argument("--pairs", type=Path, help="DPO's pairs (.jsonl)")
    parser.add_argument("--prompts", type=Path, help="GRPO's and RLOO's prompts (a JSON list; default the demo's)")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--answers-per-pass", type=int, help="GRPO, RLOO: answers per update pass (default: the "
                        "config's)")
    parser.add_argument("--cpu-matmul", default="auto", help="ModelConfig.cpu_matmul (packed copies or not)")
    threads_flag(parser)
    out_flag(parser)
    args = parser.parse_args()
    set_threads(args.threads)

    model = ModelConfig(quant="none", lora_r=args.lora_r, lora_alpha=args.lora_alpha, cpu_matmul=args.cpu_matmul)
    shared = dict(model=model, steps=args.iterations + args.warmup, batch_size=args.batch_size,
                  response_length=args.response_length, probe_every=0, gold_score="off", lr_schedule="constant")
    if args.answers_per_pass and args.method != "dpo":
        shared["answers_per_pass"] = args.answers_per_pass
    started = time.perf_counter()
    reward_model = new_reward_model(RewardConfig(model=model))
    prompts = json.loads(args.prompts.read_text()) if args.prompts else demo_prompts()
    if args.method == "dpo":
        from rlhf_engine.methods.dpo import DPOTrainer

        config = DPOConfig(max_length=args.max_length, **shared)
        trainer = DPOTrainer(config, reward_model, read_pairs(args.pairs))
    elif args.method == "grpo":
        from rlhf_engine.methods.grpo import GRPOTrainer

        config = GRPOConfig(group_size=args.group_size, **shared)
        trainer = GRPOTrainer(config, reward_model, prompts)
    else:
        from rlhf_engine.methods.rloo import RLOOTrainer

        config = RLOOConfig(group_size=args.group_size, **shared)
        trainer = RLOOTrainer(config, reward_model, prompts)
    load_s = time.perf_counter() - started

    steps = []
    for _ in range(config.steps):
        metrics, _ = trainer.step()
        steps.append(metrics)
        print(f"step {metrics['step']}: {metrics['time/step_s']:.2f} s", flush=True)
        take_turn()  # under compare_trl.py: TRL's process runs its next step now (not timed here)
    measured = steps[args.warmup:]
    median_s = statistics.median(m["time/step_s"] for m in measured)
    result = {
        "peer": "ours", "method": args.method, "torch_version": torch.__version__,
        "threads": torch.get_num_threads(), "load_s": load_s,
        "step_s": [m["time/step_s"] for m in steps], "measured_s": [m["time/step_s"] for m in measured],
        "median_s": median_s,
        "peak_rss_bytes": peak_rss_bytes(),
        "settings": {k: str(v) for k, v in vars(args).items() if k != "out"} | {"config": to_dict(config)},
    }
    if args.method != "dpo":
        tokens = statistics.median(m["response_length"] * args.batch_size for m in measured)
        result.update(response_tokens_per_step=tokens, tokens_per_s=tokens / median_s)
    else:
        result["pairs_per_s"] = args.batch_size / median_s
    write_result(result, args.out)


if __name__ == "__main__":
    main()
