"""A finished sweep's held-out gains read two ways: against the reference's first answer to each probe prompt
(one answer, the policy's own seed) and against the mean of all its answers (``reference_probe_samples``).

    .venv/bin/python benchmarks/probe_baseline.py --sweep workspace/runs/workshop-sweep [--json OUT]

The training and the policy's answers are the same both ways (the further reference answers draw from
their own seeds), so the difference in the standard errors is the baseline's alone. Prints one line per
run and reading; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import machine_line, write_json

from rlhf_engine.lab.sweep import Sweep, final_value, probe_summary


def readings(rows: list[dict]) -> dict[str, dict]:
    """{'one answer': last probe vs the reference's answer 0, 'mean of N': vs the mean of its N answers}."""
    every = probe_summary(rows)
    first = probe_summary([r for r in rows if not r.get("sample")])
    out = {}
    for name, summary in (("one answer", first), (f"mean of {every[0]['answers'] // every[0]['prompts']}", every)):
        reference, last = summary[0], summary[-1]
        out[name] = {"step": last["step"], "prompts": last["prompts"], "reference_answers": reference["answers"],
                     "gold_before": reference["gold"], "gold_after": last["gold"], "gold_gain": last["gold_gain"],
                     "gold_gain_se": last["gold_gain_se"], "standard_errors": last["gold_gain"] / last["gold_gain_se"],
                     "score_gain": last["score_gain"], "score_gain_se": last["score_gain_se"]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, required=True)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    sweep = Sweep(args.sweep)
    result = {"machine": machine_line(), "runs": {}}
    for member in sweep.members():
        read = readings(member.run.probes())
        final_kl = final_value(member.run.metrics(), "objective/kl")
        result["runs"][member.label] = {"final_kl": final_kl, "readings": read}
        for name, r in read.items():
            print(f"{member.label:10} {name:12} gold {r['gold_before']:.3f} → {r['gold_after']:.3f} on {r['prompts']} "
                  f"prompts: {r['gold_gain']:+.3f} ± {r['gold_gain_se']:.3f} ({r['standard_errors']:.2f} SE); "
                  f"RM {r['score_gain']:+.3f} ± {r['score_gain_se']:.3f}; final KL {final_kl:.2f}")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
