"""Runs on a Ray cluster (rlhf_engine.cluster): a local Ray of 2 CPUs bound to 127.0.0.1, started once for the
module; a second cluster of 2 nodes (started in a subprocess) for a node lost mid-sweep; unit tests of liveness,
failure reasons and task sizes that start nothing."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from browser import free_port

from rlhf_engine.cli import main
from rlhf_engine.config import ModelConfig, PPOConfig
from rlhf_engine.runs.runfolder import HEARTBEAT_STALE_S, HOST, RunFolder

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "rlhf-workbench-test-token-000000"  # the local clusters' token (Ray's token auth is on by default)
TIMING = ("time/", "tokens_per_s")  # metrics that measure the machine, not the run


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return {**env, "RAY_AUTH_TOKEN": TOKEN, "PYTHONPATH": str(ROOT), **extra}


def _sweep_flags(model: str, reward: Path, steps: int = 2, **sets) -> list[str]:
    flags = ["--reward", str(reward), "--model", model, "--quant", "none", "--steps", str(steps), "--batch-size", "2",
             "--response-length", "4", "--seed", "3", "--set", "probe_every=1", "--set", "checkpoint_every=1"]
    for name, value in sets.items():
        flags += ["--set", f"{name}={value}"]
    return flags


def _same_metrics(a: RunFolder, b: RunFolder) -> None:
    rows_a, rows_b = a.metrics(), b.metrics()
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] and rows_a
    for row_a, row_b in zip(rows_a, rows_b):
        for key, value in row_a.items():
            if isinstance(value, float) and not key.startswith(TIMING) and key != "tokens_per_s":
                assert row_b[key] == pytest.approx(value, rel=1e-4, abs=1e-5, nan_ok=True), (a.id, key)


# -- without a cluster -------------------------------------------------------------------------------------------

def test_a_run_on_another_node_reads_as_running_while_its_heartbeat_is_fresh(tmp_path):
    run = RunFolder(tmp_path / "r")
    run.create("ppo", {}, 10)
    status = json.loads((run.path / "status.json").read_text())

    def written(**fields) -> str:
        (run.path / "status.json").write_text(json.dumps({**status, "state": "running", **fields}))
        return run.status()["state"]

    beat = {"pid": 12345, "host": "node-2"}
    assert written(pid=12345, host="node-2", heartbeat={**beat, "at": time.time()}) == "running"
    assert written(pid=12345, host="node-2", heartbeat={**beat, "at": time.time() - HEARTBEAT_STALE_S - 1}) \
        == "interrupted"
    assert written(pid=12345, host="node-2") == "interrupted"  # another host and no heartbeat: nothing tells
    # a run resumed here without Ray: the old heartbeat is not its writer's, the pid decides
    assert written(pid=os.getpid(), host=HOST, heartbeat={**beat, "at": time.time()}) == "running"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert written(pid=dead.pid, host=HOST, heartbeat={"pid": dead.pid, "host": HOST, "at": time.time()}) \
        == "interrupted"  # same host: a fresh heartbeat of a process that is gone does not count
    assert run.beat(placement={"node": "x"}) and run.status()["placement"] == {"node": "x"}
    run.set_status("completed")
    assert not run.beat() and run.status()["state"] == "completed"


def test_a_job_that_could_not_say_how_it_ended_ends_with_its_runs(tmp_path, tiny_model_dir):
    from rlhf_engine.config import to_dict
    from rlhf_engine.runs.group_job import prepare_group
    from rlhf_engine.runs.members import end_job_runs, job_and_runs

    config = PPOConfig(model=ModelConfig(source=tiny_model_dir, quant="none"))
    runs = [RunFolder(tmp_path / name) for name in ("a", "b", "done")]
    for run in runs:
        run.create("ppo", {"config": to_dict(config)}, 1)
    group = prepare_group(tmp_path / "group", [r.path for r in runs[:2]])
    assert [r.path for r in job_and_runs(group)] == [group.path, *(r.path for r in runs[:2])]
    assert [r.path for r in job_and_runs(runs[2])] == [runs[2].path]  # a run alone, once
    end_job_runs(group, "stopped", None, "stopped before it started")  # a group stopped before its task started
    assert [r.status()["state"] for r in (group, *runs)] == ["stopped", "stopped", "stopped", "queued"]
    assert all("stopped before it started" in r.events() for r in (group, *runs[:2]))


def test_a_failed_task_is_told_by_its_reason():
    from ray import exceptions as rx

    from rlhf_engine.cluster.ray_job import task_failure

    state, why = task_failure(rx.OutOfMemoryError("1 worker(s) were killed due to the node running low on memory"))
    assert state == "interrupted" and "memory monitor" in why and "Resume" in why
    state, why = task_failure(rx.NodeDiedError("Task failed because the node it was running on is dead"))
    assert state == "interrupted" and "node" in why and "lost" in why
    assert task_failure(rx.TaskCancelledError()) == ("stopped", None)
    assert task_failure(rx.WorkerCrashedError())[0] == "interrupted"


def test_a_task_asks_for_its_runs_memory_once_for_the_base_and_a_share_of_a_gpu(tmp_path, tiny_model_dir):
    from rlhf_engine.cluster.placement import task_resources
    from rlhf_engine.room.slots import job_memory_parts

    runs = []
    for i in range(3):
        run = RunFolder(tmp_path / f"r{i}")
        config = PPOConfig(model=ModelConfig(source=tiny_model_dir, quant="none"), response_length=8, batch_size=4)
        from rlhf_engine.config import to_dict

        run.create("ppo", {"config": to_dict(config)}, 1)
        runs.append(run)
    fixed, per_run = job_memory_parts(config.model, config, "cpu")
    alone = task_resources(runs[0], [runs[0]], cpus=2)
    assert alone.cpus == 2 and alone.gpus == 0 and alone.memory_bytes == fixed + per_run
    assert task_resources(runs[0], runs).memory_bytes == fixed + 3 * per_run  # one base, three runs' updates
    cuda_fixed, cuda_run = job_memory_parts(config.model, config, "cuda")
    share = task_resources(runs[0], runs, gpu_memory_bytes=80 * 2 ** 30, cluster_gpus=4).gpus
    assert share == max(0.05, math.ceil((cuda_fixed + 3 * cuda_run) / (80 * 2 ** 30) / 0.05) * 0.05)
    assert task_resources(runs[0], runs, gpu_memory_bytes=None, cluster_gpus=4).gpus == 1.0


def test_an_unreachable_cluster_is_one_line_and_exit_2_and_nothing_is_created(tmp_path, capsys):
    port = free_port()
    code = main(["sweep", "--reward", str(tmp_path / "rm"), "--out", str(tmp_path / "s"), "--ray", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in err
    assert not (tmp_path / "s").exists()


def test_without_ray_installed_the_flag_says_how_to_install_it(tmp_path):
    script = ("import sys; sys.modules['ray'] = None  # as if not installed\n"
              "from rlhf_engine.cli import main\n"
              f"sys.exit(main(['sweep', '--reward', {str(tmp_path)!r}, '--out', {str(tmp_path / 's')!r}, "
              "'--ray', 'auto']))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=120)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and "pip install -r requirements-ray.txt" in err[0], err


def test_without_the_flag_nothing_imports_ray(tmp_path, tiny_model_dir, trained_tiny_reward_dir):
    flags = ["--out", str(tmp_path / "s"), *_sweep_flags(tiny_model_dir, trained_tiny_reward_dir, 1)]
    script = textwrap.dedent(f"""
        import sys
        from rlhf_engine.cli import main
        import dashboard.state, rlhf_engine.room.scheduler, rlhf_engine.runs.resume
        code = main(["sweep", *{flags!r}])
        assert code == 0, code
        print("ray" in sys.modules, "rlhf_engine.cluster.connect" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["False", "False"]


STARTED_IN_A_THREAD = """
import threading, time
import ray
from rlhf_engine.cluster.connect import connect
# a page's script thread starts the room's local Ray, then ends (Streamlit runs each page so)
starter = threading.Thread(target=connect, args=("auto",), kwargs={"cpus": 1})
starter.start()
starter.join()
time.sleep(3)
print(ray.get(ray.remote(lambda: 42).remote(), timeout=60))
"""


@pytest.mark.slow
def test_a_local_ray_started_from_a_thread_that_ends_lives_on():
    done = subprocess.run([sys.executable, "-c", STARTED_IN_A_THREAD], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0 and done.stdout.split()[-1] == "42", done.stderr[-2000:]


# -- on a local Ray of 2 CPUs ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    from rlhf_engine.cluster.connect import connect, disconnect

    os.environ.setdefault("RAY_AUTH_TOKEN", TOKEN)
    cluster = connect("auto", cpus=2)
    yield cluster
    disconnect()


def _wait(predicate, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_sweep_on_ray_trains_each_run_as_the_process_queue_does(local_ray, runs_dir, tiny_model_dir,
                                                                  trained_tiny_reward_dir, capsys):
    from dashboard.lab import placement_phrase
    from rlhf_engine.cluster.dispatch import plan_tasks, run_on_cluster
    from rlhf_engine.lab.sweep import Sweep
    from rlhf_engine.lab.sweep_job import prepare_sweep
    from rlhf_engine.runs.job import THREADS_ENV, ProcessJob
    from rlhf_engine.runs.queue import JobQueue

    config = PPOConfig(model=ModelConfig(source=tiny_model_dir, quant="none"), steps=2, batch_size=2,
                       response_length=4, seed=3, probe_every=1, checkpoint_every=1)  # as the command line's
    betas = [0.0, 0.05, 0.1, 0.2]
    one_thread = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", THREADS_ENV: "1"}  # as each task has
    queue = JobQueue(slots=2, slot_env=[one_thread, one_thread])
    for job in prepare_sweep(runs_dir / "queue", config, trained_tiny_reward_dir, values=betas, batched=False):
        queue.submit(ProcessJob(job.run))
    assert queue.wait_idle(300)
    prepare_sweep(runs_dir / "ray", config, trained_tiny_reward_dir, values=betas, batched=False)
    jobs = run_on_cluster(plan_tasks(runs_dir / "ray", Sweep(runs_dir / "ray").runs()), local_ray)
    assert len(jobs) == 4 and all(job.state == "completed" for job in jobs)
    # the command line, two runs side by side in each task (a group)
    code = main(["sweep", "--out", str(runs_dir / "cli"), "--kl-coefs", "0,0.05,0.1,0.2", "--ray", "auto",
                 "--runs-per-task", "2", *_sweep_flags(tiny_model_dir, trained_tiny_reward_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4 runs in 2 Ray tasks" in out and "on 127.0.0.1 (1 CPU, attempt 1)" in out
    for kind in ("ray", "cli"):
        for by_queue, placed in zip(Sweep(runs_dir / "queue").runs(), Sweep(runs_dir / kind).runs()):
            assert placed.status()["state"] == "completed"
            _same_metrics(by_queue, placed)
            assert placed.probes() and len(placed.probes()) == len(by_queue.probes())
            where = placed.status()["placement"]
            assert where["node"] == "127.0.0.1" and where["cpus"] == 1 and where["gpus"] == 0
            assert where["attempt"] == 1 and where["memory_bytes"] > 0
            assert placement_phrase(placed.status()) == f"on node 127.0.0.1 ({HOST}): 1 CPU, no GPU, attempt 1"
    group = Path(json.loads((runs_dir / "cli" / "sweep.json").read_text())["ray"]["tasks"][0])
    assert len(json.loads((group / "status.json").read_text())["members"]) == 2
    assert main(["report", str(runs_dir / "cli")]) == 0


def _kill_worker_at(run: RunFolder, step: int) -> int:
    _wait(lambda: run.status().get("step", 0) >= step and run.status().get("state") == "running", what="a step")
    pid = run.status()["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.slow
def test_stop_resume_and_retries_through_ray(local_ray, runs_dir, tiny_model_dir, trained_tiny_reward_dir):
    from rlhf_engine.cluster.ray_job import RayJob
    from rlhf_engine.runs.policy_job import prepare_policy_job
    from rlhf_engine.runs.resume import prepare_resume

    config = PPOConfig(model=ModelConfig(source=tiny_model_dir, quant="none", lora_r=4, lora_alpha=8), steps=80,
                       batch_size=2, response_length=4, probe_every=0, checkpoint_every=1)
    run = prepare_policy_job(runs_dir / "long", config, trained_tiny_reward_dir).run
    # a worker killed: Ray runs the task again, which resumes from the checkpoint
    job = RayJob(run, local_ray, retries=1).start()
    killed = _kill_worker_at(run, 3)
    _wait(lambda: run.status().get("pid") != killed and run.status().get("step", 0) >= 5, what="the retry")
    assert run.status()["state"] == "running" and run.status()["placement"]["attempt"] == 2
    assert "retried by Ray (attempt 2 of at most 2" in run.events()
    # Stop through the run folder: the task checkpoints and ends
    job.stop()
    assert job.join(120) == "stopped"
    stopped_at = run.status()["step"]
    assert run.latest_checkpoint().name == f"step-{stopped_at:06d}"
    # Resume with no retries; its worker killed: interrupted, with the reason, by the driver
    prepare_resume(run.path)
    job = RayJob(run, local_ray, retries=0).start()
    _kill_worker_at(run, stopped_at + 1)
    assert job.join(120) == "interrupted"
    assert "worker died" in run.status()["error"] and "Resume continues" in run.status()["error"]
    # Resume again: it completes, no step logged twice
    prepare_resume(run.path)
    assert RayJob(run, local_ray, cpus=2).start().join(300) == "completed"
    assert run.status()["placement"]["threads"] == 2  # torch's threads are the CPUs asked for, not Ray's 1
    steps = [row["step"] for row in run.metrics()]
    assert steps == list(range(1, 81))


@pytest.mark.slow
def test_a_cluster_that_refuses_the_token_is_one_line_and_exit_2(local_ray, tmp_path):
    done = subprocess.run([sys.executable, "-m", "rlhf_engine", "resume", str(tmp_path / "r"), "--ray",
                           local_ray.gcs_address], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=_env(RAY_AUTH_TOKEN="not-the-cluster-token-00000000000", RAY_AUTH_MODE="token"))
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "refused this connection's token" in err[0] and "RAY_AUTH_TOKEN" in err[0], err


# -- a node lost, Ray's memory monitor: clusters of their own in a subprocess ---------------------------------------

NODE_LOSS = """
import json, os, sys, time
from pathlib import Path
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
from ray.cluster_utils import Cluster
from rlhf_engine.cli import main
from rlhf_engine.cluster.connect import connect
from rlhf_engine.cluster.dispatch import plan_tasks
from rlhf_engine.cluster.ray_job import RayJob
from rlhf_engine.lab.sweep import Sweep
from rlhf_engine.lab.sweep_job import prepare_sweep
from rlhf_engine.config import ModelConfig, PPOConfig

out, model, reward = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
cluster.wait_for_nodes()
ray_cluster = connect(cluster.address)
config = PPOConfig(model=ModelConfig(source=model, quant="none", lora_r=4, lora_alpha=8), steps=60, batch_size=2,
                   response_length=4, probe_every=0, checkpoint_every=1)
prepare_sweep(out / "sw", config, reward, values=[0.0, 0.1, 0.2], batched=False)
tasks = plan_tasks(out / "sw", Sweep(out / "sw").runs(), runs_per_task=2)  # a group of two, a run alone
jobs = [RayJob(task, ray_cluster, retries=0).start() for task in tasks]
group, alone = jobs
members = [m for m in Sweep(out / "sw").runs() if m.path != alone.run.path]
deadline = time.time() + 180
while not all(m.status().get("step", 0) >= 2 for m in members):
    assert time.time() < deadline
    time.sleep(0.2)
lost = members[0].status()["placement"]["node_id"]
assert lost != alone.run.status()["placement"]["node_id"]
cluster.remove_node(next(n for n in nodes if n.node_id == lost))
group.join(120)
print(json.dumps({"members": [m.status() for m in members], "alone": alone.run.status(),
                  "events": members[1].events()}))
assert alone.join(300) == "completed"
code = main(["resume", str(out / "sw"), "--ray", cluster.address])
print(json.dumps({"resumed": code, "states": [m.status()["state"] for m in members],
                  "steps": [[r["step"] for r in m.metrics()] for m in members]}))
"""


@pytest.mark.slow
def test_a_node_lost_mid_sweep_interrupts_the_runs_placed_on_it_together_and_others_go_on(
        tmp_path, tiny_model_dir, trained_tiny_reward_dir):
    done = subprocess.run([sys.executable, "-c", NODE_LOSS, str(tmp_path), tiny_model_dir,
                           str(trained_tiny_reward_dir)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    lost, resumed = (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    for status in lost["members"]:  # the group's two runs, interrupted together, resumably
        assert status["state"] == "interrupted" and "node running the task was lost" in status["error"]
    assert "still running" not in lost["events"]
    assert lost["alone"]["state"] in ("running", "completed")  # the run in the other task went on
    assert resumed["resumed"] == 0 and resumed["states"] == ["completed", "completed"]
    assert all(steps == list(range(1, 61)) for steps in resumed["steps"])


MEMORY_MONITOR = """
import os, sys
# Ray's memory monitor kills the worker of a running task once the node uses more than this share of its memory:
# set below what any node uses, it kills the run's task as soon as it runs (it never kills the driver)
os.environ["RAY_memory_usage_threshold"] = "0.01"
os.environ["RAY_memory_monitor_refresh_ms"] = "100"
os.environ["RAY_task_oom_retries"] = "0"
from rlhf_engine.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_task_killed_by_the_memory_monitor_has_the_reason_in_its_run(tmp_path, tiny_model_dir,
                                                                     trained_tiny_reward_dir):
    out = tmp_path / "oom"
    done = subprocess.run([sys.executable, "-c", MEMORY_MONITOR, "sweep", "--out", str(out), "--kl-coefs", "0.1",
                           "--ray", "auto", "--retries", "0", *_sweep_flags(tiny_model_dir, trained_tiny_reward_dir)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    run = RunFolder(tmp_path / "oom-beta-0.1")
    status = run.status()
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert status["state"] == "interrupted" and "memory monitor" in status["error"], status
    assert "memory monitor" in run.events()
