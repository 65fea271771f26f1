"""A workshop room's policy runs side by side in one group process against the same runs as separate processes
(run by hand).

    .venv/bin/python benchmarks/room_side_by_side.py --out /tmp/room-bench

N participants' PPO runs (the workshop's preset, ``lab.workshop.ppo_config``, at ``--steps`` steps; seed i and the
sweep's β values in turn, one reward model) are trained twice: as one group (``runs.group_job``: one process, one
copy of the base model, every run's rollouts and probe answers decoded as one batch) and as N separate
``run-job`` processes, at most ``--max-processes`` at once (8 processes of ~3 GiB do not fit a 23 GiB machine).
Each job process is a child of this script: its peak RSS is its ``ru_maxrss`` (``os.wait4``), its throughput the
participant-steps it trained per minute of wall time (model loading included). The separate processes share
the cores (``--threads`` each, default cores / processes at once); the group gets them all.

Writes benchmarks/results/room-side-by-side.json (``--results`` elsewhere) with ``side_by_side_rss_ratio`` (the
group's peak RSS over what N separate processes at once would hold: the sum of their peaks) and
``side_by_side_throughput_ratio`` (the group's participant-steps per minute over the separate processes'), and
prints a markdown table. It also checks that both ways logged the same metrics (``largest_metric_difference``).
Without ``--reward`` it first trains a reward model with the workshop's settings (``--rm-steps`` steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bench import ROOT, machine, write_json

from rlhf_engine.config import ModelConfig  # noqa: E402
from rlhf_engine.lab import workshop  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "room-side-by-side.json"
GIB = 2**30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder for the runs and logs")
    parser.add_argument("--reward", type=Path, help="a trained reward-model run folder (default: train one)")
    parser.add_argument("--runs", type=int, default=8, help="participants' runs")
    parser.add_argument("--steps", type=int, default=3, help="PPO steps per run")
    parser.add_argument("--max-processes", type=int, default=6, help="separate processes at once")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of each separate process "
                        "(0: cores / processes at once)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="the workshop preset's device")
    parser.add_argument("--model", default="default", help="model source (default: the bundled model)")
    parser.add_argument("--quant", help="quantization (default: the preset's: none on CPU, 4bit on CUDA)")
    parser.add_argument("--rm-steps", type=int, default=20, help="steps of the reward model trained without --reward")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON result goes")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    sizes = workshop.preset(args.device)
    model = ModelConfig(source=args.model, quant=args.quant or ("none" if args.device == "cpu" else "4bit"))
    reward = args.reward or _train_reward_model(args, model, sizes)
    cores = len(os.sched_getaffinity(0))
    at_once = min(args.max_processes, args.runs)
    threads = args.threads or max(1, cores // at_once)

    group_runs = _prepare_runs(args.out / "group-members", args, model, sizes, reward)
    from rlhf_engine.runs.group_job import prepare_group

    # grace 0: the group ends as its last run does (in a room it would wait GRACE_S for a newcomer, idle)
    group = prepare_group(args.out / "group", group_runs, owners=[f"participant-{i}" for i in range(args.runs)],
                          grace_s=0.0)
    print(f"group: {args.runs} runs in one process ({cores} threads)", flush=True)
    together = _run_jobs([group.path], 1, cores, args.out)
    separate_runs = _prepare_runs(args.out / "separate", args, model, sizes, reward)
    print(f"separate: {args.runs} processes, {at_once} at once, {threads} threads each", flush=True)
    apart = _run_jobs(separate_runs, at_once, threads, args.out)

    steps = args.runs * args.steps
    together_rate = steps / (together["wall_s"] / 60)
    apart_rate = steps / (apart["wall_s"] / 60)
    sum_peaks = sum(apart["peak_rss_bytes"])
    result = {
        "machine": machine(), "device": args.device, "model": model.source, "quant": model.quant,
        "runs": args.runs, "steps": args.steps, "max_processes": at_once, "threads_each_separate": threads,
        "threads_group": cores, "reward": str(reward),
        "side_by_side": {"wall_s": round(together["wall_s"], 1),
                         "peak_rss_gib": round(together["peak_rss_bytes"][0] / GIB, 3),
                         "participant_steps_per_min": round(together_rate, 3), "exit": together["exit"]},
        "separate": {"wall_s": round(apart["wall_s"], 1),
                     "peak_rss_gib_each": [round(b / GIB, 3) for b in apart["peak_rss_bytes"]],
                     "peak_rss_gib_sum": round(sum_peaks / GIB, 3),
                     "participant_steps_per_min": round(apart_rate, 3), "exit": apart["exit"]},
        "side_by_side_rss_ratio": round(together["peak_rss_bytes"][0] / sum_peaks, 3),
        "side_by_side_throughput_ratio": round(together_rate / apart_rate, 3),
        "largest_metric_difference": _largest_difference(group_runs, separate_runs),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.results, result)
    print(_table(result))
    print(f"written to {args.results}")
    return 0 if not any(together["exit"] + apart["exit"]) else 1


def _train_reward_model(args, model: ModelConfig, sizes) -> Path:
    """The workshop's reward-model command (its pairs and settings) at ``--rm-steps`` steps, on ``model``."""
    command = next(c for c in workshop.cli_commands(str(args.out), sizes.device) if " train-rm " in c)
    flags = shlex.split(command)[3:]
    flags[flags.index("--steps") + 1] = str(args.rm_steps)
    flags[flags.index("--quant") + 1] = model.quant
    flags += ["--model", model.source, "--set", f"eval_every={max(1, args.rm_steps)}",
              "--set", f"checkpoint_every={max(1, args.rm_steps)}"]
    out = Path(flags[flags.index("--out") + 1])
    print(f"training a reward model ({args.rm_steps} steps) in {out}", flush=True)
    with open(args.out / "reward-model.log", "w") as log:
        subprocess.run([sys.executable, "-m", "rlhf_engine", *flags], check=True, stdout=log,
                       stderr=subprocess.STDOUT, cwd=ROOT)
    return out


def _prepare_runs(folder: Path, args, model: ModelConfig, sizes, reward: Path) -> list[Path]:
    """``args.runs`` queued PPO runs of the workshop's preset: participant i with seed i and the sweep's β values
    in turn."""
    from rlhf_engine.runs.policy_job import prepare_policy_job

    base = dataclasses.replace(workshop.ppo_config(model, sizes), steps=args.steps,
                               checkpoint_every=max(1, args.steps))
    runs = []
    for i in range(args.runs):
        config = dataclasses.replace(base, seed=i, kl_coef=sizes.betas[i % len(sizes.betas)])
        runs.append(prepare_policy_job(folder / f"participant-{i}", config, reward).run.path)
    return runs


def _run_jobs(folders: list[Path], at_once: int, threads: int, out: Path) -> dict:
    """``python -m rlhf_engine run-job`` of each folder, at most ``at_once`` at a time with ``threads`` torch threads
    each; their wall time (first start to last end), each one's peak RSS and exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "RLHF_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    waiting, running = list(folders), {}
    peaks, codes = {}, {}
    started = time.monotonic()
    while waiting or running:
        while waiting and len(running) < at_once:
            folder = waiting.pop(0)
            log = open(out / f"{folder.parent.name}-{folder.name}.log", "w")
            process = subprocess.Popen([sys.executable, "-m", "rlhf_engine", "run-job", str(folder)], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
            running[process.pid] = (folder, process, log)
        pid, status, usage = os.wait4(-1, 0)  # a child's own peak RSS (ru_maxrss, KiB on Linux)
        if pid not in running:
            continue
        folder, process, log = running.pop(pid)
        process.returncode = os.waitstatus_to_exitcode(status)
        log.close()
        peaks[folder], codes[folder] = usage.ru_maxrss * 1024, process.returncode
        print(f"  {folder.name}: exit {process.returncode}, peak RSS {peaks[folder] / GIB:.2f} GiB, "
              f"{time.monotonic() - started:.0f} s", flush=True)
    return {"wall_s": time.monotonic() - started, "peak_rss_bytes": [peaks[f] for f in folders],
            "exit": [codes[f] for f in folders]}


def _largest_difference(group_runs: list[Path], separate_runs: list[Path]) -> float:
    """The largest relative difference between a group member's logged (untimed) metrics and its separate twin's."""
    from rlhf_engine.runs.runfolder import RunFolder

    worst = 0.0
    for a, b in zip(group_runs, separate_runs):
        for row_a, row_b in zip(RunFolder(a).metrics(), RunFolder(b).metrics(), strict=True):
            for key, value in row_a.items():
                if key.startswith(("time/", "tokens_per_s")) or not isinstance(value, float):
                    continue
                worst = max(worst, abs(value - row_b[key]) / max(abs(row_b[key]), 1e-3))
    return worst


def _table(result: dict) -> str:
    together, apart, runs = result["side_by_side"], result["separate"], result["runs"]
    return "\n".join([
        f"| {runs} runs × {result['steps']} steps ({result['model']}, {result['quant']}) | wall (s) | peak RSS (GiB) "
        "| participant-steps / min |",
        "|---|---|---|---|",
        f"| one group process | {together['wall_s']} | {together['peak_rss_gib']} | "
        f"{together['participant_steps_per_min']} |",
        f"| separate processes, {result['max_processes']} at once | {apart['wall_s']} | "
        f"{max(apart['peak_rss_gib_each'])} each, {apart['peak_rss_gib_sum']} for {runs} at once | "
        f"{apart['participant_steps_per_min']} |",
        f"| side by side / separate | | {result['side_by_side_rss_ratio']} | "
        f"{result['side_by_side_throughput_ratio']} |",
    ])


if __name__ == "__main__":
    sys.exit(main())
