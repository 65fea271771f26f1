"""PPO with the gold annotator itself as the reward: does PPO raise a reward that is right by construction?

Run by hand; it separates "PPO does not learn" from "the reward model is too weak":

    .venv/bin/python benchmarks/ppo_gold_reward.py --out out/ppo-gold --steps 30 --batch-size 16

The gold scores are normalised (mean 0, std 1) on samples of the initial policy, as a reward model's
are, so ``objective/scores`` is in the same units as in a normal run. Metrics go to OUT/metrics.jsonl;
the script prints the mean gold score of the first and last five steps, then scores the trained policy and
the reference on the held-out demo prompts (``rlhf_loop.gold_eval``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench import set_threads, threads_flag, write_result
from rlhf_loop import gold_eval

from rlhf_engine.config import ModelConfig, PPOConfig  # noqa: E402
from rlhf_engine.core.reward import normalize_on_policy  # noqa: E402
from rlhf_engine.lab.demo import GoldReward, demo_prompt_split  # noqa: E402
from rlhf_engine.methods.ppo import PPOTrainer  # noqa: E402

NORM_SAMPLES = 64  # initial-policy responses the gold scores are normalised on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--quant", default="none")
    parser.add_argument("--seed", type=int, default=0)
    threads_flag(parser, default=torch.get_num_threads())
    args = parser.parse_args()
    set_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    config = PPOConfig(model=ModelConfig(quant=args.quant), steps=args.steps, batch_size=args.batch_size,
                       kl_coef=args.kl_coef, learning_rate=args.lr, seed=args.seed)
    train, _ = demo_prompt_split()
    reward = GoldReward()
    trainer = PPOTrainer(config, reward, train)
    norm = normalize_on_policy(reward, trainer.model.peft, trainer.tokenizer, train, NORM_SAMPLES,
                               config.response_length, config.temperature, config.model.chat_template)
    mean, std = norm["norm/raw_mean"], norm["norm/raw_std"]
    print(f"initial policy: gold mean {mean:.3f}, std {std:.3f} on {norm['norm/samples']} samples", flush=True)

    history = []
    with open(args.out / "metrics.jsonl", "w") as log:
        for _ in range(args.steps):
            started = time.perf_counter()
            metrics, samples = trainer.step()
            metrics["gold/mean"] = metrics["objective/raw_scores"]
            history.append(metrics)
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            print(f"step {metrics['step']:3d}  gold {metrics['gold/mean']:+.3f}  kl {metrics['objective/kl']:6.2f}  "
                  f"entropy {metrics['objective/entropy']:5.1f}  clipfrac {metrics['policy/clipfrac']:.3f}  "
                  f"{time.perf_counter() - started:.0f} s  | {samples[0]['response'][:60]!r}", flush=True)
    trainer.model.save_adapters(args.out)  # OUT/policy, OUT/value: rlhf_loop.gold_eval can score the policy
    first = statistics.fmean(m["gold/mean"] for m in history[:5])
    last = statistics.fmean(m["gold/mean"] for m in history[-5:])
    summary = {"initial_mean": mean, "initial_std": std, "first5_gold": first, "last5_gold": last,
               "last5_kl": statistics.fmean(m["objective/kl"] for m in history[-5:]),
               "config": vars(args) | {"out": str(args.out)}}
    summary["held_out"] = gold_eval(args.out, {"reference": None, "policy": args.out / "policy"},
                                    samples_per_prompt=2, seed=args.seed)
    write_result(summary, args.out / "summary.json")


if __name__ == "__main__":
    main()
