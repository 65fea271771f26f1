"""The dashboard placeholder renders and lists runs from the run folders."""

import json

from streamlit.testing.v1 import AppTest


def test_home_page_renders_and_lists_runs(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "rm-demo"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"kind": "reward_model"}))
    (run / "status.json").write_text(json.dumps({"state": "completed", "step": 5, "total_steps": 5}))
    monkeypatch.chdir(tmp_path)
    import pathlib

    app = pathlib.Path(__file__).resolve().parents[1] / "app.py"
    at = AppTest.from_file(str(app), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "RLHF Workbench"
    assert any("rm-demo: reward_model — completed (step 5/5)" in t.value for t in at.text)
