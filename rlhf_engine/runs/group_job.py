"""A group job: policy runs of several people (a workshop room's participants) trained side by side in one process
on one copy of the base model, runs joining between steps and leaving when done.

The group's folder is a run folder of kind "group" (its job's state, step and process.log), kept wherever the
caller says (a room keeps it in the room's folder). Its members are ordinary policy run folders, each prepared
alone (``policy_job.prepare_policy_job``) in its owner's workspace; each keeps its own adapter, value head,
optimiser, random streams and reward model (``side_by_side.RunsOnOneBase``) and writes its own run folder exactly
as alone, so every page, the report and Resume read it unchanged. Runs train together only when decoding together
means the same for each (``group_key``: base model, method, response length, temperature, chat template).

    <group>/members.jsonl   one line per run added ({"run", "owner", "id", "added_at"}), appended, never rewritten;
                            a {"closed": ...} line when the group takes no more: the runs added after it are not its
    <run>/stop-requested    ``stop_member``: the group checkpoints that run at the next step boundary, as stopped

Joining: ``add_member`` appends a line; between steps the group reads the new lines and a newcomer takes its
step 1 with the others' next step (a run added again after it stopped or failed resumes from its checkpoint). A
run that finished its steps leaves, completed; one that fails (a non-finite score, say) fails alone with its
reason. With no run left the group waits ``grace_s`` seconds (GRACE_S by default) for a newcomer, then closes and
ends. Stopping the group's job (SIGINT to its process) stops every run, each with a checkpoint. The group's
status.json has its state, step (steps taken), its ``members`` (run, owner, state, step joined) and ``owners``,
the owners of the runs it is training or about to; ``owners_of`` reads every run's owner from members.jsonl
(``group_job`` gives its Job those ``owners``: a queue counts the job in each owner's turns).
"""

from __future__ import annotations

import json
import os
import time
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path

from rlhf_engine.config import from_dict
from rlhf_engine.methods import registry
from rlhf_engine.runs.job import Job, describe_error, recorded_state
from rlhf_engine.runs.runfolder import ACTIVE_STATES, RunFolder, safe_name

GROUP_KIND = "group"
MEMBERS_FILE = "members.jsonl"
STOP_FILE = "stop-requested"
GRACE_S = 5.0  # seconds a group with no run left waits for a newcomer before it ends (a run added meanwhile joins)
POLL_S = 0.2  # how often a waiting group reads members.jsonl
ENDED = ("completed", "stopped", "failed")  # a run in one of these states has left the group


def group_key(run_path: Path | RunFolder) -> tuple | None:
    """What runs trained in one group must share, for their answers to be decoded as one batch: the base model
    (source, quantization, dtype, device, CPU matmul), the method, response length, temperature and chat template.
    None for a folder that cannot join a group (not a policy run, or unreadable)."""
    run = run_path if isinstance(run_path, RunFolder) else RunFolder(Path(run_path))
    try:
        saved = run.config()
        kind = saved["kind"]
        if not registry.is_policy_kind(kind):
            return None
        config = from_dict(registry.get(kind).config, saved["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    model = config.model
    return (kind, model.source, model.quant, model.dtype, model.device, model.cpu_matmul, model.chat_template,
            config.response_length, config.temperature)


def prepare_group(folder: Path, members: list[Path], owners: list[str | None] | None = None,
                  grace_s: float = GRACE_S) -> RunFolder:
    """Create the group's run folder (state queued) with ``members`` (prepared policy run folders, ``owners[i]``
    owning ``members[i]``); not started (``group_job`` is its Job; ``python -m rlhf_engine run-job <folder>`` runs
    it). Refuses members that cannot train together (``group_key``) or are running or completed already."""
    folder = Path(folder)
    safe_name(folder.name, "group name")
    owners = list(owners) if owners is not None else [None] * len(members)
    if not members or len(owners) != len(members):
        raise ValueError("a group needs at least one run, and one owner (or None) per run")
    paths = [Path(m).resolve() for m in members]
    if len(set(paths)) != len(paths):
        raise ValueError("a run is named twice in the group")
    key = _joinable(paths[0])
    for path in paths[1:]:
        if _joinable(path) != key:
            raise ValueError(f"{path.name} cannot train beside {paths[0].name}: {_difference(path, paths[0])}")
    group = RunFolder(folder)
    group.create(GROUP_KIND, {"key": list(key), "grace_s": grace_s}, 0)
    for path, owner in zip(paths, owners):
        (path / STOP_FILE).unlink(missing_ok=True)  # a stop asked of an earlier time
        _append(folder, _entry(path, owner))
    group.set_status("queued", members=[{"run": str(p), "owner": o, "state": "queued"} for p, o in zip(paths, owners)],
                     owners=sorted({o for o in owners if o is not None}))
    return group


def add_member(group_folder: Path, run_path: Path, owner: str | None = None) -> bool:
    """Add a prepared policy run to a group: it joins at the group's next step boundary. True when the group will
    train it; False when the group has ended or is ending (the caller starts it another way). Raises ValueError
    for a run that cannot train beside the group's (``group_key``), is in it already, or is running or completed."""
    group = RunFolder(Path(group_folder))
    if group.config().get("kind") != GROUP_KIND:
        raise ValueError(f"{group.path} is not a group")
    path = Path(run_path).resolve()
    if _joinable(path) != tuple(group.config()["key"]):
        raise ValueError(f"{path.name} cannot train in group {group.id}: another base model, method, response "
                         "length, temperature or chat template")
    if _in_group(group, path):
        raise ValueError(f"{path.name} is in group {group.id} already")
    if group.status().get("state") not in ACTIVE_STATES and recorded_state(group) != "queued":
        return False  # ended, or its process is gone (a group prepared and not started yet takes runs)
    (path / STOP_FILE).unlink(missing_ok=True)  # a stop asked of an earlier time
    entry = _entry(path, owner)
    _append(group.path, entry)
    lines = _lines(group.path)
    mine = next(i for i, line in enumerate(lines) if line.get("id") == entry["id"])
    return not any("closed" in line for line in lines[:mine])  # lines after the group closed are not its


def stop_member(run_path: Path) -> None:
    """Ask the group training this run to checkpoint it at its next step boundary and end it as stopped (the other
    runs go on); a run that has not joined yet ends stopped without starting."""
    (Path(run_path) / STOP_FILE).touch()


def members_of(group_folder: Path) -> list[dict]:
    """The group's runs, as added (``{"run", "owner", "id", "added_at"}``), up to its closing line."""
    lines = _lines(Path(group_folder))
    closed = next((i for i, line in enumerate(lines) if "closed" in line), len(lines))
    return lines[:closed]


def owners_of(group_folder: Path) -> list[str]:
    """The owners of the group's runs, as added (each once): whose turns a queue counts the group's job in."""
    return list(dict.fromkeys(e["owner"] for e in members_of(group_folder) if e.get("owner") is not None))


def is_group(folder: Path) -> bool:
    try:
        return RunFolder(Path(folder)).config().get("kind") == GROUP_KIND
    except (OSError, ValueError):
        return False


def group_job(folder: Path) -> Job:
    """The Job of a prepared group folder (what ``run-job`` executes for one); its ``owners`` are its runs' owners
    (``owners_of``) when it is made."""
    run = RunFolder(Path(folder))
    if not run.exists() or not is_group(folder):
        raise FileNotFoundError(f"no group at {folder}")
    job = Job(run, group_body)
    job.owners = owners_of(run.path)
    return job


def group_body(job: Job) -> str:
    """Train the group's runs side by side until none is left and none came within the grace time."""
    from rlhf_engine.core import distributed
    from rlhf_engine.runs.side_by_side import RunsOnOneBase

    if distributed.world_size() > 1:
        raise ValueError("a group trains its runs side by side in one process, not data-parallel")
    group = _Group(job, RunsOnOneBase())
    try:
        return group.run()
    except BaseException as err:  # every run still going fails with the group, saying why
        group.fail_all(describe_error(err))
        raise
    finally:
        group.wind_up()


class _Group:
    """A group's loop: between steps it reads new runs and stop requests, lets runs join and leave, and keeps the
    group's status; its runs on the base are ``runs`` (``side_by_side.RunsOnOneBase``)."""

    def __init__(self, job: Job, runs):
        self.job, self.runs = job, runs
        self.folder = job.run.path
        self.grace_s = float(job.run.config().get("grace_s", GRACE_S))
        self.read = 0  # entries of members.jsonl read so far
        self.pending: list = []  # read, not joined yet (side_by_side.Member)
        self.members: dict[str, dict] = {}  # run path -> its line in status.json's members
        self.closed = False
        self.steps = 0

    def run(self) -> str:
        while True:
            self.read_new()
            self.handle_stop_requests()
            if self.job.stop_event.is_set():
                for member in list(self.runs.live):
                    self.end(member, member.loop.stop())
                return "stopped"
            self.join_pending()
            if not self.runs.live:
                if self.wait_for_newcomers():
                    continue
                return "completed"
            for member, err in self.runs.step():
                self.fail(member, err)
            self.steps += 1
            for member in [m for m in self.runs.live if m.loop.done]:
                self.end(member, member.loop.finish())
            self.write_status()

    # -- runs coming and going ---------------------------------------------------------------------
    def read_new(self) -> int:
        """Read the runs added since the last look (up to the closing line); how many."""
        from rlhf_engine.runs.side_by_side import Member

        entries = members_of(self.folder)
        new = entries[self.read:]
        self.read = len(entries)
        for entry in new:
            if self.members.get(entry["run"], {}).get("state") not in (None, *ENDED):
                continue  # added twice: it is in the group already
            run = RunFolder(Path(entry["run"]))
            if recorded_state(run) == "completed":
                continue  # finished in an earlier process of this group (a Ray task retried): nothing to train
            self.pending.append(Member(run, entry.get("owner")))
            self.members[entry["run"]] = {"run": entry["run"], "owner": entry.get("owner"), "state": "queued"}
            if run.exists():
                run.set_status("queued")  # this process's id: if it dies, the run reads as interrupted
        if new:
            self.write_status()
        return len(new)

    def join_pending(self) -> None:
        """The runs read since the last step join: each takes its first step with the others' next."""
        pending, self.pending = self.pending, []
        for member in pending:
            others = len(self.runs.live)
            try:
                if group_key(member.run) != tuple(self.job.run.config()["key"]):
                    raise ValueError("it cannot train in this group: another base model, method, response length, "
                                     "temperature or chat template")
                loop = self.runs.join(member, self.steps)
            except Exception as err:  # noqa: BLE001 - this run fails alone
                self.fail(member, err)
                continue
            member.run.set_status("running", error=None)
            member.run.log(f"started in group {self.job.run.id} (side by side with {others} other "
                           f"run{'' if others == 1 else 's'}), at the group's step {self.steps + 1}")
            self.job.run.log(f"{member.run.path} joined at step {self.steps + 1} "
                             f"(its step {loop.trainer.step_count + 1})")
            self.members[str(member.run.path)].update(state="running", joined_at_step=self.steps + 1)
        self.write_status()

    def handle_stop_requests(self) -> None:
        """Runs whose owner asked them to stop: checkpointed and stopped (a run not joined yet stops unstarted)."""
        for member in [m for m in self.pending if (m.run.path / STOP_FILE).exists()]:
            self.pending.remove(member)
            self.end(member, "stopped")
        for member in [m for m in self.runs.live if (m.run.path / STOP_FILE).exists()]:
            self.end(member, member.loop.stop())

    def end(self, member, state: str, error: str | None = None, trace: str = "") -> None:
        """Record a run's end in its folder and the group's, and take it off the base."""
        run = member.run
        if run.exists():
            (run.path / STOP_FILE).unlink(missing_ok=True)
            run.log(state if error is None else f"failed: {error}" + (f"\n{trace}" if trace else ""))
            run.set_status(state, **({"error": error} if error else {}))
        self.job.run.log(f"{run.path}: {state}" + (f" ({error})" if error else ""))
        self.members.setdefault(str(run.path), {"run": str(run.path), "owner": member.owner}).update(
            state=state, step=member.loop.trainer.step_count if member.loop else run.status().get("step", 0))
        self.runs.leave(member)
        from rlhf_engine.runs import trackers

        trackers.close(run.path)
        self.write_status()

    def fail(self, member, err: BaseException) -> None:
        """A run's failure, alone: its reason in its status, the traceback in its events.log."""
        error = describe_error(err, step=int(member.run.status().get("step", 0)) + 1)
        self.end(member, "failed", error, "".join(traceback.format_exception(err)).rstrip())

    def fail_all(self, error: str) -> None:
        for member in list(self.runs.live):
            self.end(member, "failed", error)

    def wait_for_newcomers(self) -> bool:
        """No run left: wait up to grace_s for one to be added (True), then close the group (False unless a run was
        added just before it closed). A stop ends the wait (True: the loop then stops)."""
        deadline = time.monotonic() + self.grace_s
        while not self.closed and time.monotonic() < deadline:
            if self.job.stop_event.is_set() or self.read_new():
                return True
            time.sleep(POLL_S)
        self.close()
        return self.read_new() > 0

    def close(self) -> None:
        """Take no more runs: the closing line, after which added runs are not the group's (``add_member`` tells
        their callers so)."""
        if not self.closed:
            _append(self.folder, {"closed": _now()})
            self.closed = True

    def wind_up(self) -> None:
        """The group ends: closed, and the runs added that never joined (it stopped or failed first) stopped."""
        self.close()
        self.read_new()
        for member in self.pending:
            self.end(member, "stopped")
        self.pending = []

    def write_status(self) -> None:
        live = self.runs.live
        left = max((m.loop.config.steps - m.loop.trainer.step_count for m in live), default=0)
        owners = {m.owner for m in live + self.pending if m.owner is not None}
        self.job.run.set_status("running", step=self.steps, total_steps=self.steps + left,
                                members=list(self.members.values()), owners=sorted(owners))


# -- members.jsonl -----------------------------------------------------------------------------------------------
def _joinable(path: Path) -> tuple:
    """The run's group key; ValueError for a run that cannot join a group now."""
    run = RunFolder(path)
    if not run.exists():
        raise ValueError(f"no run at {path}")
    key = group_key(run)
    if key is None:
        raise ValueError(f"{path.name} is not a policy run: only policy runs train in a group")
    state = run.status().get("state")
    if state in ("running", "completed"):
        raise ValueError(f"{path.name} is {state}: nothing for a group to train")
    return key


def _in_group(group: RunFolder, path: Path) -> bool:
    """Whether the run was added to the group and has not left it (a run that stopped or failed may come back)."""
    left = {m["run"] for m in group.status().get("members", []) if m.get("state") in ENDED}
    added = [entry for entry in members_of(group.path) if entry["run"] == str(path)]
    return bool(added) and str(path) not in left


def _difference(a: Path, b: Path) -> str:
    names = ("method", "model source", "quantization", "dtype", "device", "CPU matmul", "chat template",
             "response length", "temperature")
    diffs = [f"{name} {x!r} against {y!r}" for name, x, y in zip(names, group_key(a), group_key(b)) if x != y]
    return "; ".join(diffs)


def _entry(path: Path, owner: str | None) -> dict:
    return {"run": str(path), "owner": owner, "id": uuid.uuid4().hex, "added_at": _now()}


def _append(folder: Path, line: dict) -> None:
    """One line appended in one write (O_APPEND): lines of several processes never interleave, and their order is
    the order they were written in."""
    data = (json.dumps(line) + "\n").encode("utf-8")
    fd = os.open(folder / MEMBERS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _lines(folder: Path) -> list[dict]:
    """members.jsonl's complete lines (a line being written, not ended yet, is left for the next read)."""
    path = folder / MEMBERS_FILE
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
