"""The room's frontier: every participant's policy runs where they stand now, on one set of axes.

A run's point is its last held-out probe (``sweep.final_point``: the same prompts and sampling seed at every probe,
so a point is not one training batch's luck), the point every sweep page draws. A run with no held-out probe yet
(none taken, or one still being written) is left out until it has one. Points carry their participant's label as
the teacher chose to show it (``Room.label``: the name, or "participant 3"), so the projector never shows more.

The best-of-n baseline (no training: the reference's best of n answers) comes from one sweep of the room: the
teacher's newest finished one if the teacher ran one, else the newest finished participant's.
"""

from __future__ import annotations

import math

from rlhf_engine.lab.sweep import SWEEP_FILE, final_point, list_sweeps
from rlhf_engine.methods import registry
from rlhf_engine.room.room import TEACHER, Room
from rlhf_engine.runs.runfolder import ACTIVE_STATES, list_runs


def run_point(run, method: str) -> dict | None:
    """A policy run's point on the room's frontier (``final_point`` on the held-out probes), or None while it
    has none. A probe step that did not answer every held-out prompt (a probe of the subset between the full ones,
    or a torn read while it is written) is not ``full`` (``probe_summary``), and ``final_point`` stands on full
    probes only: such a step is not a point yet."""
    point = final_point(run)
    if point is None or point.get("source") != "held-out" or "score_gain" not in point:
        return None
    try:
        config = run.config().get("config", {})
    except (OSError, ValueError):
        config = {}
    beta = point.get("beta") if point.get("beta") is not None else config.get("kl_coef")
    return {**point, "method": method, "beta": beta, "sqrt_kl": math.sqrt(max(point["kl"], 0.0))}


def participant_points(room: Room, pid: str) -> list[dict]:
    """The points of one participant's policy runs (every method's), newest run first, each labelled with
    ``room.label(pid)`` (``who``) and, when the participant has several, its method and β (``label``, unique)."""
    who = room.label(pid)
    points = []
    for run in room.workspace(pid).runs_of(*registry.names()):
        point = run_point(run, run.config().get("kind"))
        if point is not None:
            points.append({**point, "pid": pid, "who": who, "label": who})
    if len(points) > 1:
        for point in points:
            point["label"] = f"{who} · {_method_beta(point)}"
    seen: dict[str, int] = {}
    for point in points:  # two runs of one method at one β: told apart by their run
        seen[point["label"]] = seen.get(point["label"], 0) + 1
        if seen[point["label"]] > 1:
            point["label"] += f" · {point['run']}"
    return points


def _method_beta(point: dict) -> str:
    beta = point.get("beta")
    adaptive = " adaptive" if point.get("adaptive") else ""
    return f"{method_title(point['method'])} β{adaptive} {beta:g}" if isinstance(beta, (int, float)) else \
        method_title(point["method"])


def method_title(method: str) -> str:
    return registry.get(method).title if registry.is_policy_kind(method) else str(method)


def room_best_of_n(room: Room) -> list[dict]:
    """The rows {n, kl, score, gold?} of the room's best-of-n baseline, each with ``who`` (whose sweep it is):
    the teacher's newest finished one, else the newest finished of any participant; [] while there is none."""
    found = []
    for pid in [TEACHER, *(p.id for p in room.participants())]:
        for sweep in list_sweeps(room.workspace(pid).runs):
            rows = sweep.best_of_n()
            if rows:
                found.append((pid == TEACHER, (sweep.path / SWEEP_FILE).stat().st_mtime, pid, rows))
                break  # newest first: the newest finished one of this workspace
    if not found:
        return []
    _, _, pid, rows = max(found, key=lambda item: item[:2])
    return [{**row, "who": room.label(pid)} for row in rows]


def room_points(room: Room) -> tuple[list[dict], list[dict]]:
    """(points, best_of_n) of the room's frontier.

    points: one per policy run of every participant that has a held-out probe, in the order the participants
    joined: ``final_point``'s fields (``kl``, ``score``, ``gold``, their ``*_se``, ``prompts``, ``probe_step``,
    ``state``, ``run``) with ``method``, ``beta``, ``sqrt_kl``, ``pid`` (the owner's id), ``who`` (their label on
    shared views) and ``label`` (unique on the chart). best_of_n: ``room_best_of_n``.
    """
    points = [point for person in room.participants() for point in participant_points(room, person.id)]
    return points, room_best_of_n(room)


def room_watch(room: Room) -> tuple[tuple, bool]:
    """(signature, live) of the room's frontier, from file times and run states only (cheap: the projector asks
    every few seconds). The signature changes when a point may have moved (a probe written, a run's state, a
    best-of-n finished, a participant joined, names shown or hidden); live: a run of the room (a participant's
    or the teacher's) is queued or running."""
    parts: list = [room.settings()["names_shown"]]
    live = False
    for pid in [TEACHER, *(p.id for p in room.participants())]:
        parts.append(pid)
        for run in list_runs(room.workspace(pid).runs):
            state = run.status().get("state")
            live = live or state in ACTIVE_STATES
            parts.append((run.id, state, *(_mtime(run.path / name) for name in ("probes.jsonl", "best_of_n.json"))))
    return tuple(parts), live


def _mtime(path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
