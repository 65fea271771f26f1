"""The room's one scheduler: the fair job queue (runs.queue.JobQueue) sized to this machine.

K slots from ``slots.plan_slots`` (cores and memory; the teacher's ``SLOTS=`` overrides), turns across
participants, at most ``WAITING_CAP`` waiting jobs each, and the queue's state in the room's ``queue.json`` so a
restarted server restores it. Each job runs in a process group of its own (a Ctrl-C to the server is not one to
the jobs) with its slot's threads and CPUs. The memory of the models the server itself keeps for every participant
(one copy of each base model: the Model page's chat, "Write two answers", the reward model's "Try it") is kept out
of the slots' memory.
"""

from __future__ import annotations

import os

from rlhf_engine.room.groups import GROUPS, RoomQueue
from rlhf_engine.room.links import SLOTS_ENV
from rlhf_engine.room.room import TEACHER, Room
from rlhf_engine.room.slots import SlotPlan, estimate_job_memory, model_shape, parameter_counts, plan_slots
from rlhf_engine.runs.job import ProcessJob, parse_cpus
from rlhf_engine.runs.runfolder import RunFolder

WAITING_CAP = 3  # jobs a participant may have waiting at once (a workshop needs a reward model and a run or two)
CAP_ENV = "RLHF_ROOM_CAP"  # overrides WAITING_CAP
JOB_CPUS_ENV = "RLHF_ROOM_JOB_CPUS"  # the CPUs the jobs share, e.g. "1" or "4-15" (default: the server's own), so
# that a server pinned to some cores (taskset) gives its jobs the others
SHARED_BASES = 1  # base models the server keeps for its own work (the bundled one, unless the teacher adds more)


def room_plan(room: Room) -> SlotPlan:
    """The room's slots: a workshop PPO job's memory on the bundled model, the server's shared base kept apart."""
    from rlhf_engine.lab import workshop
    from rlhf_engine.runs.workspace import default_model_config

    model = default_model_config()
    job_memory = estimate_job_memory(model, workshop.ppo_config(model))
    override = os.environ.get(SLOTS_ENV)
    cpus = os.environ.get(JOB_CPUS_ENV, "").strip()
    return plan_slots(job_memory, override=int(override) if override else None,
                      reserved_bytes=shared_models_bytes(model.source) * SHARED_BASES,
                      cpus=sorted(parse_cpus(cpus)) if cpus else None)


def shared_models_bytes(source: str) -> int:
    """Memory of one fp32 copy of a base model, as the server holds it for every participant's chat and scoring."""
    linear, embeddings = parameter_counts(model_shape(source))
    return (linear + embeddings) * 4


def room_queue(room: Room) -> RoomQueue:
    """The room's queue, its state restored from the room's folder (jobs still running are adopted)."""
    plan = room_plan(room)
    cap = int(os.environ.get(CAP_ENV, WAITING_CAP))
    queue = RoomQueue(room.folder / GROUPS, slots=plan.slots, cap=cap, state_file=room.queue_file,
                      teacher=TEACHER, slot_env=plan.slot_envs())
    queue.plan = plan  # the teacher's page states K and why
    queue.restore()
    return queue


def room_job(room: Room, run: RunFolder) -> ProcessJob:
    """A room's job: its own process group, so that stopping or restarting the server leaves it to the queue."""
    if room.owner_of(run.path) is None:
        raise PermissionError(f"{run.path} is not in a workspace of this room")
    return ProcessJob(run, detached=True)
