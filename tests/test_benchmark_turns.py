"""benchmarks/compare_trl.py times two processes side by side by letting them take turns, one step each."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

STEPPER = """
import json, sys, time
sys.path.insert(0, {benchmarks!r})
from turns import StepClock
clock = StepClock()
for i in range(3):
    time.sleep(0.2)
    with open({log!r}, "a") as f:
        f.write(sys.argv[1] + str(i) + "\\n")
    clock.step_done()
json.dump({{"step_s": clock.step_s}}, open(sys.argv[2], "w"))
"""


def test_two_processes_alternate_one_step_at_a_time_and_the_wait_is_not_timed(tmp_path):
    import compare_trl

    order = tmp_path / "order.txt"
    script = tmp_path / "stepper.py"
    script.write_text(STEPPER.format(benchmarks=str(BENCHMARKS), log=str(order)))
    sides = [([sys.executable, str(script), name, str(tmp_path / f"{name}.json")], tmp_path / f"{name}.json",
              tmp_path / f"{name}.log") for name in ("ours", "trl")]
    ours, trl = compare_trl.run_taking_turns(*sides)
    assert order.read_text().split() == ["ours0", "trl0", "ours1", "trl1", "ours2", "trl2"]
    for result in (ours, trl):
        assert len(result["step_s"]) == 3
        assert all(0.19 < s < 0.35 for s in result["step_s"])  # 0.2 s of work each; the other's turn not counted


def test_a_failing_side_is_reported_with_its_log(tmp_path):
    import compare_trl
    import pytest

    ok = tmp_path / "ok.py"
    ok.write_text("import json, sys\njson.dump({}, open(sys.argv[1], 'w'))\n")
    bad = ([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "bad.json", tmp_path / "bad.log")
    with pytest.raises(SystemExit, match="exit 3"):
        compare_trl.run_taking_turns(([sys.executable, str(ok), str(tmp_path / "ok.json")], tmp_path / "ok.json",
                                      tmp_path / "ok.log"), bad)
    assert json.loads((tmp_path / "ok.json").read_text()) == {}
