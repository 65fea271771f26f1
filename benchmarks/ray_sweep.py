"""A 4-run sweep on a local Ray against the same 4 runs in the process queue, on this machine (run by hand).

    .venv/bin/python benchmarks/ray_sweep.py --reward /path/to/workshop-rm --out /tmp/ray-bench [--steps 4]

Both train the workshop's CPU sweep settings (bundled model, 4 βs, no best-of-n), each run alone in a process of its
own with one torch thread, two at a time:
- **queue**: the runs prepared as the command line prepares them, then the dashboard's process queue
  (``JobQueue(slots=2)`` of ``ProcessJob``s, one thread each, as a room's slots give them);
- **ray**: ``python -m rlhf_engine sweep --ray auto`` (a local Ray of this machine's 2 CPUs; each run a task asking
  for 1 CPU).
Each way runs in a process of its own, whose whole process tree (the driver, Ray's servers and workers, the job
processes) this script samples every 0.25 s: wall time, the peak of the tree's summed RSS, and the largest single
process's peak. They take turns, queue first, ``--repeats`` times, and the script checks that both ways logged the
same metrics. Writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil
from bench import ROOT, machine, machine_line, write_json

from rlhf_engine.lab import workshop

BETAS = "0,0.02,0.05,0.2"
TOKEN = "ray-sweep-benchmark-token-000000"  # the local cluster's token (Ray's token auth is on by default)
SAMPLE_S = 0.25
TIMING = ("time/", "tokens_per_s")


def sweep_flags(reward: Path, steps: int | None) -> list[str]:
    """The workshop's CPU sweep as `sweep` flags, with this benchmark's βs and no best-of-n."""
    command = next(c for c in workshop.cli_commands("workspace", "cpu") if " sweep " in c)
    flags = shlex.split(command)[4:]  # after "python -m rlhf_engine sweep"
    flags[flags.index("--kl-coefs") + 1] = BETAS
    flags[flags.index("--best-of-n") + 1] = "0"
    flags[flags.index("--reward") + 1] = str(reward)
    if steps:
        flags[flags.index("--steps") + 1] = str(steps)
    return flags


def queue_way(flags: list[str]) -> None:
    """In its own process: the sweep's runs prepared as `sweep` prepares them, then run by the process queue."""
    from rlhf_engine.cli import train
    from rlhf_engine.cli.parser import build_parser
    from rlhf_engine.config import PPOConfig
    from rlhf_engine.lab.sweep import parse_values
    from rlhf_engine.lab.sweep_job import prepare_sweep
    from rlhf_engine.runs.job import THREADS_ENV, ProcessJob
    from rlhf_engine.runs.queue import JobQueue

    args = build_parser().parse_args(["sweep", *flags])
    base = train.policy_config(args, PPOConfig)
    one = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", THREADS_ENV: "1"}
    queue = JobQueue(slots=2, slot_env=[one, one])
    for job in prepare_sweep(args.out, base, args.reward, values=parse_values("kl_coef", args.kl_coefs),
                             batched=False, prompts_path=args.prompts):
        queue.submit(ProcessJob(job.run))
    queue.wait_idle()


def measured(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; its wall time and the peaks of its process tree's RSS (summed, and the largest process)."""
    env = {**os.environ, "RAY_AUTH_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    top = psutil.Process(proc.pid)
    peak_sum = peak_one = 0
    processes = 0
    while proc.poll() is None:
        try:
            tree = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        rss = []
        for p in tree:
            try:
                rss.append(p.memory_info().rss)
            except psutil.Error:
                pass
        peak_sum, peak_one = max(peak_sum, sum(rss)), max([peak_one, *rss])
        processes = max(processes, len(rss))
        time.sleep(SAMPLE_S)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}); see {log}")
    return {"wall_s": round(wall, 1), "peak_rss_sum_gib": round(peak_sum / 2 ** 30, 2),
            "peak_rss_largest_gib": round(peak_one / 2 ** 30, 2), "processes_at_most": processes}


def same_metrics(a: Path, b: Path) -> float:
    """The largest relative difference between the two sweeps' logged metrics (timings left out)."""
    from rlhf_engine.lab.sweep import Sweep

    worst = 0.0
    for run_a, run_b in zip(Sweep(a).runs(), Sweep(b).runs()):
        for row_a, row_b in zip(run_a.metrics(), run_b.metrics(), strict=True):
            for key, value in row_a.items():
                if isinstance(value, float) and not key.startswith(TIMING) and value == value:
                    worst = max(worst, abs(row_b[key] - value) / max(abs(value), 1e-3))
    return worst


def main() -> int:
    if sys.argv[1:2] == ["--queue-way"]:  # the queue's own process, given the sweep's flags as JSON
        queue_way(json.loads(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reward", type=Path, required=True, help="a trained reward-model run folder")
    parser.add_argument("--out", type=Path, required=True, help="new folder for the sweeps and results")
    parser.add_argument("--steps", type=int, help="PPO steps per run (default: the workshop's)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    flags = sweep_flags(args.reward.resolve(), args.steps)
    results: dict[str, list[dict]] = {"queue": [], "ray": []}
    for repeat in range(args.repeats):
        for way in results:
            out = args.out / f"{way}-{repeat}" / "sweep"
            out.parent.mkdir()
            these = [*flags]
            these[these.index("--out") + 1] = str(out)
            if way == "queue":
                cmd = [sys.executable, __file__, "--queue-way", json.dumps(these)]
            else:
                cmd = [sys.executable, "-m", "rlhf_engine", "sweep", *these, "--ray", "auto"]
            results[way].append(measured(cmd, args.out / f"{way}-{repeat}.log"))
            print(way, repeat, results[way][-1], flush=True)
    difference = same_metrics(args.out / "queue-0" / "sweep", args.out / "ray-0" / "sweep")
    summary = {"machine": machine(), "machine_line": machine_line(), "betas": BETAS, "flags": shlex.join(flags),
               "results": results, "largest_relative_metric_difference": difference,
               "ray_over_queue_wall": round(results["ray"][0]["wall_s"] / results["queue"][0]["wall_s"], 3)}
    write_json(args.out / "results.json", summary)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
