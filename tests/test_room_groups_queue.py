"""The room's queue with groups: participants' policy runs that decode alike join one group job, which takes one
slot and counts in each owner's turns; the pages see each run as a job of its own (place, owner, stop); a run
whose group waits can be stopped by its owner or the teacher only; and a group of two participants' runs trains
for real in one process, each run completed in its own workspace."""

from __future__ import annotations

import threading

import pytest

from rlhf_engine.config import ModelConfig, PPOConfig
from rlhf_engine.room.groups import MAX_GROUP_RUNS, RoomQueue, RunInGroup
from rlhf_engine.room.room import TEACHER, Room
from rlhf_engine.runs.group_job import members_of
from rlhf_engine.runs.job import Job, ProcessJob
from rlhf_engine.runs.policy_job import prepare_policy_job
from rlhf_engine.runs.queue import QueueFull
from rlhf_engine.runs.runfolder import RunFolder


def _config(tiny_model_dir, seed: int, **changes) -> PPOConfig:
    model = ModelConfig(source=tiny_model_dir, quant="none", lora_r=4, lora_alpha=8)
    settings = dict(steps=1, batch_size=2, num_mini_batches=1, ppo_epochs=1, response_length=4, seed=seed,
                    probe_every=0, probe_prompts=2)
    return PPOConfig(model=model, **{**settings, **changes})


@pytest.fixture
def room(tmp_path) -> Room:
    room = Room.open(tmp_path / "room")
    room.join("Ana")
    room.join("Bo")
    return room


def policy_run(room: Room, who, name: str, tiny_model_dir, reward_dir, **changes) -> ProcessJob:
    job = prepare_policy_job(room.workspace(who.id).ensure().runs / name, _config(tiny_model_dir, 3, **changes),
                             reward_dir)
    return ProcessJob(job.run, detached=True)


def blocked_queue(room: Room, cap: int | None = None):
    """A one-slot room queue whose slot a thread job holds until the returned event is set."""
    queue = RoomQueue(room.folder / "groups", slots=1, cap=cap, state_file=room.queue_file, teacher=TEACHER)
    release = threading.Event()
    blocker = RunFolder(room.workspace(TEACHER).ensure().runs / "blocker")
    blocker.create("reward_model", {"config": {}}, 1)
    queue.submit(Job(blocker, lambda job: "completed" if release.wait(60) else "failed"), owner=TEACHER)
    return queue, release


def test_runs_that_decode_alike_share_one_group_and_one_slot(room, tiny_model_dir, trained_tiny_reward_dir):
    ana, bo = room.participants()
    queue, release = blocked_queue(room)
    try:
        a = queue.submit(policy_run(room, ana, "a1", tiny_model_dir, trained_tiny_reward_dir), owner=ana.id)
        b = queue.submit(policy_run(room, bo, "b1", tiny_model_dir, trained_tiny_reward_dir), owner=bo.id)
        longer = queue.submit(policy_run(room, bo, "b2", tiny_model_dir, trained_tiny_reward_dir,
                                         response_length=6), owner=bo.id)
        assert isinstance(a, RunInGroup) and a.group is b.group and longer.group is not a.group
        assert [m["owner"] for m in members_of(a.group.run.path)] == [ana.id, bo.id]
        assert sorted(a.group.owners) == sorted([ana.id, bo.id])
        assert queue.find(a.run.path) is a and queue.owner_of(b) == bo.id
        assert queue.position(a) == queue.position(b) == 1 and queue.position(longer) == 2
        assert [j.run.id for j in queue.jobs(owner=bo.id)] == ["b1", "b2"]
        with pytest.raises(PermissionError):
            queue.stop(b, by=ana.id)
        queue.stop(b, by=bo.id, by_label="Bo")
        assert "stop asked by Bo" in (b.run.path / "events.log").read_text()
        queue.stop(a, by=TEACHER)  # every run of the waiting group stopped: the group leaves the queue
        assert queue.position(a.group) == -1 and RunFolder(a.run.path).status()["state"] == "stopped"
        queue.stop(longer, by=bo.id)
    finally:
        release.set()
    assert queue.wait_idle(60)


def test_waiting_runs_meet_the_cap(room, tiny_model_dir, trained_tiny_reward_dir):
    ana, _ = room.participants()
    queue, release = blocked_queue(room, cap=2)
    try:
        for n in (1, 2):
            queue.submit(policy_run(room, ana, f"a{n}", tiny_model_dir, trained_tiny_reward_dir,
                                    response_length=3 + n), owner=ana.id)
        with pytest.raises(QueueFull, match="the room's cap"):
            queue.submit(policy_run(room, ana, "a3", tiny_model_dir, trained_tiny_reward_dir), owner=ana.id)
        for job in queue.jobs(owner=ana.id):
            queue.stop(job, by=ana.id)
    finally:
        release.set()
    assert queue.wait_idle(60)


def test_pages_submitting_at_once_fill_each_group_to_its_size_while_others_read_the_queue(
        room, tiny_model_dir, trained_tiny_reward_dir):
    """Each participant's page submits from a thread of its own, while other pages read the queue every 2 s (a
    room of 20 once met "dictionary changed size during iteration" in RoomQueue.jobs)."""
    ana, bo = room.participants()
    queue, release = blocked_queue(room)
    jobs = [policy_run(room, (ana, bo)[i % 2], f"r{i}", tiny_model_dir, trained_tiny_reward_dir)
            for i in range(2 * MAX_GROUP_RUNS)]
    submitted, errors, done = [], [], threading.Event()

    def submit(part: int) -> None:
        try:
            for job in jobs[part::4]:
                submitted.append(queue.submit(job, owner=(ana, bo)[int(job.run.id[1:]) % 2].id))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def read() -> None:
        while not done.is_set():
            try:
                queue.jobs(owner=ana.id), queue.find(jobs[0].run.path)
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)

    try:
        readers = [threading.Thread(target=read) for _ in range(2)]
        writers = [threading.Thread(target=submit, args=(part,)) for part in range(4)]
        for thread in readers + writers:
            thread.start()
        for thread in writers:
            thread.join(60)
        done.set()
        for thread in readers:
            thread.join(60)
        assert errors == []
        groups = {id(run.group): run.group for run in submitted}
        sizes = sorted(len(members_of(group.run.path)) for group in groups.values())
        assert sizes == [MAX_GROUP_RUNS, MAX_GROUP_RUNS]  # every run in one group, no group over its size
        assert len(queue.jobs()) == 1 + 2 * MAX_GROUP_RUNS  # the blocker and every run
        for run in submitted:
            queue.stop(run, by=TEACHER)
    finally:
        release.set()
    assert queue.wait_idle(60)


def test_two_participants_runs_train_in_one_group_process(room, tiny_model_dir, trained_tiny_reward_dir):
    ana, bo = room.participants()
    queue = RoomQueue(room.folder / "groups", slots=1, state_file=room.queue_file, teacher=TEACHER)
    a = queue.submit(policy_run(room, ana, "a1", tiny_model_dir, trained_tiny_reward_dir), owner=ana.id)
    b = queue.submit(policy_run(room, bo, "b1", tiny_model_dir, trained_tiny_reward_dir), owner=bo.id)
    assert queue.wait_idle(240), [RunFolder(p).status() for p in (a.run.path, b.run.path)]
    for run in (a.run, b.run):
        status = RunFolder(run.path).status()
        assert status["state"] == "completed", (status, (a.group.run.path / "process.log").read_text()[-2000:])
        assert f"in group {a.group.run.id}" in (run.path / "events.log").read_text()
    assert a.group is b.group and a.group.run.status()["state"] == "completed"
