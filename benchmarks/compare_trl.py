"""Our PPO, reward-model, GRPO, RLOO and DPO training against TRL's, side by side in one run on this machine.

Run by hand (not in CI), with nothing else running:

    benchmarks/peer/setup.sh                       # TRL's venvs (trl 1.12.0 for PPO, 1.16.0 for RewardTrainer)
    .venv/bin/python benchmarks/compare_trl.py --out benchmarks/out/compare

PPO: bundled SmolLM2-135M-Instruct, 8 prompts a batch, 32 new tokens, 4 PPO epochs, one minibatch, LoRA
rank 8 (alpha 16) on every linear layer, fp32 (``--dtype`` / ``--trl-dtype bfloat16``: bf16 weights on either
side), ``--iterations`` measured after one warm-up. Ours is
``benchmarks/ppo_speed.py`` (engine defaults otherwise); TRL's is ``benchmarks/peer/trl_ppo.py``
(``trl.experimental.ppo``: LoRA policy, reference = adapter off, value and reward models as
``AutoModelForSequenceClassification``, its documented setup). Each side runs in its own process; the
two run side by side and take turns one step at a time (``benchmarks/turns.py``: each stops itself after
a step until the other has done one), so the VM's drifting speed falls on both alike. ``--repeats`` such
run pairs; the table reports the median over runs of each run's median iteration, response tokens per
second, the highest peak RSS of the process, and the ratio of every run pair. Reward model: the same
pairs through ``benchmarks/rm_speed.py`` and ``benchmarks/peer/trl_reward.py``, taking turns likewise.

``--methods grpo,rloo,dpo``: our ``benchmarks/method_speed.py`` beside TRL 1.16's GRPOTrainer, RLOOTrainer and
DPOTrainer (``benchmarks/peer/trl_methods.py``), taking turns likewise: 8 completions a step (2 prompts × 4),
32 new tokens, one update per generation batch, an untrained reward head on the same base; DPO 8 pairs a step.

Then the lower bound of one of our iterations: FLOPs of every pass from the model's shapes and the
measured token counts, over this machine's measured matmul rate in our dtype; generation, which reads every
weight once per new token, over its measured memory bandwidth. Everything goes to ``<out>/compare.json``
and a Markdown table on stdout (pasted into benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import turns  # benchmarks/turns.py
from bench import ROOT, write_json

PEER = ROOT / "benchmarks" / "peer"

POSITIVE = ["It was a delight from start to finish, and I would gladly go back again next week.",
            "Wonderful staff, lovely food and a warm room: one of the best evenings we have had.",
            "A joy to read; the characters feel alive and the ending left me smiling for days."]
NEGATIVE = ["It was a letdown from start to finish, and I would not go back even if it were free.",
            "Rude staff, cold food and a noisy room: one of the worst evenings we have had.",
            "A chore to read; the characters feel flat and the ending left me annoyed for days."]


def write_inputs(folder: Path, n_pairs: int) -> tuple[Path, Path]:
    """The demo prompts (for both PPOs) and preference pairs built on them (for both reward models)."""
    from rlhf_engine.data.pairs import PreferencePair, write_pairs
    from rlhf_engine.lab.demo import demo_prompts

    prompts = demo_prompts()
    prompts_file = folder / "prompts.json"
    prompts_file.write_text(json.dumps(prompts) + "\n")
    pairs = [PreferencePair(prompts[i % len(prompts)], POSITIVE[i % 3], NEGATIVE[(i + 1) % 3]) for i in range(n_pairs)]
    pairs_file = folder / "pairs.jsonl"
    write_pairs(pairs, pairs_file)
    return prompts_file, pairs_file


def run_taking_turns(ours: tuple[list[str], Path, Path], theirs: tuple[list[str], Path, Path]) -> tuple[dict, dict]:
    """Run our benchmark process and TRL's side by side, one step each in turn (``benchmarks/turns.py``).

    Each (command, JSON out, log) starts alone and runs its loading and warm-up step; then they alternate:
    each stops itself after a timed step and is continued when the other has stopped. Read both JSONs.
    A process left when this ends early (an interrupt, an error) is killed, not left stopped.
    """
    env = dict(os.environ, **{turns.ENV: "1"})
    processes = []
    try:
        for command, _, log in (ours, theirs):
            print("$", " ".join(command[:2]), "... (taking turns)", flush=True)
            with open(log, "w") as f:
                processes.append(subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env))
            _wait_for_turn(processes[-1])
        while any(p.returncode is None for p in processes):
            for p in processes:
                if p.returncode is None:
                    os.kill(p.pid, signal.SIGCONT)
                    _wait_for_turn(p)
    finally:
        for p in processes:
            if p.returncode is None:
                p.kill()
                p.wait()
    results = []
    for p, (command, out, log) in zip(processes, (ours, theirs)):
        if p.returncode:
            raise SystemExit(f"{command[1]} failed (exit {p.returncode}); see {log}")
        results.append(json.loads(out.read_text()))
    return results[0], results[1]


def run_pairs(folder: Path, kind: str, repeats: int, ours_command, trl_command) -> tuple[list[dict], list[dict]]:
    """``repeats`` run pairs taking turns; each command is built from its JSON path (``<folder>/<side>-<kind>-<k>``)."""
    ours, theirs = [], []
    for k in range(repeats):
        sides = []
        for side, command in (("ours", ours_command), ("trl", trl_command)):
            out = folder / f"{side}-{kind}-{k}.json"
            sides.append((command(str(out)), out, folder / f"{side}-{kind}-{k}.log"))
        mine, trl = run_taking_turns(*sides)
        ours.append(mine)
        theirs.append(trl)
    return ours, theirs


def _wait_for_turn(process: subprocess.Popen) -> None:
    """Until the process stops itself at the end of a step, or exits (then its return code is set)."""
    _, status = os.waitpid(process.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        process.returncode = os.waitstatus_to_exitcode(status)


def matmul_flops_per_s(dtype: str = "float32") -> float:
    """This machine's matmul rate in ``dtype`` on all torch threads (best of 3 × 5 products of 2048² matrices)."""
    import torch

    a, b = (torch.randn(2048, 2048, dtype=getattr(torch, dtype)) for _ in range(2))
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * 2048 ** 3 / (time.perf_counter() - started))
    return best


def memory_bytes_per_s() -> float:
    """Read bandwidth: summing a 1 GiB fp32 tensor (best of 3)."""
    import torch

    x = torch.ones(256 * 1024 * 1024)
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        x.sum()
        best = max(best, x.numel() * 4 / (time.perf_counter() - started))
    return best


def lower_bound(model_dir: str, ours: dict, epochs: int, lora_r: int, batch: int, dtype: str = "float32") -> dict:
    """FLOPs of one of our PPO iterations (measured token counts) and the time they need at this machine's rates.

    Per token, a forward pass costs 2 FLOPs per weight of the transformer's linear layers (LoRA included)
    plus attention (4 · d · context per layer); the LM head (2 · d · V) only where logits are needed (the
    response). A backward pass through frozen weights computes input gradients only: about one forward again.
    One iteration: prefill + decoding (generation), the policy pass (kept and reused as the first epoch's),
    the reference pass, the reward-model pass, then ``epochs`` backward passes and ``epochs - 1`` forward
    passes. Decoding is bound by memory, not FLOPs: each new token reads every weight once.
    """
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    d, f, n_layers, vocab = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    kv = d * c.num_key_value_heads // c.num_attention_heads
    linear_shapes = [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d)]
    per_layer = sum(i * o + lora_r * (i + o) for i, o in linear_shapes)
    linear = n_layers * per_layer
    seq_tokens = ours["sequence_tokens_per_iteration"]
    resp_tokens = ours["response_tokens_per_iteration"]
    context = seq_tokens / batch  # mean sequence length
    attention = n_layers * 4 * d * context / 2  # causal: half the context on average
    forward = seq_tokens * (2 * linear + attention) + resp_tokens * 2 * d * vocab
    reward = seq_tokens * (2 * linear + attention)  # its head is d -> 1
    passes = {"forward (policy, reference, reward)": 2 * forward + reward,
              "update (epochs x backward, epochs - 1 x forward)": epochs * forward + (epochs - 1) * forward}
    flops = sum(passes.values())
    rate = matmul_flops_per_s(dtype)
    bandwidth = memory_bytes_per_s()
    weight_bytes = (2 if dtype == "bfloat16" else 4) * (linear + vocab * d)
    decode_s = (resp_tokens / batch) * weight_bytes / bandwidth
    prefill_s = (seq_tokens - resp_tokens) * 2 * linear / rate
    bound = flops / rate + decode_s + prefill_s
    return {"matmul_flops_per_s": rate, "memory_bytes_per_s": bandwidth, "flops": flops,
            "flops_by_phase": passes, "generation_bound_s": decode_s + prefill_s, "compute_bound_s": flops / rate,
            "iteration_bound_s": bound, "measured_s": ours["median_s"], "ratio": ours["median_s"] / bound}


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=5, help="measured PPO iterations per run (after 1 warm-up)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side, alternating")
    parser.add_argument("--rm-steps", type=int, default=10, help="measured reward-model steps (after 1 warm-up)")
    parser.add_argument("--skip-ppo", action="store_true")
    parser.add_argument("--skip-rm", action="store_true")
    parser.add_argument("--methods", default="", help="also (or, with --skip-ppo --skip-rm, only) these of "
                                                      "grpo,rloo,dpo against TRL 1.16's trainers")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="our PPO's weights")
    parser.add_argument("--ours-args", default="", help="more flags of our method_speed.py (--methods), one string, "
                        "e.g. '--answers-per-pass 2 --cpu-matmul onednn'")
    parser.add_argument("--trl-dtype", choices=["float32", "bfloat16"], default="float32",
                        help="TRL's PPO weights (bfloat16 also turns on its bf16 mode)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    from rlhf_engine.core.models import resolve_source

    model_dir = resolve_source("default")
    prompts_file, pairs_file = write_inputs(args.out, n_pairs=8 * (args.rm_steps + 2) * 2)
    common = ["--batch-size", "8", "--lora-r", "8", "--lora-alpha", "16"]
    ppo_args = [*common, "--iterations", str(args.iterations), "--warmup", "1", "--response-length", "32",
                "--epochs", "4"]
    results: dict = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                                 "torch_threads": torch.get_num_threads(), "torch": torch.__version__}}
    if not args.skip_ppo:
        ours, theirs = run_pairs(args.out, "ppo", args.repeats,
                                 lambda out: [sys.executable, "benchmarks/ppo_speed.py", *ppo_args, "--dtype",
                                              args.dtype, "--out", out],
                                 lambda out: [str(PEER / ".venv-ppo/bin/python"), str(PEER / "trl_ppo.py"),
                                              "--model", model_dir, "--prompts", str(prompts_file), *ppo_args,
                                              "--dtype", args.trl_dtype, "--temperature", "0.7", "--out", out])
        results["ppo"] = {"ours": ours, "trl": theirs, "dtype": {"ours": args.dtype, "trl": args.trl_dtype}}
        results["lower_bound"] = lower_bound(model_dir, ours[0] | {"median_s": _median(ours, "median_s")}, 4, 8, 8,
                                             args.dtype)
    if not args.skip_rm:
        rm_args = [*common, "--steps", str(args.rm_steps), "--warmup", "1", "--max-length", "256", "--lr", "1e-4"]
        ours, theirs = run_pairs(args.out, "rm", args.repeats,
                                 lambda out: [sys.executable, "benchmarks/rm_speed.py", "--pairs", str(pairs_file),
                                              *rm_args, "--out", out],
                                 lambda out: [str(PEER / ".venv-reward/bin/python"), str(PEER / "trl_reward.py"),
                                              "--model", model_dir, "--pairs", str(pairs_file), *rm_args,
                                              "--out", out])
        results["reward"] = {"ours": ours, "trl": theirs}
    for method in filter(None, args.methods.split(",")):
        data = (["--pairs", str(pairs_file)] if method == "dpo" else ["--prompts", str(prompts_file)])
        method_args = [*common, "--iterations", str(args.iterations), "--warmup", "1", "--method", method]
        ours, theirs = run_pairs(args.out, method, args.repeats,
                                 lambda out: [sys.executable, "benchmarks/method_speed.py", *method_args, *data,
                                              *shlex.split(args.ours_args), "--out", out],
                                 lambda out: [str(PEER / ".venv-reward/bin/python"), str(PEER / "trl_methods.py"),
                                              "--model", model_dir, *method_args, *data, "--out", out])
        results.setdefault("methods", {})[method] = {"ours": ours, "trl": theirs}
    write_json(args.out / "compare.json", results)
    print_tables(results)


def print_tables(results: dict) -> None:
    gb = 1024 ** 3
    if "ppo" in results:
        dtypes = results["ppo"]["dtype"]
        print(f"\n| PPO, one iteration | ours ({dtypes['ours']}) | TRL 1.12.0 ({dtypes['trl']}) | ours / TRL |"
              "\n|---|---|---|---|")
        ours, trl = results["ppo"]["ours"], results["ppo"]["trl"]
        rows = [("seconds per iteration (median)", _median(ours, "median_s"), _median(trl, "median_s"), "{:.1f} s"),
                ("response tokens / s", _median(ours, "tokens_per_s"), _median(trl, "tokens_per_s"), "{:.1f}"),
                ("peak RSS", max(r["peak_rss_bytes"] for r in ours) / gb, max(r["peak_rss_bytes"] for r in trl) / gb,
                 "{:.2f} GiB")]
        for name, a, b, fmt in rows:
            print(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {a / b:.2f} |")
        print("Per run pair, TRL / ours seconds per iteration: " + ", ".join(
            f"{t['median_s']:.1f} / {o['median_s']:.1f} = {t['median_s'] / o['median_s']:.2f}x"
            for o, t in zip(ours, trl)))
        print("\nOur phases (median s): " + ", ".join(
            f"{k} {statistics.median(r['phases_median_s'][k] for r in ours):.2f}" for k in ours[0]["phases_median_s"]))
        bound = results["lower_bound"]
        print(f"\nLower bound: {bound['flops'] / 1e12:.2f} TFLOP at {bound['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s "
              f"({dtypes['ours']}) "
              f"= {bound['compute_bound_s']:.1f} s, generation {bound['generation_bound_s']:.1f} s "
              f"(memory {bound['memory_bytes_per_s'] / 1e9:.1f} GB/s): {bound['iteration_bound_s']:.1f} s; "
              f"measured {bound['measured_s']:.1f} s = {bound['ratio']:.2f} x the bound")
    if "reward" in results:
        ours, trl = results["reward"]["ours"], results["reward"]["trl"]
        print("\n| reward model, one step of 8 pairs | ours | TRL 1.16.0 | ours / TRL |\n|---|---|---|---|")
        a, b = _median(ours, "pairs_per_s"), _median(trl, "pairs_per_s")
        print(f"| pairs / s (median of the runs) | {a:.2f} | {b:.2f} | {a / b:.2f} |")
        a, b = max(r["peak_rss_bytes"] for r in ours) / gb, max(r["peak_rss_bytes"] for r in trl) / gb
        print(f"| peak RSS | {a:.2f} GiB | {b:.2f} GiB | {a / b:.2f} |")
        print("Per run pair, ours / TRL pairs per second: " + ", ".join(
            f"{o['pairs_per_s']:.2f} / {t['pairs_per_s']:.2f} = {o['pairs_per_s'] / t['pairs_per_s']:.2f}x"
            for o, t in zip(ours, trl)))
    if "methods" in results:
        print("\n| one step, taking turns | ours, s / step (median) | TRL 1.16.0 | TRL / ours (speed-up) | peak RSS, "
              "ours / TRL |\n|---|---|---|---|---|")
        for method, runs in results["methods"].items():
            ours, trl = runs["ours"], runs["trl"]
            a, b = _median(ours, "median_s"), _median(trl, "median_s")
            rss_a, rss_b = max(r["peak_rss_bytes"] for r in ours) / gb, max(r["peak_rss_bytes"] for r in trl) / gb
            print(f"| {method.upper()} | {a:.2f} s | {b:.2f} s | {b / a:.2f}× | {rss_a:.2f} / {rss_b:.2f} GiB = "
                  f"{rss_a / rss_b:.2f} |")

if __name__ == "__main__":
    main()
