"""The room's job queue: K slots, turns across owners, a cap, who may stop what, its state file read back after a
restart (waiting jobs in order, live job processes adopted, dead ones interrupted); detached job processes; the
slot plan and a job's memory estimate. Thread jobs that wait on events stand in for training (no model)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from rlhf_engine.runs.job import CPUS_ENV, THREADS_ENV, AdoptedJob, Job, ProcessJob, apply_job_resources, parse_cpus
from rlhf_engine.runs.queue import JobQueue, QueueFull
from rlhf_engine.runs.runfolder import RunFolder

GIB = 2 ** 30


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Jobs:
    """Thread jobs whose bodies wait for their own release; all released at the end of a test."""

    def __init__(self, root):
        self.root, self.releases, self.started = root, {}, []

    def __call__(self, name: str) -> Job:
        run = RunFolder(self.root / name)
        run.create("test", {}, 1)
        release = self.releases[name] = threading.Event()

        def body(job):
            self.started.append(name)
            return "completed" if release.wait(30) else "failed"

        return Job(run, body)

    def release(self, name: str) -> None:
        self.releases[name].set()

    def release_all(self) -> None:
        for event in self.releases.values():
            event.set()


@pytest.fixture
def jobs(tmp_path):
    made = Jobs(tmp_path / "runs")
    yield made
    made.release_all()


@pytest.fixture
def children():
    """Processes a test starts: killed and reaped at its end."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def sleeper(run: RunFolder, children: list) -> subprocess.Popen:
    """A detached process standing in for a job process of ``run``: it names the run folder on its command line,
    as ``run-job`` does; its run's status says running with its pid."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(run.path)],
                               start_new_session=True, stdin=subprocess.DEVNULL)
    children.append(process)
    write_status(run, "running", process.pid)
    return process


def write_status(run: RunFolder, state: str, pid: int) -> None:
    status = json.loads((run.path / "status.json").read_text())
    (run.path / "status.json").write_text(json.dumps({**status, "state": state, "pid": pid}))


def queued_run(root, name: str) -> RunFolder:
    run = RunFolder(root / name)
    run.create("test", {}, 1)
    return run


# ---- slots, turns, cap, stop --------------------------------------------------------------------------------------

def test_two_slots_run_two_jobs_at_once(jobs):
    queue = JobQueue(slots=2)
    a, b, c = (queue.submit(jobs(name)) for name in "abc")
    wait_until(lambda: a.state == b.state == "running")
    assert c.state == "queued" and [queue.position(j) for j in (a, b, c)] == [0, 0, 1]
    jobs.release("a")
    wait_until(lambda: c.state == "running")
    jobs.release_all()
    assert queue.wait_idle(10) and a.state == b.state == c.state == "completed"


def test_owners_take_turns(jobs):
    """One slot; A submits three jobs, then B and C one each: B's and C's first jobs start before A's second."""
    queue = JobQueue(slots=1)
    submitted = {}
    for owner, name in (("A", "a1"), ("A", "a2"), ("A", "a3")):
        submitted[name] = queue.submit(jobs(name), owner=owner)
    wait_until(lambda: jobs.started == ["a1"])
    submitted["b1"] = queue.submit(jobs("b1"), owner="B")
    submitted["c1"] = queue.submit(jobs("c1"), owner="C")
    order = ["a1", "b1", "c1", "a2", "a3"]
    assert [j.run.id for j in queue.jobs()] == order
    assert [queue.position(submitted[n]) for n in order] == [0, 1, 2, 3, 4]
    assert [j.run.id for j in queue.jobs(owner="A")] == ["a1", "a2", "a3"]
    assert queue.owner_of(submitted["c1"]) == "C"
    for name in order:
        wait_until(lambda: jobs.started[-1] == name)
        jobs.release(name)
    assert queue.wait_idle(10) and jobs.started == order


def test_a_group_job_counts_for_each_of_its_owners(jobs):
    queue = JobQueue(slots=1)
    queue.submit(jobs("blocker"), owner="X")
    group = jobs("group")
    group.owners = ["A", "B"]  # one job holding A's and B's runs
    queue.submit(group, owner="A")
    queue.submit(jobs("b2"), owner="B")
    queue.submit(jobs("c1"), owner="C")
    assert [j.run.id for j in queue.jobs()] == ["blocker", "group", "c1", "b2"]  # b2 is B's second
    assert [j.run.id for j in queue.jobs(owner="B")] == ["group", "b2"]
    with pytest.raises(PermissionError):
        queue.stop(group, by="B")  # a member of the group may not stop the others' runs with it
    queue.stop(group, by="A")  # who submitted it may
    assert group.state == "stopped"
    jobs.release_all()
    assert queue.wait_idle(10)


def test_the_cap_refuses_a_job_beyond_it(jobs):
    queue = JobQueue(slots=1, cap=2)
    queue.submit(jobs("a1"), owner="A")
    wait_until(lambda: jobs.started == ["a1"])
    queue.submit(jobs("a2"), owner="A")
    queue.submit(jobs("a3"), owner="A")  # running ones do not count: two waiting
    with pytest.raises(QueueFull, match="you have 2 jobs waiting, the room's cap; wait for one to start or stop one"):
        queue.submit(jobs("a4"), owner="A")
    queue.submit(jobs("b1"), owner="B")  # others are not held back
    assert isinstance(QueueFull("x"), ValueError)
    jobs.release_all()
    assert queue.wait_idle(10)


def test_only_the_owner_or_the_teacher_may_stop_a_run(jobs):
    queue = JobQueue(slots=1)
    running = queue.submit(jobs("a1"), owner="p-aaaaaaaa")
    waiting = queue.submit(jobs("a2"), owner="p-aaaaaaaa")
    wait_until(lambda: running.state == "running")
    with pytest.raises(PermissionError, match="only the run's owner or the teacher can stop it"):
        queue.stop(running, by="p-bbbbbbbb")
    with pytest.raises(PermissionError):
        queue.stop(waiting, by="p-bbbbbbbb")
    assert not running.stop_event.is_set() and running.state == "running" and queue.position(waiting) == 1
    queue.stop(waiting, by="p-aaaaaaaa")
    assert waiting.state == "stopped" and "stop asked by its owner" in waiting.run.events()
    queue.stop(running, by="teacher")
    assert running.stop_event.is_set() and "stop asked by the teacher" in running.run.events()
    jobs.release_all()
    assert queue.wait_idle(10)


def test_the_wait_is_estimated_from_completed_jobs(jobs, tmp_path):
    queue = JobQueue(slots=1, state_file=tmp_path / "queue.json")
    first = queue.submit(jobs("first"))
    assert queue.estimate_wait_s(first) == 0.0
    jobs.release("first")
    assert queue.wait_idle(10)
    durations = json.loads((tmp_path / "queue.json").read_text())["durations_s"]
    assert len(durations) == 1
    running, waiting = queue.submit(jobs("a")), queue.submit(jobs("b"))
    wait_until(lambda: running.state == "running")
    assert queue.estimate_wait_s(waiting) is not None and queue.estimate_wait_s(waiting) >= 0
    assert JobQueue().estimate_wait_s(waiting) is None  # not held there
    jobs.release_all()
    assert queue.wait_idle(10)


# ---- the state file, read back after a restart --------------------------------------------------------------------

def test_a_restarted_queue_keeps_the_waiting_order_and_adopts_a_live_job(jobs, tmp_path, children):
    first = JobQueue(slots=1, state_file=tmp_path / "queue.json")
    first.submit(jobs("blocker"), owner="X")
    for owner, name in (("A", "a1"), ("A", "a2"), ("B", "b1")):
        first.submit(ProcessJob(queued_run(tmp_path / "runs", name), detached=True, env={"K": "v"}), owner=owner)
    order = [j.run.id for j in first.jobs()[1:]]
    assert order == ["a1", "b1", "a2"]
    # the server dies with a job process running (a detached one lives on) and three waiting
    state = json.loads((tmp_path / "queue.json").read_text())
    live = queued_run(tmp_path / "runs", "live")
    process = sleeper(live, children)
    state["running"] = [{"run": str(live.path), "owner": "X", "seq": 0, "turn": 0, "submitted_at": time.time(),
                         "pid": process.pid, "started_at": time.time() - 60}]
    (tmp_path / "restarted.json").write_text(json.dumps(state))

    second = JobQueue(slots=1, state_file=tmp_path / "restarted.json")
    second.restore()
    held = second.jobs()
    assert [j.run.id for j in held] == ["live", *order]
    assert isinstance(held[0], AdoptedJob) and second.position(held[0]) == 0 and held[0].alive
    assert all(isinstance(j, ProcessJob) and j.detached and j.env == {"K": "v"} for j in held[1:])
    assert [second.owner_of(j) for j in held] == ["X", "A", "B", "A"]
    assert all(j.run.status()["state"] == "queued" for j in held[1:])  # not read as interrupted
    assert all(j.process is None for j in held[1:])  # none started: the adopted job holds the slot
    for job in held[1:]:
        second.stop(job)
    second.stop(held[0], by="teacher")  # SIGINT to its group
    assert process.wait(10) != 0
    assert second.wait_idle(10) and live.status()["state"] == "stopped"
    for job in first.jobs()[1:]:
        first.stop(job)
    jobs.release_all()
    assert first.wait_idle(10)


def test_adopted_jobs_beyond_the_slots_are_stopped_and_a_gone_one_is_interrupted(tmp_path, children):
    runs = [queued_run(tmp_path / "runs", name) for name in ("kept", "extra", "gone")]
    kept, extra = sleeper(runs[0], children), sleeper(runs[1], children)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    write_status(runs[2], "running", gone.pid)
    now = time.time()
    entries = [{"run": str(run.path), "owner": f"p{i}", "seq": i, "turn": 0, "submitted_at": now,
                "pid": pid, "started_at": now + i} for i, (run, pid) in enumerate(zip(runs, (kept.pid, extra.pid,
                                                                                           gone.pid)))]
    (tmp_path / "queue.json").write_text(json.dumps({"seq": 3, "turn": 0, "running": entries, "waiting": [],
                                                     "durations_s": [12.0]}))
    queue = JobQueue(slots=1, state_file=tmp_path / "queue.json")
    queue.restore()
    assert extra.wait(10) != 0 and kept.poll() is None  # the one over the slot got SIGINT; the first goes on
    assert "stopped after the server restarted" in runs[1].events()
    wait_until(lambda: runs[1].status()["state"] == "stopped")
    status = runs[2].status()
    assert status["state"] == "interrupted"
    assert status["error"] == ("the server restarted and the job's process was gone; Resume continues from the "
                               "last checkpoint")
    # the stopped one leaves the queue as its watcher sees its process end
    wait_until(lambda: [j.run.id for j in queue.jobs()] == ["kept"])
    assert queue.jobs()[0].pid == kept.pid
    saved = json.loads((tmp_path / "queue.json").read_text())
    assert [e["pid"] for e in saved["running"]] == [kept.pid] and saved["durations_s"] == [12.0]
    # the adopted job's process ends by itself, without writing an end: interrupted, with the reason
    os.killpg(kept.pid, signal.SIGKILL)
    kept.wait(10)
    assert queue.wait_idle(10)
    assert runs[0].status()["state"] == "interrupted" and "server had restarted" in runs[0].status()["error"]


def test_a_stale_pid_given_to_another_process_is_not_adopted(tmp_path, children):
    run = queued_run(tmp_path / "runs", "stale")
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    children.append(stranger)
    write_status(run, "running", stranger.pid)
    entry = {"run": str(run.path), "owner": "A", "seq": 0, "turn": 0, "submitted_at": 0, "pid": stranger.pid,
             "started_at": 0}
    (tmp_path / "queue.json").write_text(json.dumps({"running": [entry], "waiting": []}))
    queue = JobQueue(state_file=tmp_path / "queue.json")
    queue.restore()
    assert queue.jobs() == [] and stranger.poll() is None and run.status()["state"] == "interrupted"


# ---- job processes ------------------------------------------------------------------------------------------------

class SleepingProcessJob(ProcessJob):
    """A ProcessJob whose process sleeps (no model) after printing its environment and process group."""

    def command(self):
        code = ("import os, time; print(os.environ.get('RLHF_THREADS'), os.environ.get('RLHF_DETACHED'), "
                "os.getpgid(0) == os.getpid(), flush=True); time.sleep(30)")
        return [sys.executable, "-c", code, str(self.run.path)]


def test_a_detached_process_job_has_its_own_group_and_is_stopped_with_sigint(tmp_path):
    job = SleepingProcessJob(queued_run(tmp_path / "runs", "detached"), detached=True, env={THREADS_ENV: 3})
    queue = JobQueue(slots=1, slot_env=[{THREADS_ENV: "1", CPUS_ENV: "0"}])
    queue.submit(job)
    try:
        wait_until(lambda: (job.run.path / "process.log").is_file()
                   and (job.run.path / "process.log").read_text().strip())
        assert (job.run.path / "process.log").read_text().split() == ["3", "1", "True"]  # the job's own env wins
        assert job.env[CPUS_ENV] == "0" and job.pid is not None
        assert os.getpgid(job.pid) == job.pid != os.getpgrp()  # its own group, not the server's
        queue.stop(job)
        assert job.join(10) == "stopped" and job.process.returncode != 0
    finally:
        if job.alive:
            job.process.kill()
    assert queue.wait_idle(10)


def test_a_job_process_takes_its_cpus_and_threads_from_its_slot(monkeypatch):
    import torch

    assert parse_cpus("0-3,6") == {0, 1, 2, 3, 6} and parse_cpus("1") == {1}
    cpus, threads = os.sched_getaffinity(0), torch.get_num_threads()
    monkeypatch.setenv(CPUS_ENV, str(min(cpus)))
    monkeypatch.setenv(THREADS_ENV, "1")
    try:
        apply_job_resources()
        assert os.sched_getaffinity(0) == {min(cpus)} and torch.get_num_threads() == 1
    finally:
        os.sched_setaffinity(0, cpus)
        torch.set_num_threads(threads)


# ---- the slot plan and a job's memory ---------------------------------------------------------------------------

def test_slots_are_bounded_by_cores_and_memory_and_the_teacher_may_override():
    from rlhf_engine.room.slots import plan_slots

    by_cores = plan_slots(3 * GIB, cores=2, free_memory_bytes=int(21.3 * GIB), device="cpu")
    assert (by_cores.slots, by_cores.threads_per_job) == (2, 1)
    assert by_cores.reason == ("2 slots: 2 cores / 1 thread per job = 2; 21.3 GiB free / 3.0 GiB per job = 7; "
                               "the smaller wins")
    by_memory = plan_slots(3 * GIB, cores=16, free_memory_bytes=12 * GIB, reserved_bytes=2 * GIB, device="cpu")
    assert (by_memory.slots, by_memory.threads_per_job) == (3, 5)  # 10 GiB / 3; the 16 cores shared out
    assert "= 3; the smaller wins; each job gets 5 threads" in by_memory.reason
    assert "kept for the server's models" in by_memory.reason
    envs = by_memory.slot_envs()
    assert [env[THREADS_ENV] for env in envs] == [env["OMP_NUM_THREADS"] for env in envs] == ["5", "5", "5"]
    cpu_sets = [parse_cpus(env[CPUS_ENV]) for env in envs]
    assert all(len(c) == 5 for c in cpu_sets) and len(set.union(*cpu_sets)) == 15  # a CPU set of its own each
    override = plan_slots(3 * GIB, cores=2, free_memory_bytes=21 * GIB, override=4, device="cpu")
    assert override.slots == 4 and "SLOTS=4; the machine would give 2" in override.reason
    tiny = plan_slots(3 * GIB, cores=2, free_memory_bytes=GIB, device="cpu")
    assert tiny.slots == 1 and "a job may not fit" in tiny.reason
    gpu = plan_slots(3 * GIB, threads_per_job=1, cores=16, free_memory_bytes=GIB, gpu_free_bytes=40 * GIB)
    assert gpu.device == "cuda" and gpu.slots == 13 and "GPU memory free" in gpu.reason


def test_a_ppo_job_of_the_bundled_model_is_estimated_near_its_measured_peak():
    from rlhf_engine.config import ModelConfig, PPOConfig
    from rlhf_engine.lab.workshop import CPU, ppo_config
    from rlhf_engine.room.slots import estimate_job_memory

    model = ModelConfig(quant="none")
    workshop = estimate_job_memory(model, ppo_config(model, CPU), device="cpu")
    assert 2 * GIB <= workshop <= 4.5 * GIB  # within a factor 1.5 of the ~3 GiB measured
    benchmark = estimate_job_memory(model, PPOConfig(model=model, batch_size=8, response_length=32), device="cpu")
    assert abs(benchmark / GIB - 2.73) < 0.2  # RESULTS.md: 2.73 GiB peak RSS
    bigger = estimate_job_memory(model, PPOConfig(model=model, batch_size=32, response_length=32), device="cpu")
    assert bigger > benchmark
