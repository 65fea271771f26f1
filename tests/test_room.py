"""The room's folder at the engine level: tokens, participants and their workspaces kept apart, the teacher's
settings, and a workspace downloaded as one file. No page involved (tests/test_room_pages.py has the pages)."""

from __future__ import annotations

import json
import sqlite3
import stat
import zipfile

import pytest

from rlhf_engine.config import ModelConfig
from rlhf_engine.data.pairs import PreferencePair
from rlhf_engine.room.room import TEACHER, Room, display_name
from rlhf_engine.runs.runfolder import RunFolder
from rlhf_engine.runs.workspace import Workspace, archive


def test_a_room_keeps_its_tokens_and_people_when_reopened(tmp_path):
    room = Room.open(tmp_path / "room")
    tokens = {role: room.token(role) for role in ("participant", "teacher", "projector")}
    assert len(set(tokens.values())) == 3 and all(len(t) >= 20 for t in tokens.values())
    ana = room.join("Ana")
    again = Room.open(tmp_path / "room")
    assert {role: again.token(role) for role in tokens} == tokens
    assert again.participant(ana.secret) == ana
    assert stat.S_IMODE((tmp_path / "room" / "room.json").stat().st_mode) == 0o600


def test_a_new_room_moves_the_old_one_aside(tmp_path):
    old = Room.open(tmp_path / "room")
    old_token = old.token("teacher")
    old.join("Ana")
    first = Room.open(tmp_path / "room", new=True)
    second = Room.open(tmp_path / "room", new=True)  # twice in one second: a second folder, not nested
    assert first.token("teacher") != old_token and second.participants() == []
    asides = sorted(p for p in tmp_path.iterdir() if p.name.startswith("room-"))
    assert len(asides) == 2 and all((p / "room.json").is_file() for p in asides)
    assert any(Room(p).token("teacher") == old_token for p in asides)


def test_tokens_name_their_role_and_nothing_else(tmp_path):
    room = Room.open(tmp_path / "room")
    for role in ("participant", "teacher", "projector"):
        assert room.role_of(room.token(role)) == role
    for wrong in (None, "", "x", room.token("teacher")[:-1], room.token("teacher") + "x"):
        assert room.role_of(wrong) is None
    ana = room.join("Ana")
    assert room.participant(ana.secret[:-1] + "?") is None and room.participant(None) is None
    assert room.role_of(ana.secret) is None  # a personal link is not the teacher's


def test_names_are_labels_never_paths(tmp_path):
    room = Room.open(tmp_path / "room")
    odd = room.join("../../etc/passwd\x00\n")
    assert odd.name == "../../etc/passwd" and odd.id.startswith("p-")
    assert room.workspace(odd.id).root.parent == room.folder / "participants"
    with pytest.raises(ValueError, match="enter a name"):
        room.join("  \t\n")
    first, second, third = room.join("Bo"), room.join("bo"), room.join("Bo ")
    assert (first.name, second.name, third.name) == ("Bo", "bo (2)", "Bo (3)")
    assert len({first.id, second.id, third.id}) == 3 and len({first.secret, second.secret, third.secret}) == 3
    assert len(display_name("x" * 200)) == 40
    with pytest.raises(ValueError):
        room.workspace("../p-00000000")


def test_one_participant_cannot_reach_anothers_runs_through_the_engine(tmp_path):
    room = Room.open(tmp_path / "room")
    ana, bo = room.join("Ana"), room.join("Bo")
    ana_ws, bo_ws = room.workspace(ana.id).ensure(), room.workspace(bo.id).ensure()
    run = RunFolder(bo_ws.runs / "bo-secret-run")
    run.create("ppo", {"config": {}}, 2)
    assert bo_ws.run("bo-secret-run").path == run.path
    for name in ("bo-secret-run", f"../../{bo.id}/runs/bo-secret-run", str(run.path), "..", ""):
        with pytest.raises(ValueError):
            ana_ws.run(name)
    assert not ana_ws.holds(run.path) and bo_ws.holds(run.path)
    assert room.owner_of(run.path) == bo.id and room.owner_of(ana_ws.runs) == ana.id
    assert room.owner_of(room.workspace(TEACHER).root) == TEACHER and room.owner_of(tmp_path) is None


def test_the_teacher_assigns_betas_and_methods_round_the_room(tmp_path):
    room = Room.open(tmp_path / "room")
    people = [room.join(name) for name in ("A", "B", "C", "D", "E")]
    given = room.assign([0.0, 0.05, 0.2], ["ppo", "grpo"])
    assert [given[p.id]["kl_coef"] for p in people] == [0.0, 0.05, 0.2, 0.0, 0.05]
    assert [given[p.id]["method"] for p in people] == ["ppo", "ppo", "ppo", "grpo", "grpo"]
    assert Room.open(tmp_path / "room").assignment(people[3].id) == {"kl_coef": 0.0, "method": "grpo"}
    room.update_settings(names_shown=False)
    assert room.label(people[1].id) == "participant 2" and room.label(TEACHER) == "teacher"
    with pytest.raises(ValueError, match="unknown"):
        room.update_settings(colour="red")


def test_a_workspace_downloads_as_one_zip_with_its_pairs(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    ws.save_model_config(ModelConfig(source="default"))
    ws.store().add(PreferencePair(prompt="p", chosen="a", rejected="b"), source="test")
    run = RunFolder(ws.runs / "r1")
    run.create("ppo", {"config": {}}, 2)
    (run.path / "exports").mkdir()
    (run.path / "exports" / "model.safetensors").write_bytes(b"weights")
    out = archive(ws, tmp_path / "ws.zip")
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert {"ws/model.json", "ws/runs/r1/status.json", "ws/runs/r1/exports/model.safetensors",
                "ws/pairs.sqlite"} <= names
        assert json.loads(zf.read("ws/model.json"))["source"] == "default"
        zf.extract("ws/pairs.sqlite", tmp_path / "out")
    with sqlite3.connect(tmp_path / "out" / "ws" / "pairs.sqlite") as db:
        assert db.execute("select count(*) from pairs").fetchone()[0] == 1
