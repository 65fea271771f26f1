"""benchmarks/compare_trl.py and compare_commits.py time two processes side by side by letting them take turns,
one step each. Nothing here depends on the machine's speed: the turn order comes from a log both sides append
to, and whether the time a side spends stopped is left out of its steps from the clock readings themselves
(``time.perf_counter`` is the system's monotonic clock, one for every process)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

# One side of a pair: 3 steps of `work_s` each, timed by turns.StepClock; it logs each step's name as it ends
# and reports, besides the step times, when each timed step began on the shared clock.
STEPPER = """
import json, sys, time
sys.path.insert(0, {benchmarks!r})
from turns import StepClock
name, work_s, out = sys.argv[1], float(sys.argv[2]), sys.argv[-1]
clock = StepClock()
began = []
for i in range(3):
    time.sleep(work_s)
    with open({log!r}, "a") as f:
        f.write(name + str(i) + "\\n")
    began.append(clock.started)
    clock.step_done()
json.dump({{"step_s": clock.step_s, "began": began, "median_s": sorted(clock.step_s)[1],
           "measured_s": clock.step_s, "peak_rss_bytes": 1000 if name.startswith("old") else 1020, "load_s": 0.0}},
          open(out, "w"))
"""


def stepper(tmp_path: Path, log: Path) -> Path:
    script = tmp_path / "stepper.py"
    script.write_text(STEPPER.format(benchmarks=str(BENCHMARKS), log=str(log)))
    return script


def test_two_processes_alternate_one_step_at_a_time_and_the_wait_is_not_timed(tmp_path):
    import compare_trl

    order = tmp_path / "order.txt"
    script = stepper(tmp_path, order)
    work = {"ours": 0.01, "trl": 0.1}  # the other side's turn is ten times our step's work
    sides = [([sys.executable, str(script), name, str(work[name]), str(tmp_path / f"{name}.json")],
              tmp_path / f"{name}.json", tmp_path / f"{name}.log") for name in work]
    ours, trl = compare_trl.run_taking_turns(*sides)
    expected = ["ours0", "trl0", "ours1", "trl1", "ours2", "trl2"]
    assert order.read_text().split() == expected
    for name, result in (("ours", ours), ("trl", trl)):
        assert len(result["step_s"]) == 3
        assert all(s >= work[name] for s in result["step_s"])  # the step's own work is timed
    # Each timed step as an interval of the shared clock: they come in the turn order and never overlap, so
    # no step of one side holds any of the other's turn, taken while it was stopped.
    steps = sorted((began, began + step_s, f"{name}{i}") for name, result in (("ours", ours), ("trl", trl))
                   for i, (began, step_s) in enumerate(zip(result["began"], result["step_s"])))
    assert [label for _, _, label in steps] == expected
    assert all(end < next_began for (_, end, _), (next_began, _, _) in zip(steps, steps[1:]))
    for i in range(2):  # between two of our timed steps lies the other's whole turn, ten times our step's work
        gap = ours["began"][i + 1] - (ours["began"][i] + ours["step_s"][i])
        assert gap > trl["step_s"][i] >= work["trl"]


def test_a_failing_side_is_reported_with_its_log(tmp_path):
    import compare_trl

    ok = tmp_path / "ok.py"
    ok.write_text("import json, sys\njson.dump({}, open(sys.argv[1], 'w'))\n")
    bad = ([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "bad.json", tmp_path / "bad.log")
    with pytest.raises(SystemExit, match="exit 3"):
        compare_trl.run_taking_turns(([sys.executable, str(ok), str(tmp_path / "ok.json")], tmp_path / "ok.json",
                                      tmp_path / "ok.log"), bad)
    assert json.loads((tmp_path / "ok.json").read_text()) == {}


def test_compare_commits_alternates_the_side_that_starts_and_takes_the_median_of_the_pair_ratios(tmp_path):
    import compare_commits

    order = tmp_path / "order.txt"
    script = stepper(tmp_path, order)
    commands = {side: [sys.executable, str(script), side, "0"] for side in ("old", "new")}
    rows = compare_commits.run_method("dpo", 2, commands, tmp_path)
    assert order.read_text().split() == ["old0", "new0", "old1", "new1", "old2", "new2",  # pair 1: old first
                                         "new0", "old0", "new1", "old1", "new2", "old2"]  # pair 2: new first
    assert [r["first"] for r in rows] == ["old", "new"]
    assert sorted(p.name for p in tmp_path.glob("dpo-*.json")) == ["dpo-1-new.json", "dpo-1-old.json",
                                                                   "dpo-2-new.json", "dpo-2-old.json"]
    for row in rows:
        assert row["step_ratio"] == row["new"]["median_s"] / row["old"]["median_s"]
        assert row["peak_rss_ratio"] == 1.02

    def row(step, rss):
        return {"step_ratio": step, "peak_rss_ratio": rss, "old": {"median_s": 2.0, "peak_rss_bytes": 100},
                "new": {"median_s": 2.0 * step, "peak_rss_bytes": 100 * rss}}

    within = compare_commits.summarise([row(1.10, 1.0), row(1.04, 1.0), row(0.90, 1.01)], 0.05, 0.05)
    assert within["step_ratio"] == 1.04 and within["peak_rss_ratio"] == 1.0 and within["within_limits"]
    assert within["new_median_s"] == 2.08
    slower = compare_commits.summarise([row(1.06, 1.0), row(1.07, 1.0), row(0.90, 1.0)], 0.05, 0.05)
    assert slower["step_ratio"] == 1.06 and not slower["within_limits"]
    larger = compare_commits.summarise([row(1.0, 1.06), row(1.0, 1.06), row(1.0, 1.0)], 0.05, 0.05)
    assert not larger["within_limits"]
