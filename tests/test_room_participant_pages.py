"""Every page in a participant's workspace, through app.py as a browser reaches it (the personal link in the query
string): each page draws with no error, shows this participant's runs and pairs only, takes no path on the Model
page, and neither a run name with a path in it nor another's queue entry reaches the other participant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rlhf_engine.config import ModelConfig, to_dict
from rlhf_engine.data.pairs import PreferencePair
from rlhf_engine.room.room import Room
from rlhf_engine.runs.job import Job
from rlhf_engine.runs.runfolder import RunFolder

APP = Path(__file__).resolve().parents[1] / "app.py"
PAGES = ["pages/home.py", "pages/workshop.py", "pages/model.py", "pages/preferences.py", "pages/reward_model.py",
         "pages/ppo.py", "pages/sweep.py", "pages/runs.py", "pages/frontier.py"]


@pytest.fixture
def room(tmp_path, monkeypatch, tiny_model_dir) -> Room:
    """Ana and Bo in a room; Bo has a run and a pair; both use the tiny model."""
    room = Room.open(tmp_path / "room")
    monkeypatch.setenv("RLHF_ROOM", str(room.folder))
    monkeypatch.setenv("RLHF_ROOM_URL", "http://127.0.0.1:8501")
    for name in ("Ana", "Bo"):
        ws = room.workspace(room.join(name).id).ensure()
        (ws.root / "model.json").write_text(json.dumps(to_dict(ModelConfig(source=tiny_model_dir, quant="none"))))
        for i in range(2):  # the reward model's form wants two pairs at least
            ws.store().add(PreferencePair(prompt=f"{name}'s secret prompt {i}", chosen="a", rejected="b"), "test")
    bo_ws = room.workspace(room.participants()[1].id)
    RunFolder(bo_ws.runs / "bo-run").create("ppo", {"config": {}}, 3)
    return room


def as_participant(room: Room, index: int, page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params["p"] = room.participants()[index].secret
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page:
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def shown(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "success", "warning", "error", "title", "subheader")
             for e in getattr(at, kind)]
    parts += [str(option) for box in at.selectbox for option in box.options]
    parts += [frame.value.to_string() for frame in at.dataframe]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_works_in_a_participants_workspace_and_shows_none_of_anothers(room, page):
    at = as_participant(room, 0, page)
    assert not at.error, [e.value for e in at.error]
    text = shown(at)
    if page == "pages/preferences.py":
        assert "Ana's secret prompt 0" in text  # the check can see a pair: Ana's own
    assert "bo-run" not in text and "Bo's secret prompt" not in text
    assert str(room.workspace(room.participants()[1].id).root) not in text


def test_the_model_page_takes_no_path_in_a_room(room):
    at = as_participant(room, 0, "pages/model.py")
    assert not at.text_input  # no hub id, folder or file path to type
    assert [str(o) for o in at.radio[0].options] == ["Bundled SmolLM2-135M-Instruct"]
    room.update_settings(models=["HuggingFaceTB/SmolLM2-360M-Instruct"])
    at = as_participant(room, 0, "pages/model.py")
    assert "HuggingFaceTB/SmolLM2-360M-Instruct" in [str(o) for o in at.radio[0].options]


def test_a_run_name_with_a_path_stays_in_the_own_workspace(room):
    ana, bo = room.participants()
    at = as_participant(room, 0, "pages/reward_model.py")
    at.text_input(key="rm.name").set_value(f"../../{bo.id}/runs/bo-run")
    at.button[0].click().run()
    assert any("not allowed" in e.value for e in at.error), [e.value for e in at.error]
    assert RunFolder(room.workspace(bo.id).runs / "bo-run").status()["state"] == "queued"  # untouched
    assert not list(room.workspace(ana.id).runs.iterdir())


def test_another_participants_queue_entry_cannot_be_stopped(room, monkeypatch):
    """Bo's job in the room's queue: Ana is refused by the queue itself and by the dashboard's check (which hides
    the Stop button); the teacher is not, and the run's events say who stopped it."""
    import threading

    from dashboard import state
    from dashboard.room import Identity
    from rlhf_engine.room.scheduler import room_queue

    ana, bo = room.participants()
    queue = room_queue(room)
    release = threading.Event()
    run = RunFolder(room.workspace(bo.id).runs / "bo-run")
    job = queue.submit(Job(run, lambda job: "completed" if release.wait(30) else "failed"), owner=bo.id)
    try:
        with pytest.raises(PermissionError):
            queue.stop(job, by=ana.id, by_label=ana.name)
        assert not job.stop_event.is_set()
        monkeypatch.setattr(state, "job_queue", lambda: queue)
        monkeypatch.setattr(state, "identity", lambda: Identity("participant", ana.id, ana.name))
        assert not state.may_stop(job)
        with pytest.raises(PermissionError):
            state.stop_job(job)
        monkeypatch.setattr(state, "identity", lambda: Identity("participant", bo.id, bo.name))
        assert state.may_stop(job)
        monkeypatch.setattr(state, "identity", lambda: Identity("teacher", "teacher", "the teacher"))
        state.stop_job(job)
        assert job.stop_event.is_set()
        assert "stop asked by the teacher" in (run.path / "events.log").read_text()
    finally:
        release.set()
        assert queue.wait_idle(30)
