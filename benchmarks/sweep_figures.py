"""PNGs of a sweep's frontier and gold-vs-proxy plots (the dashboard's figures), and a summary table.

    .venv/bin/python benchmarks/sweep_figures.py --sweep workspace/runs/kl-sweep --out docs [--prefix sweep] [--smooth 3]

Draws the figures with ``rlhf_engine.figures`` (as the dashboard and the report do) in Debian's Chromium
(no kaleido needed), saves OUT/PREFIX-frontier.png and OUT/PREFIX-gold-vs-proxy.png, and prints a Markdown
table per run: wall time, steps, final β, KL, RM score and gold score (means of the last 3 steps), and where
the gold score's SMOOTH-step running mean peaked.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from browser import chromium_page  # noqa: E402

from rlhf_engine import figures  # noqa: E402
from rlhf_engine.figures import running_mean  # noqa: E402
from rlhf_engine.sweep import FINAL_STEPS, Sweep, final_value  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--prefix", default="sweep", help="file names: PREFIX-frontier.png, PREFIX-gold-vs-proxy.png")
    parser.add_argument("--smooth", type=int, default=FINAL_STEPS, help="running-mean window of the √KL plot (steps)")
    args = parser.parse_args()
    sweep = Sweep(args.sweep)
    series = {m.label: m.run.metrics() for m in sweep.members()}
    bon = sweep.best_of_n()
    drawn = {f"{args.prefix}-frontier.png": figures.frontier_figure(sweep.frontier(), bon),
             f"{args.prefix}-gold-vs-proxy.png": figures.gold_proxy_figure(series, bon, smooth=args.smooth)}
    args.out.mkdir(parents=True, exist_ok=True)
    with chromium_page(1100, 560) as page:
        for name, figure in drawn.items():
            figure.update_layout(width=1060, height=520)
            page.set_content(figure.to_html(full_html=True, include_plotlyjs=True))
            page.locator(".js-plotly-plot").wait_for()
            page.wait_for_timeout(500)
            page.locator(".js-plotly-plot").screenshot(path=str(args.out / name))
            print(f"wrote {args.out / name}")
    print(summary(sweep, args.smooth))
    return 0


def summary(sweep: Sweep, smooth: int = FINAL_STEPS) -> str:
    lines = ["| run | wall time | steps | final β | final KL (nats) | √KL | final RM score | final gold | "
             f"gold peak ({smooth}-step mean) at step, √KL |", "|---|---|---|---|---|---|---|---|---|"]
    for run in sweep.runs():
        events = run.events().splitlines()
        wall = _seconds(events[0][:25], events[-1][:25]) if len(events) > 1 else None
        rows = run.metrics()
        if run.config()["kind"] == "best_of_n":
            rows_bon = sweep.best_of_n()
            top = rows_bon[-1] if rows_bon else {}
            lines.append(f"| {run.id} (no training) | {wall:.0f} s | — | — | {top.get('kl', 0):.2f} (n={top.get('n')}) | "
                         f"{math.sqrt(top.get('kl', 0)):.2f} | {top.get('score', 0):.3f} | {top.get('gold', 0):.3f} | — |")
            continue
        if not rows:
            lines.append(f"| {run.id} | not started | | | | | | | |")
            continue
        kl = final_value(rows, "objective/kl")
        gold = final_value(rows, "gold/score")
        peak = ""
        if gold is not None:  # where the gold score's running mean was highest
            smooth_gold = running_mean([r["gold/score"] for r in rows], smooth)
            smooth_kl = running_mean([r["objective/kl"] for r in rows], smooth)
            best = max(range(smooth - 1, len(rows)), key=lambda i: smooth_gold[i])
            peak = f"{smooth_gold[best]:.3f} at step {rows[best]['step']}, √KL {math.sqrt(max(smooth_kl[best], 0)):.2f}"
        lines.append(f"| {run.id} | {wall:.0f} s | {rows[-1]['step']} | {rows[-1]['beta']:.4g} | {kl:.2f} | "
                     f"{math.sqrt(max(kl, 0)):.2f} | {final_value(rows, 'objective/scores'):.3f} | "
                     f"{gold if gold is not None else float('nan'):.3f} | {peak} |")
    return "\n".join(lines)


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


if __name__ == "__main__":
    sys.exit(main())
