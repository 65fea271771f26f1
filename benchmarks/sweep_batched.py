"""A 4-β sweep side by side in one process against the same 4 runs one after another (run by hand).

    .venv/bin/python benchmarks/sweep_batched.py --reward workspace/runs/workshop-rm --out /tmp/sweep-bench

Both are the CLI's `sweep` with the workshop's CPU settings and no best-of-n: batched (the default: one base
model, the runs' rollouts and probe answers decoded as one batch, each run's update its own) and
``--one-at-a-time`` (each run loads its model and trains alone, in turn, in the same process). They take
turns, batched first, ``--repeats`` times. Writes OUT/results.json and merges ``sweep_batched_ratio``
(batched wall time / one-at-a-time wall time, median over the repeats) into
benchmarks/results/workshop-path.json. It also checks that both ways logged the same metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import ROOT, machine_line, write_json

from rlhf_engine.lab import workshop  # noqa: E402
from rlhf_engine.lab.sweep import Sweep

BETAS = "0,0.02,0.05,0.2"
RESULTS = ROOT / "benchmarks" / "results" / "workshop-path.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reward", type=Path, required=True, help="a trained reward-model run folder")
    parser.add_argument("--out", type=Path, required=True, help="new folder for the sweeps and results")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--steps", type=int, help="PPO steps per run (default: the workshop's)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    command = next(c for c in workshop.cli_commands(str(args.out), "cpu") if " sweep " in c)
    flags = shlex.split(command)[3:]
    flags[flags.index("--kl-coefs") + 1] = BETAS
    flags[flags.index("--best-of-n") + 1] = "0"
    flags[flags.index("--reward") + 1] = str(args.reward)
    if args.steps:
        flags[flags.index("--steps") + 1] = str(args.steps)
    seconds: dict[str, list[float]] = {"batched": [], "one_at_a_time": []}
    for repeat in range(args.repeats):
        for way in seconds:
            out = args.out / f"{way}-{repeat}"
            cmd = [sys.executable, "-m", "rlhf_engine", *flags]
            cmd[cmd.index("--out") + 1] = str(out)
            if way == "one_at_a_time":
                cmd.append("--one-at-a-time")
            started = time.monotonic()
            with open(args.out / f"{way}-{repeat}.log", "w") as log:
                subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "RLHF_WORKSPACE": str(args.out / "workspace")})
            seconds[way].append(time.monotonic() - started)
            print(f"{way} #{repeat}: {seconds[way][-1]:.1f} s", flush=True)
    ratio = statistics.median(b / o for b, o in zip(seconds["batched"], seconds["one_at_a_time"]))
    same = _same_metrics(args.out / "batched-0", args.out / "one_at_a_time-0")
    results = {"machine": machine_line(),
               "command": " ".join(shlex.quote(f) for f in flags), "betas": BETAS, "seconds": seconds,
               "sweep_batched_ratio": round(ratio, 3), "largest_metric_difference": same}
    write_json(args.out / "results.json", results)
    kept = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    write_json(RESULTS, {**kept, "sweep_batched_ratio": round(ratio, 3), "sweep_batched_seconds": seconds})
    print(json.dumps(results, indent=2))
    return 0


def _same_metrics(batched: Path, alone: Path) -> float:
    """The largest relative difference between the two sweeps' logged (untimed) metrics, over every step."""
    worst = 0.0
    for a, b in zip(Sweep(batched).members(), Sweep(alone).members()):
        for row_a, row_b in zip(a.run.metrics(), b.run.metrics()):
            for key, value in row_a.items():
                if key.startswith(("time/", "tokens_per_s")) or not isinstance(value, float):
                    continue
                worst = max(worst, abs(value - row_b[key]) / max(abs(row_b[key]), 1e-3))
    return worst


if __name__ == "__main__":
    sys.exit(main())
