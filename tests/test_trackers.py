"""report_to: each step's metrics mirrored to TensorBoard, Trackio and W&B, offline; the run folder stays the record."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from rlhf_engine.cli import main
from rlhf_engine.runs import trackers
from rlhf_engine.runs.runfolder import RunFolder


def test_a_run_reported_to_tensorboard_leaves_every_steps_metrics_in_an_event_file(tmp_path, tiny_model_dir,
                                                                                    trained_tiny_reward_dir, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    shutil.copytree(trained_tiny_reward_dir, tmp_path / "rm")
    out = tmp_path / "grpo"
    assert main(["grpo", "--reward", str(tmp_path / "rm"), "--out", str(out), "--model", tiny_model_dir, "--quant",
                 "none", "--steps", "3", "--batch-size", "4", "--group-size", "2", "--response-length", "4",
                 "--report-to", "tensorboard", "--set", "probe_every=0"]) == 0
    assert f"metrics mirrored to tensorboard: tensorboard --logdir {out / 'tensorboard'}" in capsys.readouterr().out
    rows = RunFolder(out).metrics()
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for name in ("reward", "objective/kl", "loss", "time/step_s"):
        read_back = events.Scalars(name)
        assert [e.step for e in read_back] == [1, 2, 3], name
        assert [e.value for e in read_back] == pytest.approx([r[name] for r in rows], rel=1e-6), name
    assert f"tensorboard --logdir {out / 'tensorboard'}" in RunFolder(out).events()
    assert [name for name, _ in trackers.reported_commands(RunFolder(out))] == ["tensorboard"]


def test_trackio_and_wandb_keep_the_metrics_in_their_own_local_stores(tmp_path):
    """In a process of its own: both libraries start services and read their folders from the environment."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        from rlhf_engine.runs import trackers
        from rlhf_engine.runs.runfolder import RunFolder
        run = RunFolder(Path({str(tmp_path / "run")!r}))
        run.create("ppo", {{"config": {{"kl_coef": 0.05, "report_to": "trackio,wandb"}}}}, 2)
        for step in (1, 2):
            run.append_metrics({{"step": step, "objective/kl": 0.25 * step, "objective/scores": -1.0 + step}})
        trackers.close(run.path)
        print(run.events())
    """)
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "WANDB_DIR": str(tmp_path),
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
           "WANDB_SILENT": "true"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "mirroring metrics to trackio" in done.stdout and "mirroring metrics to wandb" in done.stdout
    import sqlite3

    with sqlite3.connect(tmp_path / "trackio" / f"{trackers.PROJECT}.db") as db:
        logged = [(step, json.loads(values)) for step, values in
                  db.execute("select step, metrics from metrics where run_name = 'run' order by step")]
    assert logged == [(1, {"objective/kl": 0.25, "objective/scores": 0.0}),
                      (2, {"objective/kl": 0.5, "objective/scores": 1.0})]
    offline = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0


def test_a_tracker_that_fails_is_reported_once_and_dropped_and_the_run_folder_keeps_every_step(tmp_path,
                                                                                               monkeypatch):
    class Broken:
        def __init__(self, run_dir, run_id, config):
            pass

        def log(self, metrics, step):
            raise ConnectionError("tracker gone")

        def close(self):
            pass

    monkeypatch.setitem(trackers.TRACKER_CLASSES, "wandb", Broken)
    run = RunFolder(tmp_path / "run")
    run.create("ppo", {"config": {"report_to": "wandb"}}, 3)
    for step in (1, 2, 3):
        run.append_metrics({"step": step, "objective/kl": 0.1})
    trackers.close(run.path)
    assert [r["step"] for r in run.metrics()] == [1, 2, 3]
    assert run.events().count("wandb: logging failed (ConnectionError: tracker gone)") == 1


def test_report_to_takes_only_known_trackers_with_a_one_line_error(tmp_path, trained_tiny_reward_dir, capsys):
    assert trackers.parse_report_to("none") == () and trackers.parse_report_to(" tensorboard, wandb ,") == (
        "tensorboard", "wandb")
    assert main(["ppo", "--reward", str(trained_tiny_reward_dir), "--out", str(tmp_path / "ppo"),
                 "--report-to", "mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'mlflow'" in err and "tensorboard, trackio, wandb" in err
    assert not (tmp_path / "ppo").exists()
