"""A workshop room's folder: its three tokens, its participants (each with a workspace of their own) and the
teacher's settings. The folder is the room: a server restarted on it opens the same room with the same links.

Identity without accounts: the participants' link carries the room's token; joining with a display name gives a
participant a personal link with a secret of their own, and that secret (never the name) maps to their workspace.
The teacher's link carries a second token and the projector's a third, which shows the room's frontier only.
Tokens are compared in constant time (``hmac.compare_digest``).

Layout::

    <room>/room.json             tokens, creation time, the teacher's settings (owner-only permissions)
    <room>/participants.json     id, display name, secret and join time of each participant
    <room>/participants/<id>/    a participant's workspace (model.json, pairs.sqlite, runs/)
    <room>/teacher/              the teacher's own workspace
    <room>/queue.json            the room's job queue (see runs.queue)
"""

from __future__ import annotations

import fcntl
import hmac
import json
import os
import re
import secrets
import shutil
import unicodedata
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from rlhf_engine.runs.runfolder import atomic_write_text
from rlhf_engine.runs.workspace import Workspace

ROOM_FILE = "room.json"
PARTICIPANTS_FILE = "participants.json"
QUEUE_FILE = "queue.json"
ROLES = ("participant", "teacher", "projector")  # what each of the room's three tokens opens
TEACHER = "teacher"  # the teacher's id: the owner of the teacher's own jobs, and who may stop anyone's
MAX_NAME = 40  # characters of a display name
DEFAULT_SETTINGS = {
    "names_shown": True,  # the room's frontier labels points with participants' names (else "participant 3")
    "assignments": {},  # participant id -> {"method": ..., "kl_coef": ...} for the room's sweep
    "models": [],  # model sources a participant may pick beside the bundled one (hub ids cached on the server)
}


@dataclass(frozen=True)
class Participant:
    """One person in the room. ``id`` names their workspace folder; ``name`` is only a label."""

    id: str
    name: str
    secret: str
    joined_at: str


def display_name(text: str) -> str:
    """A participant's name as shown: control characters dropped, spaces collapsed, at most 40 characters.

    Any other character is kept (``../x`` is a fine label: it never names a folder). ValueError if nothing is left.
    """
    kept = "".join(ch for ch in str(text) if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"\s+", " ", kept).strip()[:MAX_NAME].strip()
    if not name:
        raise ValueError("enter a name to join (any letters; it is shown to the teacher and on the room's charts)")
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _same(given: str | None, token: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), token.encode())


class Room:
    """A room's folder. ``Room.open(folder)`` creates it, or reopens it with its tokens and participants."""

    def __init__(self, folder: Path):
        self.folder = Path(folder).resolve()

    # ---- opening ----------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: Path, new: bool = False) -> "Room":
        """The room in ``folder``, made if there is none. ``new``: the old room (if any) is moved aside to
        ``<folder>-<time>`` (nothing is deleted) and a new one, with new tokens, is made."""
        room = cls(folder)
        if new and room.folder.exists():
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            aside, n = room.folder.with_name(f"{room.folder.name}-{stamp}"), 1
            while aside.exists():
                n += 1
                aside = room.folder.with_name(f"{room.folder.name}-{stamp}-{n}")
            os.rename(room.folder, aside)
        room.folder.mkdir(parents=True, exist_ok=True)
        with room._locked():
            if not (room.folder / ROOM_FILE).is_file():
                tokens = {role: secrets.token_urlsafe(18) for role in ROLES}
                room._write(ROOM_FILE, {"tokens": tokens, "created_at": _now(), "settings": dict(DEFAULT_SETTINGS)})
            if not (room.folder / PARTICIPANTS_FILE).is_file():
                room._write(PARTICIPANTS_FILE, [])
        return room

    @contextmanager
    def _locked(self):
        """Joins and settings changes from several sessions (and servers) one at a time."""
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, name: str):
        return json.loads((self.folder / name).read_text(encoding="utf-8"))

    def _write(self, name: str, value) -> None:
        path = self.folder / name
        atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n", private=True)  # secrets

    # ---- tokens -----------------------------------------------------------------------------------------------
    def token(self, role: str) -> str:
        return self._read(ROOM_FILE)["tokens"][role]

    def role_of(self, token: str | None) -> str | None:
        """Which of the room's tokens this is (``participant``, ``teacher``, ``projector``), compared in constant
        time; None for anything else."""
        tokens = self._read(ROOM_FILE)["tokens"]
        found = None
        for role in ROLES:  # every token compared, whichever matches
            if _same(token, tokens[role]):
                found = role
        return found

    # ---- participants -----------------------------------------------------------------------------------------
    def participants(self) -> list[Participant]:
        """Everyone who joined, in the order they joined."""
        return [Participant(**p) for p in self._read(PARTICIPANTS_FILE)]

    def join(self, name: str) -> Participant:
        """A new participant with a workspace of their own. Two people choosing one name are both let in, the
        second labelled ``name (2)``."""
        name = display_name(name)
        with self._locked():
            people = self._read(PARTICIPANTS_FILE)
            taken = {p["name"].casefold() for p in people}
            label, n = name, 1
            while label.casefold() in taken:
                n += 1
                label = f"{name[:MAX_NAME - 5]} ({n})"
            ids = {p["id"] for p in people}
            pid = next(i for i in (f"p-{secrets.token_hex(4)}" for _ in iter(int, 1)) if i not in ids)
            person = Participant(id=pid, name=label, secret=secrets.token_urlsafe(18), joined_at=_now())
            try:
                self.workspace(person.id).ensure()
                self._write(PARTICIPANTS_FILE, [*people, asdict(person)])
            except OSError:  # a full disk: no one joined, so no workspace of no one is left behind
                shutil.rmtree(self.workspace(person.id).root, ignore_errors=True)
                raise
        return person

    def participant(self, secret: str | None) -> Participant | None:
        """The participant whose personal secret this is (constant-time compare against each), or None."""
        found = None
        for person in self.participants():
            if _same(secret, person.secret):
                found = person
        return found

    def by_id(self, pid: str) -> Participant | None:
        return next((p for p in self.participants() if p.id == pid), None)

    def workspace(self, pid: str) -> Workspace:
        """The workspace of a participant (by id), or the teacher's own (``TEACHER``)."""
        if pid == TEACHER:
            return Workspace(self.folder / TEACHER)
        if not re.fullmatch(r"p-[0-9a-f]{8}", pid):
            raise ValueError(f"{pid!r} is not a participant's id")
        return Workspace(self.folder / "participants" / pid)

    def owner_of(self, path: Path) -> str | None:
        """The participant id (or ``TEACHER``) whose workspace holds a path; None outside every workspace."""
        try:
            parts = Path(path).resolve().relative_to(self.folder).parts
        except ValueError:
            return None
        if parts[:1] == (TEACHER,):
            return TEACHER
        if len(parts) >= 2 and parts[0] == "participants":
            return parts[1]
        return None

    def label(self, pid: str) -> str:
        """How a participant is named on shared views: their name, or ``participant N`` when names are hidden."""
        if pid == TEACHER:
            return "teacher"
        people = self.participants()
        index = next((i for i, p in enumerate(people) if p.id == pid), None)
        if index is None:
            return "?"
        return people[index].name if self.settings()["names_shown"] else f"participant {index + 1}"

    # ---- the teacher's settings -------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {**DEFAULT_SETTINGS, **self._read(ROOM_FILE).get("settings", {})}

    def update_settings(self, **changes) -> dict:
        unknown = set(changes) - set(DEFAULT_SETTINGS)
        if unknown:
            raise ValueError(f"unknown room settings: {sorted(unknown)}")
        with self._locked():
            data = self._read(ROOM_FILE)
            data["settings"] = {**DEFAULT_SETTINGS, **data.get("settings", {}), **changes}
            self._write(ROOM_FILE, data)
            return data["settings"]

    def assign(self, betas: list[float], methods: list[str] | None = None) -> dict:
        """Spread values of β (and of method) over the participants in the order they joined, so that the room
        builds one sweep together: participant i gets betas[i % len(betas)] (and methods[i // len(betas) % ...])."""
        if not betas:
            raise ValueError("give at least one value of β")
        methods = methods or ["ppo"]
        assignments = {}
        for i, person in enumerate(self.participants()):
            assignments[person.id] = {"kl_coef": float(betas[i % len(betas)]),
                                      "method": methods[(i // len(betas)) % len(methods)]}
        self.update_settings(assignments=assignments)
        return assignments

    def assignment(self, pid: str) -> dict | None:
        """The β (and method) the teacher assigned this participant, if any."""
        return self.settings()["assignments"].get(pid)

    @property
    def queue_file(self) -> Path:
        return self.folder / QUEUE_FILE
