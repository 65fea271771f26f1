"""The whole RLHF loop on the bundled model, measured: demo pairs -> QLoRA reward model -> PPO at two betas.

Run by hand (not in CI), on the machine whose figures you want:

    .venv/bin/python benchmarks/rlhf_loop.py --out benchmarks/out
    .venv/bin/python benchmarks/rlhf_loop.py --out benchmarks/out-mean --rm-pooling mean   # the 80 % reward model

Each phase runs as the CLI a user would type (``python -m rlhf_engine ...``) in a child process whose
resident memory is sampled every 0.2 s, so wall time and peak RSS are per phase. Then the gold
annotator (VADER) scores two sampled responses per held-out demo prompt from the reference model and
from each trained policy. The figures go to ``<out>/results.json`` and a Markdown table on stdout,
which is pasted into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
from bench import ROOT, cpu_model, write_result


def run_phase(name: str, args: list[str], results: dict) -> None:
    """Run ``python -m rlhf_engine <args>``; record wall seconds and peak RSS (MiB) of the process tree."""
    print(f"== {name}: python -m rlhf_engine {' '.join(args)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_engine", *args], cwd=ROOT)
    peak = 0
    handle = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, handle.memory_info().rss + sum(c.memory_info().rss for c in handle.children(True)))
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed with exit code {proc.returncode}")
    results[name] = {"wall_s": round(wall, 1), "peak_rss_mib": round(peak / 2**20)}
    print(f"   {name}: {wall:.1f} s, peak RSS {peak / 2**20:.0f} MiB", flush=True)


def gold_eval(out: Path, policies: dict[str, Path | None], samples_per_prompt: int, seed: int) -> dict:
    """Per policy, on sampled responses to the held-out demo prompts (T 0.7, 32 tokens): the mean gold
    (VADER) score, and the KL to the reference in nats per response (sum over response tokens of
    log pi - log pi_ref, whose mean over the policy's own samples estimates KL(pi || pi_ref))."""
    import torch
    from peft import PeftModel

    from rlhf_engine.config import ModelConfig
    from rlhf_engine.core.generation import decode_responses, response_logits, sample_responses, token_logprobs
    from rlhf_engine.core.models import load_model_and_tokenizer, set_seed
    from rlhf_engine.lab.demo import demo_prompt_split, gold_score

    held_out = demo_prompt_split()[1]
    prompts = [p for p in held_out for _ in range(samples_per_prompt)]
    temperature, length = 0.7, 32
    scores = {}
    for name, adapter in policies.items():
        model, tokenizer = load_model_and_tokenizer(ModelConfig(quant="none"))
        if adapter is not None:
            model = PeftModel.from_pretrained(model, str(adapter))
        set_seed(seed)
        texts: list[str] = []
        kls: list[float] = []
        for i in range(0, len(prompts), 16):
            rollout = sample_responses(model, tokenizer, prompts[i:i + 16], length, temperature)
            texts.extend(decode_responses(tokenizer, rollout))
            if adapter is not None:
                with torch.no_grad():
                    ids, mask, tokens = rollout.input_ids, rollout.attention_mask, rollout.response_ids
                    logp = token_logprobs(response_logits(model, ids, mask, length, temperature), tokens)
                    with model.disable_adapter():
                        ref = token_logprobs(response_logits(model, ids, mask, length, temperature), tokens)
                kls.extend(((logp - ref) * rollout.response_mask).sum(1).tolist())
        gold = [gold_score(t) for t in texts]
        std = statistics.stdev(gold)
        per_prompt = [statistics.fmean(gold[i:i + samples_per_prompt]) for i in range(0, len(gold), samples_per_prompt)]
        scores[name] = {"gold_mean": sum(gold) / len(gold), "gold_std": std, "gold_sem": std / len(gold) ** 0.5,
                        "n": len(gold), "per_prompt": per_prompt,
                        "kl_to_reference": sum(kls) / len(kls) if kls else 0.0,
                        "examples": [{"prompt": p, "response": t}
                                     for p, t in zip(prompts[:6:samples_per_prompt], texts[:6:samples_per_prompt])]}
        if "reference" in scores and name != "reference":
            scores[name] |= paired_difference(per_prompt, scores["reference"]["per_prompt"])
        print(f"   {name}: gold {scores[name]['gold_mean']:.3f}, KL to reference "
              f"{scores[name]['kl_to_reference']:.2f} nats, over {len(gold)} responses"
              + (f"; minus reference, paired by prompt: {scores[name]['gain_over_reference']:+.3f} "
                 f"± {scores[name]['gain_sem']:.3f}" if "gain_sem" in scores[name] else ""), flush=True)
        del model
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return scores


def paired_difference(policy: list[float], reference: list[float]) -> dict:
    """Mean gold gain over the reference, prompt by prompt, with its standard error (prompts vary far more
    than the policies do, so pairing by prompt gives a much tighter error than two independent means)."""
    diffs = [p - r for p, r in zip(policy, reference)]
    return {"gain_over_reference": statistics.fmean(diffs),
            "gain_sem": statistics.stdev(diffs) / len(diffs) ** 0.5, "prompts": len(diffs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--completions", type=int, default=4, help="completions per prompt for the demo pairs")
    parser.add_argument("--rm-steps", type=int, default=120)
    parser.add_argument("--rm-quant", default="4bit")
    parser.add_argument("--rm-pooling", default="last", choices=("last", "mean"))
    parser.add_argument("--ppo-steps", type=int, default=30)
    parser.add_argument("--ppo-quant", default="none", help="none is fastest on CPU; 4bit on CUDA")
    parser.add_argument("--betas", default="0.2,0.01")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": {
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "cpu_model": cpu_model(), "python": platform.python_version(),
    }, "settings": vars(args) | {"out": str(out)}}
    import torch

    results["machine"]["torch"] = torch.__version__
    results["machine"]["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None

    pairs = out / "pairs.jsonl"
    if not pairs.exists():
        run_phase("make-demo-pairs", ["make-demo-pairs", "--n", str(args.pairs), "--out", str(pairs),
                                      "--completions", str(args.completions), "--seed", str(args.seed)], results)
    rm_dir = out / "rm"
    if not (rm_dir / "reward_model.json").exists():
        run_phase("train-rm", ["train-rm", "--data", str(pairs), "--out", str(rm_dir), "--steps", str(args.rm_steps),
                               "--quant", args.rm_quant, "--pooling", args.rm_pooling,
                               "--seed", str(args.seed)], results)
    results["reward_model"] = {k: v for k, v in json.loads((rm_dir / "eval.json").read_text()).items()
                               if k != "margins"}

    policies: dict[str, Path | None] = {"reference": None}
    for beta in args.betas.split(","):
        run_dir = out / f"ppo-beta{beta}"
        if not (run_dir / "policy" / "adapter_config.json").exists():
            run_phase(f"ppo beta={beta}", ["ppo", "--reward", str(rm_dir), "--out", str(run_dir), "--steps",
                                           str(args.ppo_steps), "--kl-coef", beta, "--quant", args.ppo_quant,
                                           "--seed", str(args.seed)], results)
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        last5 = metrics[-5:]
        results[f"ppo beta={beta}"] = results.get(f"ppo beta={beta}", {}) | {
            "final_kl_mean_last5": sum(m["objective/kl"] for m in last5) / len(last5),
            "scores_first5": sum(m["objective/scores"] for m in metrics[:5]) / 5,
            "scores_last5": sum(m["objective/scores"] for m in last5) / len(last5),
            "median_step_s": sorted(m["time/step_s"] for m in metrics)[len(metrics) // 2],
        }
        policies[f"beta={beta}"] = run_dir / "policy"
    results["gold"] = gold_eval(out, policies, samples_per_prompt=2, seed=args.seed)
    write_result(results, out / "results.json")


if __name__ == "__main__":
    main()
