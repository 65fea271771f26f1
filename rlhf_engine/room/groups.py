"""The room's queue with participants' policy runs trained side by side (runs.group_job): a group takes one slot.

A participant's policy run is never queued alone: it joins a group of the runs that decode as it does
(``group_key``: base model, method, response length, temperature, chat template). If such a group is held by the
queue, running or waiting, with fewer than ``MAX_GROUP_RUNS`` runs, the run joins it (a running group takes it at
its next step boundary); otherwise a new group is queued with it, and takes its turn like any job. The group's job
counts in the turns of each participant with a run in it. Everything else (reward models, sweeps, best-of-n) is
queued as it is.

The queue's ``job_factory`` makes the groups' jobs (``detached_process`` unless given: a process group of its own;
on a Ray cluster, a task), as the room's ``room_job`` makes the others.

The pages see each run, not its group: ``find``, ``jobs``, ``position``, ``estimate_wait_s``, ``owner_of`` and
``stop`` answer for a ``RunInGroup`` as for a job of its own. Stopping one asks the group to checkpoint that run at
its next step boundary (the others go on); a group not started yet whose every run was stopped leaves the queue.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from pathlib import Path

from rlhf_engine.runs.group_job import (
    STOP_FILE,
    add_member,
    group_key,
    members_of,
    owners_of,
    prepare_group,
    stop_member,
)
from rlhf_engine.runs.job import Job, ProcessJob
from rlhf_engine.runs.queue import JobQueue, QueueFull
from rlhf_engine.runs.runfolder import ACTIVE_STATES, RunFolder

MAX_GROUP_RUNS = 8  # runs one group trains at once (RESULTS.md measures 8 side by side)
GROUPS = "groups"  # the groups' folders, in the room's folder


def detached_process(run: RunFolder) -> ProcessJob:
    """A room's job in a process group of its own: stopping or restarting the server leaves it to the queue."""
    return ProcessJob(run, detached=True)


class RunInGroup:
    """A participant's run as the queue shows it: it lives (and is stopped) through the group that trains it."""

    def __init__(self, run: RunFolder, group, owner: str):
        self.run, self.group, self.owner = run, group, owner

    @property
    def alive(self) -> bool:
        """Active, and so is its group: waiting (queued), or its job still running (the group's status is written by
        its process, or by its Ray task's heartbeat, and reads interrupted once that is gone)."""
        return self.state in ACTIVE_STATES and (self.group.alive or self.group.state in ACTIVE_STATES)

    @property
    def state(self) -> str:
        return self.run.status().get("state", "unknown")

    def stop(self) -> None:
        stop_member(self.run.path)

    def join(self, timeout: float | None = None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.alive and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
        return self.state


class RoomQueue(JobQueue):
    """The room's JobQueue; policy runs go through groups (see the module)."""

    def __init__(self, groups_folder: Path, **queue_args):
        super().__init__(**queue_args)
        self.groups_folder = Path(groups_folder)
        self.make_job = self.job_factory or detached_process  # a group's job, a room_job's
        self._runs: dict[Path, RunInGroup] = {}

    def submit(self, job, owner: str = ""):
        key = None if isinstance(job, Job) else group_key(job.run.path)  # a thread job trains as it is
        if key is None:
            return super().submit(job, owner)
        with self._lock:  # pages submit from threads of their own: one group's members are chosen one at a time
            return self._submit_to_group(job, key, owner)

    def _submit_to_group(self, job, key: tuple, owner: str) -> RunInGroup:
        path = job.run.path.resolve()
        if self.find(path) is not None:
            raise ValueError(f"run {job.run.id} is already queued or running")
        group = self._open_group(key)
        waiting = self._waiting_runs(owner)
        joins_running = group is not None and super().position(group) == 0
        if not joins_running and self.cap is not None and waiting >= self.cap:
            raise QueueFull(f"you have {waiting} job{'s' * (waiting != 1)} waiting, the room's cap; wait for one "
                            "to start or stop one")
        if group is not None and add_member(group.run.path, path, owner):
            group.owners = list(dict.fromkeys([*group.owners, owner]))
            self.add_owner(group, owner)
        else:
            folder = self.groups_folder / f"group-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
            folder.parent.mkdir(parents=True, exist_ok=True)
            group = self.make_job(prepare_group(folder, [path], [owner]))
            group.owners, group.key = [owner], key
            super().submit(group, owner)
        found = self._runs[path] = RunInGroup(job.run, group, owner)
        return found

    def _open_group(self, key: tuple):
        """A held group of this key with room for one more run."""
        for held in super().jobs():
            if getattr(held, "key", None) == key and len(members_of(held.run.path)) < MAX_GROUP_RUNS:
                return held
        return None

    def _waiting_runs(self, owner: str) -> int:
        return sum(1 for job in self.jobs(owner) if self.position(job) > 0)

    def jobs(self, owner: str | None = None) -> list:
        """Runs and jobs in the order they run or will start; a group is shown as its live runs."""
        shown = []
        with self._lock:  # a submit in another thread adds to self._runs
            for held in super().jobs():
                runs = self._runs_of(held)
                shown += runs if runs is not None else [held]
        return shown if owner is None else [j for j in shown if self.owner_of(j) == owner]

    def _runs_of(self, held) -> list[RunInGroup] | None:
        if getattr(held, "key", None) is None:
            return None
        return [r for r in self._runs.values() if r.group is held and r.state in ACTIVE_STATES]

    def find(self, run_path: Path):
        target = Path(run_path).resolve()
        with self._lock:
            found = self._runs.get(target)
            if found is not None and found.state in ACTIVE_STATES and super().position(found.group) >= 0:
                return found
            return super().find(target)

    def position(self, job) -> int:
        return super().position(job.group if isinstance(job, RunInGroup) else job)

    def estimate_wait_s(self, job):
        return super().estimate_wait_s(job.group if isinstance(job, RunInGroup) else job)

    def owner_of(self, job) -> str | None:
        return job.owner if isinstance(job, RunInGroup) else super().owner_of(job)

    def stop(self, job, by: str | None = None, by_label: str | None = None) -> None:
        if not isinstance(job, RunInGroup):
            return super().stop(job, by, by_label)
        if by is not None and by not in (self.teacher, job.owner):
            raise PermissionError("only the run's owner or the teacher can stop it")
        if by is not None:
            job.run.log(f"stop asked by {by_label or ('the teacher' if by == self.teacher else 'its owner')}")
        job.stop()
        if super().position(job.group) > 0 and all((Path(m["run"]) / STOP_FILE).exists()
                                                    for m in members_of(job.group.run.path)):
            super().stop(job.group)  # a group that never started, every run of it stopped: off the queue
            for member in members_of(job.group.run.path):
                RunFolder(Path(member["run"])).set_status("stopped")

    def restore(self) -> None:
        """The queue as it was (see JobQueue.restore), its groups' runs found again from their folders."""
        super().restore()
        with self._lock:
            self._restore_groups()

    def _restore_groups(self) -> None:
        for held in super().jobs():
            if self.groups_folder in held.run.path.parents:
                members = members_of(held.run.path)
                held.owners = owners_of(held.run.path)
                held.key = group_key(Path(members[0]["run"])) if members else ()
                for member in members:
                    path = Path(member["run"]).resolve()
                    self._runs[path] = RunInGroup(RunFolder(path), held, member.get("owner") or "")
