"""A workshop room on a Ray cluster (``room --ray``): its slots sized from the cluster's nodes, its queue's state
after a restart (a waiting Ray job waits again, a running one is interrupted with the reason), the launcher's check
and environment, where the pages say a run was placed, and one room job trained as a Ray task on a local Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_room_pages import open_as

from dashboard.room import Identity
from rlhf_engine.cli import main
from rlhf_engine.cluster.connect import Cluster, Node
from rlhf_engine.room.links import RAY_ENV, SLOTS_ENV
from rlhf_engine.room.room import TEACHER, Room
from rlhf_engine.room.slots import cluster_plan
from rlhf_engine.runs.job import Job
from rlhf_engine.runs.queue import NO_CLUSTER, TASK_GONE, JobQueue
from rlhf_engine.runs.runfolder import RunFolder

ROOT = Path(__file__).resolve().parent.parent
GIB = 2 ** 30
TOKEN = "rlhf-workbench-test-token-000000"  # the local cluster's token (Ray's token auth is on by default)
PLACED = {"node": "10.0.0.7", "node_id": "ab12", "host": "gpu-7", "cpus": 2, "gpus": 0.25,
          "memory_bytes": 3 * GIB, "attempt": 2}


def cluster(*nodes: tuple[float, float], address: str = "10.0.0.1:6379") -> Cluster:
    """A cluster of nodes given as (CPUs, GiB of Ray memory), without Ray."""
    return Cluster(address, address, [Node(f"n{i}", f"10.0.0.{i + 1}", cpus, 0, int(gib * GIB))
                                      for i, (cpus, gib) in enumerate(nodes)])


# -- the slots -----------------------------------------------------------------------------------------------------

def test_slots_are_each_nodes_smaller_bound_summed_over_the_cluster():
    plan = cluster_plan(cluster((8, 12), (2, 30)), 3 * GIB)  # min(8, 4) + min(2, 10)
    assert (plan.slots, plan.threads_per_job, plan.cores) == (6, 1, 10)
    assert plan.reason.startswith("6 slots: the Ray cluster at 10.0.0.1:6379: 2 nodes, 10 CPUs")
    assert "10.0.0.1 min(8 CPUs, 12.0 GiB / 3.0 GiB per job = 4) = 4" in plan.reason
    assert "10.0.0.2 min(2 CPUs, 30.0 GiB / 3.0 GiB per job = 10) = 2" in plan.reason

    by_memory = cluster_plan(cluster((16, 8)), 3 * GIB)  # two jobs fit: each task asks for half the cores
    assert (by_memory.slots, by_memory.threads_per_job) == (2, 8)
    assert by_memory.reason.endswith("each task asks for 8 CPUs")

    teacher = cluster_plan(cluster((8, 12), (2, 30)), 3 * GIB, override=3)
    assert teacher.slots == 3 and "the teacher's SLOTS=3" in teacher.reason and "would give 6" in teacher.reason
    head_only = cluster_plan(cluster((0, 64)), 3 * GIB)  # a head started with --num-cpus=0 runs no task
    assert head_only.slots == 1 and "= 0" in head_only.reason


def test_the_room_plan_follows_the_cluster_and_the_teachers_slots(tmp_path, monkeypatch):
    from rlhf_engine.room.scheduler import room_plan

    room = Room.open(tmp_path / "room")
    monkeypatch.delenv(SLOTS_ENV, raising=False)
    big = cluster(*[(4, 64)] * 3)
    assert room_plan(room, big).slots == 12
    monkeypatch.setenv(SLOTS_ENV, "5")
    assert room_plan(room, big).slots == 5


# -- the queue's state after a restart -----------------------------------------------------------------------------

def queued_run(root: Path, name: str, state: str = "queued") -> RunFolder:
    run = RunFolder(root / name)
    run.create("reward_model", {"config": {}}, 1)
    run.set_status(state)
    return run


def test_a_restarted_queue_makes_waiting_ray_jobs_again_and_interrupts_running_ones(tmp_path):
    running, waiting = queued_run(tmp_path, "running", "running"), queued_run(tmp_path, "waiting")
    state = {"seq": 2, "turn": 0, "slots": 1,
             "running": [{"run": str(running.path), "owner": "a", "seq": 0, "turn": 0, "submitted_at": 1.0,
                          "pid": None, "started_at": 1.0, "cluster": "auto"}],
             "waiting": [{"run": str(waiting.path), "owner": "b", "seq": 1, "turn": 0, "submitted_at": 1.0,
                          "process": False, "detached": False, "env": {}, "cluster": "auto"}]}
    state_file = tmp_path / "queue.json"
    state_file.write_text(json.dumps(state))
    made = []

    def factory(run: RunFolder) -> Job:  # stands in for the room's RayJob
        made.append(run.id)
        return Job(run, lambda job: "completed")

    queue = JobQueue(slots=1, state_file=state_file, job_factory=factory)
    queue.restore()
    assert made == ["waiting"] and queue.wait_idle(30)
    assert running.status()["state"] == "interrupted" and running.status()["error"] == TASK_GONE
    assert waiting.status()["state"] == "completed"

    again = queued_run(tmp_path, "again")
    state["running"], state["waiting"][0]["run"] = [], str(again.path)
    state_file.write_text(json.dumps(state))
    JobQueue(slots=1, state_file=state_file).restore()  # restarted without --ray
    assert again.status()["state"] == "interrupted" and again.status()["error"] == NO_CLUSTER


# -- the launcher and the process path -----------------------------------------------------------------------------

def test_the_launcher_hands_the_address_to_the_server_and_refuses_a_cluster_that_does_not_answer(tmp_path, capsys):
    assert main(["room", "--dry-run", "--folder", str(tmp_path / "room"), "--room-host", "h", "--ray", "auto"]) == 0
    assert f"{RAY_ENV}=auto " in capsys.readouterr().out
    assert main(["room", "--dry-run", "--folder", str(tmp_path / "room"), "--room-host", "h",
                 "--ray", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in err and len(err.splitlines()) == 1


def test_without_ray_the_room_queue_runs_processes_and_imports_no_ray(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        os.environ.pop({RAY_ENV!r}, None)
        from rlhf_engine.room.room import Room
        from rlhf_engine.room.scheduler import room_job, room_queue
        from rlhf_engine.runs.job import ProcessJob
        room = Room.open({str(tmp_path / "room")!r})
        queue = room_queue(room)
        run = room.workspace("{TEACHER}").ensure().runs / "r"
        run.mkdir()
        from rlhf_engine.runs.runfolder import RunFolder
        job = room_job(room, RunFolder(run), queue)
        assert type(job) is ProcessJob and job.detached and queue.job_factory is None, job
        print("ray" in sys.modules, "rlhf_engine.cluster.connect" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["False", "False"]


# -- the pages -----------------------------------------------------------------------------------------------------

class PlacedQueue:
    """The room's queue as the teacher's page reads it: two running jobs, one placed by Ray, one waiting for it."""

    slots, cap, plan = 2, 3, None

    def __init__(self, jobs):
        self.held = jobs

    def jobs(self, owner=None):
        return [job for job in self.held if owner is None or job.owner == owner]

    def owner_of(self, job):
        return job.owner

    def position(self, job):
        return 0

    def find(self, path):
        return None


class PlacedJob:
    def __init__(self, run: RunFolder, owner: str):
        self.run, self.owner = run, owner


def test_the_teacher_and_the_sweep_page_say_where_ray_placed_each_run(tmp_path, monkeypatch):
    room = Room.open(tmp_path / "room")
    ana = room.join("Ana")
    monkeypatch.setenv("RLHF_ROOM", str(room.folder))
    runs = room.workspace(ana.id).ensure().runs
    placed, waiting = queued_run(runs, "placed", "running"), queued_run(runs, "waiting")
    placed.beat(placement=PLACED)
    waiting.set_status("queued", placement=None,
                       ray={"cluster": "auto", "asks": {"cpus": 1, "gpus": 0.0, "memory_bytes": 3 * GIB}})
    import dashboard.state

    monkeypatch.setattr(dashboard.state, "job_queue",
                        lambda: PlacedQueue([PlacedJob(placed, ana.id), PlacedJob(waiting, ana.id)]))
    at = open_as("pages/room.py", Identity("teacher", TEACHER, "the teacher", "teacher", "x"))
    shown = " ".join(m.value for m in at.markdown).replace("\\", "")
    assert "running on node 10.0.0.7 (gpu-7): 2 CPUs, 0.25 GPU, attempt 2" in shown
    assert "waiting for the cluster, asking for 1 CPU, 3.0 GiB" in shown

    (runs / "sw").mkdir()
    (runs / "sw" / "sweep.json").write_text(json.dumps({
        "vary": "kl_coef", "members": [{"label": "beta-0", "run": "placed", "changes": {"kl_coef": 0.0}},
                    {"label": "beta-1", "run": "waiting", "changes": {"kl_coef": 1.0}}],
        "best_of_n": None, "ray": {"cluster": "auto", "tasks": [str(placed.path), str(waiting.path)]}}))
    (runs.parent / "model.json").write_text(json.dumps({"source": "default"}))
    at = open_as("pages/sweep.py", Identity("participant", ana.id, ana.name, "p", ana.secret))
    shown = " ".join(m.value for m in [*at.markdown, *at.caption]).replace("\\", "")
    assert "placed** — running, step 0/1 · on node 10.0.0.7 (gpu-7): 2 CPUs, 0.25 GPU, attempt 2" in shown
    assert "waiting for the cluster, asking for 1 CPU, 3.0 GiB" in shown
    assert "Ran on a local Ray as 2 tasks" in shown


# -- on a local Ray ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_room_on_a_local_ray_trains_a_participants_run_as_a_ray_task(tmp_path, monkeypatch, tiny_model_dir,
                                                                        trained_tiny_reward_dir):
    from rlhf_engine.cluster.connect import disconnect
    from rlhf_engine.config import ModelConfig, PPOConfig
    from rlhf_engine.room.groups import RunInGroup
    from rlhf_engine.room.scheduler import room_job, room_queue
    from rlhf_engine.runs.policy_job import prepare_policy_job

    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv(RAY_ENV, "auto")
    monkeypatch.setenv(SLOTS_ENV, "1")
    room = Room.open(tmp_path / "room")
    ana = room.join("Ana")
    model = ModelConfig(source=tiny_model_dir, quant="none", lora_r=4, lora_alpha=8)
    config = PPOConfig(model=model, steps=1, batch_size=2, num_mini_batches=1, ppo_epochs=1, response_length=4,
                       seed=3, probe_every=0)
    run = prepare_policy_job(room.workspace(ana.id).ensure().runs / "a1", config, trained_tiny_reward_dir).run
    try:
        queue = room_queue(room)
        assert "a local Ray on this machine" in queue.plan.reason
        job = queue.submit(room_job(room, run, queue), owner=ana.id)
        assert isinstance(job, RunInGroup) and type(job.group).__name__ == "RayJob"
        assert queue.wait_idle(240), run.status()
        status = RunFolder(run.path).status()
        assert status["state"] == "completed", status
        assert status["placement"]["node"] == "127.0.0.1" and status["placement"]["attempt"] == 1
        group = job.group.run.status()
        assert group["ray"]["cluster"] == "auto" and group["ray"]["asks"]["cpus"] == queue.plan.threads_per_job
        assert not job.alive
    finally:
        disconnect()
