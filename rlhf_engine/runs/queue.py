"""The job queue: K jobs at a time (slots), taken in turns by their owners, and kept in a file that a restarted
server reads back.

``JobQueue()`` is the single-user dashboard's: one slot, in memory, every job owned by "" and so in submission
order. A workshop room's is ``JobQueue(slots=K, cap=..., state_file=room.queue_file)`` followed by ``restore()``:
K slots (``room.slots.plan_slots``), a cap on each participant's waiting jobs, the teacher able to stop anyone's.

**Turns** (start-time fair queuing, the round robin of a shared queue). A job gets a turn number when submitted:
one past the latest turn among its owner's held jobs (running or waiting), and never below the turn of the job
that started last (``_turn``). Waiting jobs start in (turn, submission) order. So a participant's second job waits
behind every other participant's first: with one slot, A submits A1, A2, A3 (turns 0, 1, 2; A1 starts), then
B1 and C1 arrive (turn 0 each); they start in the order B1, C1, A2, A3. Someone who comes back after a pause
starts at the current turn, not at 0, so they do not jump the people who waited meanwhile; someone who floods the
queue only lengthens their own line. A job holding several owners' runs (a group, with an ``owners`` list) takes
one slot, counts as a held job of each of its owners, and takes the turn of the owner whose turn comes first.

**The state file** (atomic, rewritten on every submit, start, end and stop): the running jobs (run folder,
owner, pid, start time), the waiting ones (run folder, owner, turn, submission order and time; a ``ProcessJob``'s
detached flag and environment), the cluster of a job placed by Ray (``rlhf_engine.cluster``) and the wall times of
the last jobs that completed. ``restore`` reads it back (see there).
"""

from __future__ import annotations

import heapq
import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rlhf_engine.runs.job import AdoptedJob, Job, ProcessJob, describe_error, end_run, recorded_state, runs_job_of
from rlhf_engine.runs.runfolder import ACTIVE_STATES, RunFolder, atomic_write_text

TEACHER = "teacher"  # who may stop any job (the room's ``TEACHER``)
RECENT_DURATIONS = 20  # completed jobs whose wall time the wait estimate averages
PROCESS_GONE = ("the server restarted and the job's process was gone; Resume continues from the last checkpoint")
NOT_RESTARTABLE = ("the server restarted before the job started, and a job run in the server's own threads "
                   "cannot be queued again; Resume starts it")
TASK_GONE = ("the server restarted, and its Ray tasks ended with it (a task does not outlive the server that "
             "submitted it); Resume continues from the last checkpoint")
NO_CLUSTER = ("the server restarted without the Ray cluster this job waited for (room --ray); Resume starts it "
              "here")


class QueueFull(ValueError):
    """An owner already has the queue's cap of jobs waiting."""


@dataclass
class _Held:
    """What the queue knows of a job it holds."""

    owner: str  # who submitted it
    owners: tuple[str, ...]  # whose turns it takes: (owner,), or a group's owners
    seq: int  # submission order
    turn: int  # its turn in the round robin
    submitted_at: float  # time.time()
    started_at: float | None = None  # None while it waits
    slot: int | None = None  # the slot it runs in (None: an adopted job over the slots, being stopped)


class JobQueue:
    """Up to ``slots`` jobs run at once; the others wait (state queued) and start in turns (see the module).

    ``cap``: the most jobs an owner may have waiting (running ones not counted). ``state_file``: where the queue
    is kept (a room's queue.json); call ``restore()`` once, right after making the queue. ``teacher``: the id that
    may stop anyone's job. ``slot_env``: extra environment per slot (``SlotPlan.slot_envs()``: its threads and
    CPUs), given to a ``ProcessJob`` when it starts in that slot. ``job_factory``: how this server makes a run
    folder's job (a room on a Ray cluster: a ``RayJob``); ``restore`` makes the waiting jobs with it. A job stopped
    while it waits is marked stopped and never starts. The CLI runs one job per process and needs no queue.
    """

    def __init__(self, slots: int = 1, cap: int | None = None, state_file: Path | None = None,
                 teacher: str = TEACHER, slot_env: list[dict[str, str]] | None = None,
                 job_factory: Callable[[RunFolder], Job] | None = None) -> None:
        if slots < 1:
            raise ValueError(f"a queue needs at least one slot, got {slots}")
        self.slots, self.cap, self.teacher = int(slots), cap, teacher
        self.state_file = Path(state_file) if state_file else None
        self._slot_env = list(slot_env or [])
        self.job_factory = job_factory
        self._lock = threading.Condition()
        self._held: dict[Job, _Held] = {}  # running and waiting jobs
        self._seq = 0
        self._turn = 0  # the turn of the job that started last
        self._durations: deque[float] = deque(maxlen=RECENT_DURATIONS)

    # ---- submitting and reading -----------------------------------------------------------------------------
    def submit(self, job: Job, owner: str = "") -> Job:
        """Queue a prepared (not started) job for ``owner`` (a participant's id, or the teacher's); it starts
        when a slot is free and its turn has come. ValueError if its run is already held; QueueFull at the cap."""
        with self._lock:
            target = job.run.path.resolve()
            if any(j.run.path.resolve() == target for j in self._held):
                raise ValueError(f"run {job.run.id} is already queued or running")
            waiting = sum(1 for h in self._held.values() if h.started_at is None and owner in h.owners)
            if self.cap is not None and waiting >= self.cap:
                raise QueueFull(f"you have {waiting} job{'s' * (waiting != 1)} waiting, the room's cap; "
                                "wait for one to start or stop one")
            owners = _owners(job, owner)
            self._held[job] = _Held(owner, owners, self._seq, self._next_turn(owners), time.time())
            self._seq += 1
            try:
                self._save(strict=True)
            except OSError:  # not recorded (a full disk): not taken either, or a restart would lose it unsaid
                del self._held[job]
                raise
            self._fill()
        return job

    def jobs(self, owner: str | None = None) -> list[Job]:
        """The running jobs (in the order they started) and then the waiting ones in the order they will start;
        only ``owner``'s (as submitter or member of a group) when given."""
        with self._lock:
            held = self._running() + self._waiting()
            return held if owner is None else [j for j in held if owner in self._held[j].owners]

    def find(self, run_path: Path) -> Job | None:
        """The queued or running job of a run folder, if this queue holds one."""
        target = Path(run_path).resolve()
        return next((j for j in self.jobs() if j.run.path.resolve() == target), None)

    def position(self, job: Job) -> int:
        """0 for a running job, 1 for the next to start, and so on; -1 if not held."""
        with self._lock:
            if job not in self._held:
                return -1
            waiting = self._waiting()
            return waiting.index(job) + 1 if job in waiting else 0

    def owner_of(self, job: Job) -> str | None:
        """Who submitted a held job; None if the queue does not hold it."""
        with self._lock:
            info = self._held.get(job)
            return info.owner if info else None

    def estimate_wait_s(self, job: Job) -> float | None:
        """Roughly how many seconds until a waiting job starts; 0 for a running one; None if the queue does not
        hold it or no job has completed in it yet.

        Every job is taken to last the mean wall time of the last completed ones (``RECENT_DURATIONS``): a running
        job frees its slot after that mean less the time it has run (at once if it ran longer), then the jobs
        ahead take the first free slot in turn, each for the mean.
        """
        with self._lock:
            info = self._held.get(job)
            if info is None or info.started_at is not None:
                return None if info is None else 0.0
            if not self._durations:
                return None
            mean, now = sum(self._durations) / len(self._durations), time.time()
            remaining = [max(mean - (now - self._held[j].started_at), 0.0) for j in self._running()]
            free_at = sorted(remaining + [0.0] * max(self.slots - len(remaining), 0))[:self.slots]
            heapq.heapify(free_at)
            for _ in range(self._waiting().index(job)):  # the jobs ahead of it
                heapq.heappush(free_at, heapq.heappop(free_at) + mean)
            return free_at[0]

    def add_owner(self, job: Job, owner: str) -> None:
        """Count a held job in one more owner's turns (a run of theirs joined the group it trains)."""
        with self._lock:
            info = self._held.get(job)
            if info is not None and owner not in info.owners:
                info.owners = (*info.owners, owner)
                self._save()

    # ---- stopping ---------------------------------------------------------------------------------------------
    def stop(self, job: Job, by: str | None = None, by_label: str | None = None) -> None:
        """Stop a running job (it checkpoints and ends) or take a waiting one off the queue (marked stopped).

        ``by``: who asks, the job's owner (who submitted it) or the teacher; anyone else gets PermissionError, a
        member of a group job too (stopping the group would stop the others' runs). The run's events.log
        says who asked ("stop asked by the teacher", "... by its owner", or ``by_label``, a display name).
        ``by`` None: the single-user dashboard, which asks nobody.
        """
        with self._lock:
            info = self._held.get(job)
            if by is not None and by != self.teacher:
                if info is None:
                    return  # not held: nothing of theirs to stop here
                if by != info.owner:  # a group's other members stop their own runs in it, not the group
                    raise PermissionError("only the run's owner or the teacher can stop it")
            if by is not None:
                job.run.log(f"stop asked by {by_label or ('the teacher' if by == self.teacher else 'its owner')}")
            waiting = info is not None and info.started_at is None
            if waiting:
                del self._held[job]
                self._save()
                self._lock.notify_all()
            job.stop()  # under the lock: never between a job's start and the queue knowing it started
        if waiting:
            mark_stopped_before_start(job)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is running or waiting; return whether that happened in time."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._held, timeout)

    # ---- restoring after a restart ----------------------------------------------------------------------------
    def restore(self) -> None:
        """Take back the queue a previous server left in ``state_file``; call it before any submit.

        Waiting jobs wait again, in the same order (as ``ProcessJob``s, detached as before; made by ``job_factory``
        when the queue has one, so a job queued for a Ray cluster waits for it again). A running job whose
        process is still alive (a detached job outlives its server) and whose run is still active is adopted
        (``AdoptedJob``) and holds a slot; those beyond the slots are stopped (SIGINT: they checkpoint and end)
        and hold their slot until they have ended, so no more than ``slots`` jobs ever train at once. A running
        job whose process is gone, its run still active, is marked interrupted with the reason; so is a running
        Ray task's, with its runs (a task dies with the server that submitted it: it cannot be adopted).
        """
        if self.state_file is None or not self.state_file.is_file():
            return
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # unreadable: start with an empty queue (the runs' folders still say what happened)
        with self._lock:
            self._seq = int(state.get("seq", 0))
            self._turn = int(state.get("turn", 0))
            self._durations.extend(float(d) for d in state.get("durations_s", []))
            self._adopt(state.get("running", []))
            self._requeue(state.get("waiting", []))
            self._seq = max([self._seq, *(h.seq + 1 for h in self._held.values())])
            self._save()
            self._fill()

    def _adopt(self, entries: list[dict]) -> None:
        runs = [RunFolder(e["run"]) for e in entries]
        active = [recorded_state(run) in ACTIVE_STATES for run in runs]
        alive = [a and runs_job_of(e.get("pid"), run) for e, run, a in zip(entries, runs, active)]
        kept = 0
        for entry, run, was_active, is_alive in zip(entries, runs, active, alive):
            if entry.get("cluster"):
                _end_placed(run)
                continue
            if not is_alive:
                if was_active:
                    run.log("the server restarted; the job's process was gone")
                    end_run(run, "interrupted", PROCESS_GONE)
                continue
            job = AdoptedJob(run, entry["pid"])
            owner = entry.get("owner", "")
            self._held[job] = _Held(owner, tuple(entry.get("owners") or (owner,)), int(entry.get("seq", 0)),
                                    int(entry.get("turn", 0)), float(entry.get("submitted_at", time.time())),
                                    started_at=float(entry.get("started_at") or time.time()),
                                    slot=kept if kept < self.slots else None)
            if kept < self.slots:
                run.log("the server restarted; its job process was still running and is followed again")
            else:
                run.log(f"stopped after the server restarted: {sum(alive)} jobs were running and the queue now has "
                        f"{self.slots} slot{'s' * (self.slots != 1)}; Resume continues from its checkpoint")
                job.stop()
            kept += 1
            self._follow(job)

    def _requeue(self, entries: list[dict]) -> None:
        for entry in sorted(entries, key=lambda e: int(e.get("seq", 0))):
            run = RunFolder(entry["run"])
            if recorded_state(run) != "queued":
                continue  # stopped, resumed elsewhere or deleted meanwhile
            if not (entry.get("process") or entry.get("cluster")):
                end_run(run, "interrupted", NOT_RESTARTABLE)
                continue
            if entry.get("cluster") and self.job_factory is None:
                end_run(run, "interrupted", NO_CLUSTER)
                continue
            run.set_status("queued")  # this server's pid: the run reads as queued, not as interrupted
            job = self.job_factory(run) if self.job_factory is not None else \
                ProcessJob(run, detached=bool(entry.get("detached")), env=entry.get("env"))
            owner = entry.get("owner", "")
            self._held[job] = _Held(owner, tuple(entry.get("owners") or (owner,)), int(entry.get("seq", 0)),
                                    int(entry.get("turn", 0)), float(entry.get("submitted_at", time.time())))

    # ---- the scheduler (called with the lock held) ------------------------------------------------------------
    def _running(self) -> list[Job]:
        return sorted((j for j, h in self._held.items() if h.started_at is not None),
                      key=lambda j: (self._held[j].started_at, self._held[j].seq))

    def _waiting(self) -> list[Job]:
        return sorted((j for j, h in self._held.items() if h.started_at is None),
                      key=lambda j: (self._held[j].turn, self._held[j].seq))

    def _next_turn(self, owners: tuple[str, ...]) -> int:
        def turn_of(owner: str) -> int:
            latest = [h.turn for h in self._held.values() if owner in h.owners]
            return max([self._turn, *(t + 1 for t in latest)])
        return min(turn_of(owner) for owner in owners)

    def _fill(self) -> None:
        """Start waiting jobs while slots are free."""
        while True:
            running, waiting = self._running(), self._waiting()
            if not waiting or len(running) >= self.slots:
                return
            used = {self._held[j].slot for j in running}
            job = waiting[0]
            info = self._held[job]
            info.started_at, info.slot = time.time(), min(s for s in range(self.slots) if s not in used)
            self._turn = max(self._turn, info.turn)
            if isinstance(job, ProcessJob) and info.slot < len(self._slot_env):
                job.env = {**self._slot_env[info.slot], **job.env}
            self._save()
            self._follow(job)

    def _follow(self, job: Job) -> None:
        threading.Thread(target=self._run, args=(job,), name=f"job-queue-{job.run.id}", daemon=True).start()

    def _run(self, job: Job) -> None:
        """A job's own thread: start it (unless it was stopped before its start), wait for its end, free its slot.

        Starting and stopping both happen under the lock, so a Stop is never lost between the two, nor sent twice.
        """
        try:
            with self._lock:
                stopped_before_start = job.stop_event.is_set() and not job.alive
                if not stopped_before_start:
                    job.start()
                    self._save()  # its pid
            if stopped_before_start:
                mark_stopped_before_start(job)
            else:
                job.join()
        except Exception as err:  # noqa: BLE001 - a job that cannot start must not hold its slot for good
            job.run.log(f"failed to start: {describe_error(err)}")
            end_run(job.run, "failed", describe_error(err))
        finally:
            with self._lock:
                info = self._held.pop(job, None)
                if info is not None and info.started_at is not None and job.state == "completed":
                    self._durations.append(time.time() - info.started_at)
                self._save()
                self._fill()
                self._lock.notify_all()

    def _save(self, strict: bool = False) -> None:
        """Write the state file (if any) atomically. A write that fails (a full disk) leaves the previous file
        whole; the queue goes on in memory and the next change writes the file again. ``strict``: raise instead
        (``submit``: the job is then not taken)."""
        if self.state_file is None:
            return
        running = [{**self._entry(j), "pid": getattr(j, "pid", None), "started_at": self._held[j].started_at}
                   for j in self._running()]
        waiting = [{**self._entry(j), "process": isinstance(j, ProcessJob),
                    "detached": bool(getattr(j, "detached", False)), "env": dict(getattr(j, "env", {}))}
                   for j in self._waiting()]
        state = {"seq": self._seq, "turn": self._turn, "slots": self.slots, "running": running, "waiting": waiting,
                 "durations_s": [round(d, 1) for d in self._durations]}
        try:
            atomic_write_text(self.state_file, json.dumps(state, indent=2) + "\n")
        except OSError as err:
            if strict:
                raise
            print(f"the queue's state could not be saved to {self.state_file}: {describe_error(err)}",
                  file=sys.stderr)

    def _entry(self, job: Job) -> dict:
        info = self._held[job]
        entry = {"run": str(job.run.path.resolve()), "owner": info.owner, "seq": info.seq, "turn": info.turn,
                 "submitted_at": info.submitted_at}
        cluster = getattr(job, "cluster", None)  # a RayJob's
        if cluster is not None:
            entry["cluster"] = cluster.address
        return {**entry, "owners": list(info.owners)} if info.owners != (info.owner,) else entry


def _owners(job: Job, owner: str) -> tuple[str, ...]:
    """Whose turns a job takes: a group's ``owners`` (a job holding several owners' runs), else its submitter."""
    group = getattr(job, "owners", None)
    return tuple(dict.fromkeys(group)) if group else (owner,)


def _end_placed(run: RunFolder) -> None:
    """A Ray task's job and its runs, still active after the server that submitted it restarted: interrupted."""
    from rlhf_engine.runs.members import end_job_runs

    end_job_runs(run, "interrupted", TASK_GONE, "the server restarted; its Ray task ended with it")


def mark_stopped_before_start(job) -> None:
    job.run.log("stopped before it started")
    end_run(job.run, "stopped")
