"""PNGs of a sweep's frontier and gold-vs-proxy plots (the dashboard's figures), and a summary table.

    .venv/bin/python benchmarks/sweep_figures.py --sweep workspace/runs/kl-sweep --out docs [--prefix sweep]

Draws the figures with ``rlhf_engine.lab.figures`` (as the dashboard and the report do) in Debian's Chromium
(no kaleido needed), saves OUT/PREFIX-frontier.png and OUT/PREFIX-gold-vs-proxy.png, and prints a Markdown
table per run: wall time, steps, and at its last held-out probe the KL, RM score and gold score (with the
paired gold gain over the reference), and where its probes' gold score peaked.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime
from pathlib import Path

from bench import TESTS, on_path

on_path(TESTS)

from browser import chromium_page  # noqa: E402

from rlhf_engine.lab import figures, styles  # noqa: E402
from rlhf_engine.lab.sweep import Sweep, probe_summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--prefix", default="sweep", help="file names: PREFIX-frontier.png, PREFIX-gold-vs-proxy.png")
    args = parser.parse_args()
    sweep = Sweep(args.sweep)
    looks = styles.sweep_styles(sweep)  # colour = method, marker = β, as the dashboard draws them
    probes = {m.label: probe_summary(m.run.probes()) for m in sweep.members()}
    bon = sweep.best_of_n()
    drawn = {f"{args.prefix}-frontier.png": figures.frontier_figure(sweep.frontier(), bon, looks),
             f"{args.prefix}-gold-vs-proxy.png": figures.gold_proxy_figure(probes, bon, looks)}
    args.out.mkdir(parents=True, exist_ok=True)
    with chromium_page(1100, 560) as page:
        for name, figure in drawn.items():
            figure.update_layout(width=1060, height=520)
            page.set_content(figure.to_html(full_html=True, include_plotlyjs=True))
            page.locator(".js-plotly-plot").wait_for()
            page.wait_for_timeout(500)
            page.locator(".js-plotly-plot").screenshot(path=str(args.out / name))
            print(f"wrote {args.out / name}")
    print(summary(sweep))
    return 0


def summary(sweep: Sweep) -> str:
    lines = ["| run | wall time | steps | β | KL (nats) | √KL | RM score | gold score | gold gain over the reference | "
             "gold peak at step, √KL |", "|---|---|---|---|---|---|---|---|---|---|"]
    for run in sweep.runs():
        events = run.events().splitlines()
        wall = f"{_seconds(events[0][:25], events[-1][:25]):.0f} s" if len(events) > 1 else "—"
        if run.config()["kind"] == "best_of_n":
            rows_bon = sweep.best_of_n()
            top = rows_bon[-1] if rows_bon else {}
            lines.append(f"| {run.id} (no training) | {wall} | — | — | {top.get('kl', 0):.2f} (n={top.get('n')}) | "
                         f"{math.sqrt(top.get('kl', 0)):.2f} | {top.get('score', 0):.3f} | {top.get('gold', 0):.3f} "
                         "| — | — |")
            continue
        probes = [s for s in probe_summary(run.probes()) if s["step"] > 0]
        if not probes:
            lines.append(f"| {run.id} | {wall} | no held-out probe yet | | | | | | | |")
            continue
        last = probes[-1]
        gain = f"{last['gold_gain']:+.3f} ± {last['gold_gain_se']:.3f}" if "gold_gain" in last else "—"
        peak = ""
        if all("gold" in s for s in probes):
            best = max(probes, key=lambda s: s["gold"])
            peak = f"{best['gold']:.3f} at step {best['step']}, √KL {math.sqrt(max(best['kl'], 0)):.2f}"
        beta = run.config()["config"].get("kl_coef")
        lines.append(f"| {run.id} | {wall} | {last['step']} | {beta:g} | {last['kl']:.2f} ± {last['kl_se']:.2f} | "
                     f"{math.sqrt(max(last['kl'], 0)):.2f} | {last.get('score', float('nan')):.3f} | "
                     f"{last.get('gold', float('nan')):.3f} | {gain} | {peak} |")
    return "\n".join(lines)


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


if __name__ == "__main__":
    sys.exit(main())
