"""Run folders written before the engine's modules moved into subpackages still open, report and resume.

tests/fixtures/old-runs (see its HOW.md) holds what commit 28c270d wrote: a tiny reward model (rm/), a PPO run of 4
steps stopped at step 2 with its checkpoint (ppo/), and the metrics of the same run done in one go
(straight_metrics.json). The paths inside name the model and the folder where they were written; each test works
on a copy with those paths rewritten to this test's tiny model (tests/conftest.py makes the same 2-layer random
Llama with the same seed) and to the copy.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "old-runs"
OLD_MODEL = "/tmp/oldruns/tiny-model"
OLD_FOLDER = "/tmp/oldruns/out/old-runs"
OLD_PAIRS = "/tmp/oldruns/out/pairs.jsonl"  # the reward model's pairs file; its copy is rm/pairs.jsonl
COMPARED = ("objective/scores", "objective/kl", "loss/policy", "loss/value", "policy/approxkl", "grad_norm")


def copy_old_runs(dest: Path, model_dir: str) -> Path:
    """The fixture folder copied to ``dest``, its paths rewritten to ``model_dir`` and to the copy."""
    shutil.copytree(FIXTURE, dest)
    swaps = {OLD_FOLDER: str(dest), OLD_PAIRS: str(dest / "rm" / "pairs.jsonl"), OLD_MODEL: model_dir}
    pattern = re.compile("|".join(map(re.escape, swaps)))  # in one pass: a new path may contain an old one
    for path in dest.rglob("*"):
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # weights, the trainer state
            continue
        new, count = pattern.subn(lambda found: swaps[found.group()], text)
        if count:
            path.write_text(new, encoding="utf-8")
            assert "/tmp/oldruns/" not in pattern.sub("", text), f"an old path not rewritten in {path}"
    return dest


@pytest.fixture(scope="module")
def old_runs(tmp_path_factory, tiny_model_dir) -> Path:
    """A copy to open and report (not resumed)."""
    return copy_old_runs(tmp_path_factory.mktemp("old") / "old-runs", tiny_model_dir)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, tiny_model_dir):
    """A copy of its own whose PPO run was resumed to its end (2 tiny steps): (copy, job, seconds)."""
    from rlhf_engine.runs.resume import resume_job

    copy = copy_old_runs(tmp_path_factory.mktemp("resumed") / "old-runs", tiny_model_dir)
    started = time.perf_counter()
    job = resume_job(copy / "ppo", background=False)
    return copy, job, time.perf_counter() - started


def test_old_runs_open(old_runs, capsys):
    from rlhf_engine.cli import main
    from rlhf_engine.runs.runfolder import RunFolder

    ppo = RunFolder(old_runs / "ppo")
    status = ppo.status()
    assert (status["state"], status["step"], status["total_steps"]) == ("stopped", 2, 4)
    assert [row["step"] for row in ppo.metrics()] == [1, 2]
    assert ppo.config()["kind"] == "ppo" and ppo.latest_checkpoint().name == "step-000002"
    rm = RunFolder(old_runs / "rm")
    assert rm.status()["state"] == "completed" and rm.config()["kind"] == "reward_model"

    assert main(["runs", str(old_runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines}
    assert set(listed) == {"ppo", "rm"}, lines
    assert "stopped" in listed["ppo"] and "step 2/4" in listed["ppo"]
    assert "completed" in listed["rm"]


def test_old_runs_report(old_runs):
    from rlhf_engine.lab.report import write_report

    out = write_report(old_runs / "ppo")
    html = out.read_text(encoding="utf-8")
    assert out == old_runs / "ppo" / "report.html"
    assert "KL to the reference" in html and "<h2>Metrics</h2>" in html
    assert "stopped" in html and "Samples at step" in html
    rm_html = write_report(old_runs / "rm").read_text(encoding="utf-8")
    assert "<h2>Metrics</h2>" in rm_html


@pytest.mark.slow
def test_old_ppo_run_resumes_to_the_numbers_of_the_straight_run(resumed):
    from rlhf_engine.runs.runfolder import RunFolder

    copy, job, _seconds = resumed
    run = RunFolder(copy / "ppo")
    assert job.state == "completed", run.status().get("error")
    assert run.status()["step"] == 4
    assert "resumed from step-000002" in run.events()  # from the old checkpoint, not from the start
    rows = {row["step"]: row for row in run.metrics()}
    assert sorted(rows) == [1, 2, 3, 4]
    straight = {row["step"]: row for row in json.loads((FIXTURE / "straight_metrics.json").read_text())}
    differ = [f"step {step} {key}: resumed {rows[step][key]!r}, straight {straight[step][key]!r}"
              for step in (3, 4) for key in COMPARED
              if rows[step][key] != pytest.approx(straight[step][key], rel=1e-4, abs=1e-6)]
    assert not differ, "the resumed run's PPO numbers differ from the old straight run's:\n" + "\n".join(differ)
