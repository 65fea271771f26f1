"""The room's one scheduler: the fair job queue (runs.queue.JobQueue) sized to this machine, or to a Ray cluster.

K slots from ``slots.plan_slots`` (cores and memory; the teacher's ``SLOTS=`` overrides), turns across
participants, at most ``WAITING_CAP`` waiting jobs each, and the queue's state in the room's ``queue.json`` so a
restarted server restores it. Each job runs in a process group of its own (a Ctrl-C to the server is not one to
the jobs) with its slot's threads and CPUs. The memory of the models the server itself keeps for every participant
(one copy of each base model: the Model page's chat, "Write two answers", the reward model's "Try it") is kept out
of the slots' memory.

With ``RLHF_ROOM_RAY`` (``room --ray``) every job the queue starts is a Ray task instead (``rlhf_engine.cluster``),
asking for its CPUs, GPU share and memory; K is then the cluster's (``slots.cluster_plan``). Without it nothing here
imports Ray.
"""

from __future__ import annotations

import os

from rlhf_engine.room.groups import GROUPS, RoomQueue, detached_process
from rlhf_engine.room.links import RAY_ENV, SLOTS_ENV
from rlhf_engine.room.room import TEACHER, Room
from rlhf_engine.room.slots import (
    SlotPlan,
    cluster_plan,
    estimate_job_memory,
    model_shape,
    parameter_counts,
    plan_slots,
)
from rlhf_engine.runs.job import parse_cpus
from rlhf_engine.runs.runfolder import RunFolder

WAITING_CAP = 3  # jobs a participant may have waiting at once (a workshop needs a reward model and a run or two)
CAP_ENV = "RLHF_ROOM_CAP"  # overrides WAITING_CAP
JOB_CPUS_ENV = "RLHF_ROOM_JOB_CPUS"  # the CPUs the jobs share, e.g. "1" or "4-15" (default: the server's own), so
# that a server pinned to some cores (taskset) gives its jobs the others
SHARED_BASES = 1  # base models the server keeps for its own work (the bundled one, unless the teacher adds more)


def room_plan(room: Room, cluster=None) -> SlotPlan:
    """The room's slots: a workshop PPO job's memory on the bundled model, the server's shared base kept apart; on
    a Ray ``cluster``, the cluster's nodes instead of this machine."""
    from rlhf_engine.lab import workshop
    from rlhf_engine.runs.workspace import default_model_config

    model = default_model_config()
    job_memory = estimate_job_memory(model, workshop.ppo_config(model))
    override = os.environ.get(SLOTS_ENV)
    if cluster is not None:
        return cluster_plan(cluster, job_memory, override=int(override) if override else None)
    cpus = os.environ.get(JOB_CPUS_ENV, "").strip()
    return plan_slots(job_memory, override=int(override) if override else None,
                      reserved_bytes=shared_models_bytes(model.source) * SHARED_BASES,
                      cpus=sorted(parse_cpus(cpus)) if cpus else None)


def shared_models_bytes(source: str) -> int:
    """Memory of one fp32 copy of a base model, as the server holds it for every participant's chat and scoring."""
    linear, embeddings = parameter_counts(model_shape(source))
    return (linear + embeddings) * 4


def room_cluster():
    """The Ray cluster of ``RLHF_ROOM_RAY``, joined by this server ("auto": a local one started in it); None
    without it. ``ClusterError`` (one line) when it cannot be used."""
    address = os.environ.get(RAY_ENV, "").strip()
    if not address:
        return None
    from rlhf_engine.cluster.connect import connect

    return connect(address)


def room_queue(room: Room) -> RoomQueue:
    """The room's queue, its state restored from the room's folder (jobs still running are adopted; on a cluster
    their tasks ended with the previous server, and their runs are interrupted)."""
    cluster = room_cluster()
    plan = room_plan(room, cluster)
    cap = int(os.environ.get(CAP_ENV, WAITING_CAP))
    factory = ray_jobs(cluster, plan.threads_per_job) if cluster is not None else None
    queue = RoomQueue(room.folder / GROUPS, slots=plan.slots, cap=cap, state_file=room.queue_file,
                      teacher=TEACHER, slot_env=plan.slot_envs(), job_factory=factory)
    queue.plan = plan  # the teacher's page states K and why
    queue.cluster = cluster  # and where the jobs run
    queue.restore()
    return queue


def ray_jobs(cluster, cpus: int):
    """The room's job factory on a cluster: a run folder's job as a Ray task asking for ``cpus`` CPUs, its memory
    and GPU share estimated when it starts (a group's runs are then those that joined it while it waited)."""
    from rlhf_engine.cluster.ray_job import RayJob

    return lambda run: RayJob(run, cluster, cpus=cpus)


def room_job(room: Room, run: RunFolder, queue: RoomQueue | None = None):
    """A room's job, made as the room's ``queue`` makes its jobs (a Ray task when the room runs on a cluster), else
    in a process group of its own, so that stopping or restarting the server leaves it to the queue."""
    if room.owner_of(run.path) is None:
        raise PermissionError(f"{run.path} is not in a workspace of this room")
    return queue.make_job(run) if queue is not None else detached_process(run)
