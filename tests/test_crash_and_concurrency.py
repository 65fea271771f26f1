"""Crashes and concurrency (issue 6): SIGKILLed engine processes, stop signals, parallel writers and readers.

The engine process here is the one the dashboard starts, ``python -m rlhf_engine run-job <folder>``, killed
with SIGKILL while nobody waits for it (the server gone too: a closed laptop, the OOM killer). Nothing may be
lost: after a restart the run reads as interrupted, its metrics file reads whole, and Resume continues from
the last checkpoint to the full step count with every step logged once.

No outcome here depends on the machine's speed: processes that must be ready before a race starts say so with
a file, and a process that must still be running when it is killed or read waits for that (a step to kill
at; the reader's reads) instead of being raced against the clock.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlhf_engine.cli import main
from rlhf_engine.config import PPOConfig, RewardConfig
from rlhf_engine.data.pairs import PreferencePair
from rlhf_engine.data.store import PairStore
from rlhf_engine.runs.policy_job import prepare_policy_job
from rlhf_engine.runs.resume import prepare_resume, resume_job
from rlhf_engine.runs.reward_job import prepare_reward_job, start_reward_job
from rlhf_engine.runs.runfolder import STATES, RunFolder, checkpoint_step

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


# `python -m rlhf_engine run-job <folder>` with one hook: once it has written the metrics line of step
# $WAIT_AT_STEP it waits there (for the test's SIGKILL) instead of going on, so that the kill always lands in
# a running job, at that step, however fast the machine runs the job and however slowly the test polls.
ENGINE = textwrap.dedent("""
    import os, runpy, time
    from rlhf_engine.runs.runfolder import RunFolder
    wait_at, append_metrics = int(os.environ["WAIT_AT_STEP"]), RunFolder.append_metrics

    def append_then_wait(self, metrics):
        append_metrics(self, metrics)
        if metrics["step"] == wait_at:
            time.sleep(600)  # killed here; should the kill never come, end as a failure
            os._exit(1)

    RunFolder.append_metrics = append_then_wait
    runpy.run_module("rlhf_engine", run_name="__main__", alter_sys=True)
""")


def engine(run_dir: Path, log: Path, wait_at_step: int) -> subprocess.Popen:
    """The dashboard's job process for a queued run folder, waiting to be killed after step ``wait_at_step``."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-c", ENGINE, "run-job", str(run_dir)], cwd=REPO,
                                env={**ENV, "WAIT_AT_STEP": str(wait_at_step)}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_until(predicate, process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, f"the engine ended early:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"timed out:\n{log.read_text()[-3000:]}"
        time.sleep(0.02)


def kill_and_check(run: RunFolder, process: subprocess.Popen) -> int:
    """SIGKILL the engine; check what a restarted app sees; leave a torn last line as a kill mid-write does;
    return the step of the checkpoint a resume must continue from."""
    assert process.poll() is None, "the run ended before the kill"
    process.kill()
    process.wait(30)
    restarted = RunFolder(run.path)  # a fresh reader, as after a restart
    assert restarted.status()["state"] == "interrupted"
    steps = [m["step"] for m in restarted.metrics()]
    assert steps == list(range(1, len(steps) + 1))  # whole and in order
    checkpoint = checkpoint_step(restarted.latest_checkpoint())
    assert checkpoint <= steps[-1]
    with open(run.path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": %d, "loss": 0.69' % (steps[-1] + 1))
    assert [m["step"] for m in restarted.metrics()] == steps
    return checkpoint


def kill_twice_then_resume(run: RunFolder, kill_at: tuple[int, int], log: Path) -> int:
    """Start the engine, SIGKILL it at each step of ``kill_at`` (restarting it in between; it waits at that step
    to be killed), then resume to the end; return the kills survived."""
    kills, checkpoints = 0, []
    for target in kill_at:
        if kills:
            prepare_resume(run.path)  # what the Resume button does: queued again
        process = engine(run.path, log, wait_at_step=target)
        wait_until(lambda: len(run.metrics()) >= target and run.latest_checkpoint() is not None
                   and checkpoint_step(run.latest_checkpoint()) >= target - 3, process, log)
        assert len(run.metrics()) == target  # it waits there for the kill
        checkpoints.append(kill_and_check(run, process))
        kills += 1
    resumed = resume_job(run.path, background=False)
    assert resumed.state == "completed", (resumed.run.status(), log.read_text()[-3000:])
    for checkpoint in checkpoints:  # each start after a kill went on from the checkpoint the kill left
        assert f"from step-{checkpoint:06d}" in run.events()
    return kills


@pytest.mark.slow
def test_a_reward_model_run_survives_sigkill_twice_and_resumes_to_the_full_step_count(runs_dir, tiny_model_config,
                                                                                     pairs_file, tmp_path):
    config = RewardConfig(model=tiny_model_config, steps=30, eval_every=10, checkpoint_every=3, norm_samples=4,
                          norm_response_length=4)
    run = prepare_reward_job(runs_dir / "rm-kill", config, pairs_file).run
    stored_pairs = (run.path / "pairs.jsonl").read_bytes()
    assert kill_twice_then_resume(run, (5, 15), tmp_path / "engine.log") == 2
    assert [m["step"] for m in run.metrics()] == list(range(1, 31))
    assert run.events().count("resuming from step-") == 2  # the restart after the first kill, and Resume
    assert (run.path / "pairs.jsonl").read_bytes() == stored_pairs  # the run's copy of the pairs is untouched
    assert (run.path / "reward_model.json").is_file() and run.eval()["accuracy"] >= 0


@pytest.mark.slow
def test_a_ppo_run_survives_sigkill_twice_and_resumes_to_the_full_step_count(runs_dir, tiny_model_config,
                                                                            pairs_file, tmp_path):
    rm_config = RewardConfig(model=tiny_model_config, steps=2, eval_every=2, norm_samples=4, norm_response_length=4)
    assert start_reward_job(runs_dir / "rm", rm_config, pairs_file, background=False).state == "completed"
    config = PPOConfig(model=tiny_model_config, batch_size=2, response_length=4, steps=10, checkpoint_every=2)
    run = prepare_policy_job(runs_dir / "ppo-kill", config, runs_dir / "rm").run
    assert kill_twice_then_resume(run, (3, 6), tmp_path / "engine.log") == 2
    assert [m["step"] for m in run.metrics()] == list(range(1, 11))
    assert sorted({s["step"] for s in run.samples()}) == list(range(1, 11))  # samples truncated and resumed too
    assert run.events().count("resumed from step-") == 2
    assert (run.path / "policy" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_the_cli_stops_cleanly_on_sigint_even_when_started_with_it_ignored_and_on_sigterm(tmp_path, tiny_model_dir,
                                                                                         pairs_file):
    """`nohup python -m rlhf_engine train-rm ... &` gets SIGINT ignored; `kill` sends SIGTERM: both checkpoint."""
    out = tmp_path / "rm"
    log = tmp_path / "cli.log"
    command = [sys.executable, "-m", "rlhf_engine", "train-rm", "--data", str(pairs_file), "--out", str(out),
               "--model", tiny_model_dir, "--quant", "none", "--steps", "400", "--set", "checkpoint_every=1000"]
    run = RunFolder(out)
    for stop, argv in ((signal.SIGINT, command), (signal.SIGTERM, [sys.executable, "-m", "rlhf_engine", "resume",
                                                                   str(out)])):
        with open(log, "ab") as f:
            process = subprocess.Popen(argv, cwd=REPO, env=ENV, stdout=f, stderr=subprocess.STDOUT,
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        before = len(run.metrics()) if run.exists() else 0
        wait_until(lambda: run.exists() and len(run.metrics()) >= before + 3, process, log)
        process.send_signal(stop)
        assert process.wait(120) == 0, log.read_text()[-3000:]
        status = run.status()
        assert status["state"] == "stopped", log.read_text()[-3000:]
        assert checkpoint_step(run.latest_checkpoint()) == status["step"] < 400  # a checkpoint at the stop
    assert "stopping (writing a checkpoint)" in log.read_text()


def test_a_checkpoint_is_whole_or_absent(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.create("ppo", {"config": {}}, 10)
    run.write_checkpoint(2, lambda folder: (folder / "weights").write_bytes(b"step 2"))

    def dies_half_way(folder):
        (folder / "weights").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.write_checkpoint(4, dies_half_way)
    (run.checkpoint_root / ".tmp-left-by-a-kill").mkdir()  # what SIGKILL during a write leaves
    (run.checkpoint_root / ".tmp-left-by-a-kill" / "weights").write_bytes(b"half")
    assert run.latest_checkpoint().name == "step-000002"
    assert (run.latest_checkpoint() / "weights").read_bytes() == b"step 2"
    run.write_checkpoint(6, lambda folder: (folder / "weights").write_bytes(b"step 6"))
    assert sorted(p.name for p in run.checkpoint_root.iterdir()) == ["step-000002", "step-000006"]


# ---------------------------------------------------------------------------------------------- the pair store

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from rlhf_engine.data.pairs import PreferencePair
    from rlhf_engine.data.store import PairStore
    store, tag, n, batch, go = (PairStore(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                Path(sys.argv[5]))
    Path(f"{go}-{tag}-ready").touch()  # imported, the store open: waiting for the go
    deadline = time.monotonic() + 300
    while not go.exists():
        assert time.monotonic() < deadline, "no go within 300 s"
        time.sleep(0.005)
    for start in range(0, n, batch):
        store.add_many([PreferencePair(f"{tag} {i}", f"good {i}", f"bad {i}") for i in range(start, start + batch)],
                       source=tag)
""")


def writer(store: Path, tag: str, n: int, batch: int, go: Path) -> subprocess.Popen:
    """A process storing ``n`` pairs in batches of ``batch`` once ``go`` exists; ``<go>-<tag>-ready`` says it waits."""
    return subprocess.Popen([sys.executable, "-c", WRITER, str(store), tag, str(n), str(batch), str(go)], cwd=REPO,
                            env=ENV, stderr=subprocess.PIPE)


def wait_for(predicate, processes: list[subprocess.Popen], timeout: float = 300) -> None:
    """Until ``predicate()`` holds; a failure if one of ``processes`` ends first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for process in processes:
            if process.poll() is not None:
                output = process.stderr.read() if process.stderr else b""
                output = output.decode(errors="replace") if isinstance(output, bytes) else output
                raise AssertionError(f"a process ended early (exit {process.returncode}):\n{output[-3000:]}")
        assert time.monotonic() < deadline, f"timed out after {timeout} s"
        time.sleep(0.01)


def integrity(store: Path) -> str:
    with contextlib.closing(sqlite3.connect(store)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def test_two_processes_storing_200_pairs_each_at_once_store_400(tmp_path):
    store, go = tmp_path / "pairs.sqlite", tmp_path / "go"
    PairStore(store)
    writers = [writer(store, tag, 200, 1, go) for tag in ("tab-a", "tab-b")]  # one transaction per pair
    wait_for(lambda: all(Path(f"{go}-{tag}-ready").exists() for tag in ("tab-a", "tab-b")), writers)
    go.touch()  # both imported and waiting: they start together
    for process in writers:
        assert process.wait(300) == 0, process.stderr.read().decode()
    rows = PairStore(store).list(limit=1000)
    assert len(rows) == 400 and len({r.id for r in rows}) == 400
    for tag in ("tab-a", "tab-b"):
        assert sorted(r.pair.prompt for r in rows if r.source == tag) == sorted(f"{tag} {i}" for i in range(200))
    assert integrity(store) == "ok"


def test_a_writer_killed_mid_upload_leaves_whole_uploads_only(tmp_path):
    """Each add_many is one transaction: a SIGKILL at any moment stores a file's pairs all or none."""
    store, go = tmp_path / "pairs.sqlite", tmp_path / "go"
    go.touch()
    PairStore(store)
    for kill in range(3):
        process = writer(store, f"upload-{kill}", 10**12, 50, go)  # more than it can ever store: killed running
        wait_for(lambda: PairStore(store).count() >= 50 * (kill + 1) * 4, [process])
        process.kill()
        process.wait(30)
        assert integrity(store) == "ok"
        rows = PairStore(store).list(limit=10**6)
        assert len(rows) % 50 == 0 and len({r.id for r in rows}) == len(rows)
        for tag in {r.source for r in rows}:  # every upload is a whole number of 50-pair files, none repeated
            prompts = [r.pair.prompt for r in rows if r.source == tag]
            assert len(prompts) == len(set(prompts)) and len(prompts) % 50 == 0
    PairStore(store).add(PreferencePair("after", "the", "kills"))
    assert PairStore(store).count() % 50 == 1


# ---------------------------------------------------------------------------------------------- runs and readers

# Every 75 steps the writer waits until the reader has read the run twice more (one byte in the reads file
# each), so that the reads overlap the writing however the machine shares its cores between the two.
RUN_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from rlhf_engine.runs.runfolder import RunFolder
    run, reads = RunFolder(Path(sys.argv[1])), Path(sys.argv[3])

    def reads_done():
        return reads.stat().st_size if reads.exists() else 0

    for step in range(1, int(sys.argv[2]) + 1):
        run.append_metrics({"step": step, "loss": 1.0 / step, **{f"metric/{k}": k * step for k in range(60)}})
        run.append_samples([{"step": step, "prompt": "p", "response": "r" * 500}])
        run.set_status("running", step=step)
        if step % 75 == 0:
            seen, deadline = reads_done(), time.monotonic() + 300
            while reads_done() < seen + 2:
                assert time.monotonic() < deadline, "the reader stopped reading"
                time.sleep(0.001)
    run.set_status("completed", step=step)
""")


def test_a_run_reads_whole_from_the_engine_and_the_cli_while_it_is_written(tmp_path):
    run = RunFolder(tmp_path / "runs" / "ppo-live")
    run.create("ppo", {"config": {}}, 1500)
    reads_file = tmp_path / "reads"
    process = subprocess.Popen([sys.executable, "-c", RUN_WRITER, str(run.path), "1500", str(reads_file)], cwd=REPO,
                               env=ENV, stderr=subprocess.PIPE)
    reads, last_step = 0, 0
    while process.poll() is None or reads == 0:
        status = RunFolder(run.path).status()
        assert status["state"] in STATES and status["step"] >= last_step
        last_step = status["step"]
        metrics = run.metrics()
        assert [m["step"] for m in metrics] == list(range(1, len(metrics) + 1))
        assert all(len(m) == 62 for m in metrics)  # no row cut short
        if reads % 10 == 0:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                assert main(["runs", str(run.path.parent)]) == 0
            assert "ppo-live" in out.getvalue()
        reads += 1
        with open(reads_file, "ab") as f:
            f.write(b".")
    assert process.wait() == 0, process.stderr.read().decode()
    assert reads >= 40 and len(run.metrics()) == 1500 and run.status()["state"] == "completed"


def test_two_processes_creating_the_same_run_get_one_run(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from rlhf_engine.runs.runfolder import RunFolder
        go = Path(sys.argv[2])
        Path(sys.argv[4]).touch()  # imported: waiting for the go
        deadline = time.monotonic() + 300
        while not go.exists():
            assert time.monotonic() < deadline, "no go within 300 s"
            time.sleep(0.001)
        try:
            RunFolder(Path(sys.argv[1])).create("ppo", {"config": {"by": sys.argv[3]}}, 1)
            print("created")
        except FileExistsError:
            print("refused")
    """)
    go = tmp_path / "go"
    for attempt in range(5):
        folder = tmp_path / f"run-{attempt}"
        ready = [tmp_path / f"ready-{attempt}-{i}" for i in range(2)]
        processes = [subprocess.Popen([sys.executable, "-c", script, str(folder), str(go), str(i), str(ready[i])],
                                      cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True) for i in range(2)]
        wait_for(lambda: all(r.exists() for r in ready), processes)
        go.touch()  # both imported and waiting: they race
        outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in processes)
        go.unlink()
        assert outcomes == ["created", "refused"]
        assert json.loads((folder / "config.json").read_text())["kind"] == "ppo"
