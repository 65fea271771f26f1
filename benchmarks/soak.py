"""Soak: PPO on the bundled model for a long time, sampling the process's memory, to show it stays flat.

Run by hand (not in CI), alone on the machine:

    .venv/bin/python benchmarks/soak.py --minutes 30 --out /tmp/soak

It trains a small reward model (``train-rm``, 20 steps on 64 simple pairs), then starts
``python -m rlhf_engine ppo`` on it with the engine's defaults (the CLI a user would run: run folder,
metrics, samples, a checkpoint every 10 steps) and reads the resident memory of that process and its
children (``psutil``) every ``--every`` seconds. After ``--minutes`` it stops the run as the dashboard does
(SIGINT: the step finishes and a checkpoint is written). Memory moves within a step (activations come and
go, freed heap goes back between phases), so single samples are noisy: the figures are the peak RSS of
each ``--window`` seconds once the first PPO step is done, the first and last of those peaks, and the
least-squares slope of the peaks, in MiB per hour. Everything, raw samples included, goes to
``<out>/soak.json``.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from bench import ROOT, write_json
from compare_trl import write_inputs  # the same simple pairs as the TRL comparison

MIB = 1024 ** 2


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of the process and all its children now (0 once it has gone)."""
    total = 0
    try:
        for p in [process, *process.children(recursive=True)]:
            total += p.memory_info().rss
    except psutil.NoSuchProcess:
        pass
    return total


def slope_mib_per_hour(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    return cov / var / MIB * 3600 if var else 0.0


def steps_done(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    return sum(1 for _ in metrics.open()) if metrics.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and soak.json (must not exist)")
    parser.add_argument("--minutes", type=float, default=30.0, help="how long PPO runs")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between memory samples")
    parser.add_argument("--window", type=float, default=300.0, help="seconds per peak-RSS window")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="passed on to ppo")
    args = parser.parse_args()
    args.out.mkdir(parents=True)
    cli = [sys.executable, "-m", "rlhf_engine"]
    _, pairs = write_inputs(args.out, n_pairs=64)
    subprocess.run([*cli, "train-rm", "--data", str(pairs), "--out", str(args.out / "rm"), "--steps", "20"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    run = args.out / "ppo"
    command = [*cli, "ppo", "--reward", str(args.out / "rm"), "--out", str(run), "--steps", "100000",
               *(f"--set={s}" for s in args.set)]
    with open(args.out / "ppo.log", "w") as log:
        # SIGINT back to its default in the child: started from a background shell (nohup … &) it arrives
        # ignored, and the CLI's ppo would then never see the stop.
        child = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    process = psutil.Process(child.pid)
    started = time.monotonic()
    samples: list[dict] = []
    while child.poll() is None and time.monotonic() - started < args.minutes * 60:
        samples.append({"s": round(time.monotonic() - started, 1), "rss": tree_rss(process), "step": steps_done(run)})
        time.sleep(args.every)
    if child.poll() is not None:
        raise SystemExit(f"ppo ended early (exit {child.returncode}); see {args.out / 'ppo.log'}")
    child.send_signal(signal.SIGINT)
    code = child.wait(timeout=600)

    stepped = [x for x in samples if x["step"] >= 1]
    if not stepped:
        raise SystemExit("no PPO step finished; run longer")
    windows: dict[int, list[dict]] = {}
    for x in stepped:
        windows.setdefault(int((x["s"] - stepped[0]["s"]) // args.window), []).append(x)
    peaks = [(sum(x["s"] for x in w) / len(w), max(x["rss"] for x in w)) for _, w in sorted(windows.items())]
    result = {
        "minutes": round(samples[-1]["s"] / 60, 1),
        "ppo_steps": steps_done(run),
        "window_s": args.window,
        "window_peaks_mib": [round(r / MIB) for _, r in peaks],
        "first_window_peak_mib": round(peaks[0][1] / MIB),
        "last_window_peak_mib": round(peaks[-1][1] / MIB),
        "peak_mib": round(max(r for _, r in peaks) / MIB),
        "slope_mib_per_hour": round(slope_mib_per_hour(peaks), 1),
        "stopped_exit_code": code,
        "final_state": json.loads((run / "status.json").read_text()).get("state"),
        "command": " ".join(command[1:]),
        "samples": samples,
    }
    write_json(args.out / "soak.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
