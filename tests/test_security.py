"""Security (issue 6): loopback only, XSRF on, no remote code, no pickles, no escaping the runs folder, no HTML.

Each test tries the attack for real where it can: a model folder whose code or pickle would leave a marker
file if it ever ran, a server started with the project's own settings, run and file names that climb out.
"""

from __future__ import annotations

import ast
import functools
import json
import pickle
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import tomllib
from browser import dashboard_server

from rlhf_engine.config import ModelConfig
from rlhf_engine.core.models import ModelSourceError, load_model_and_tokenizer

ROOT = Path(__file__).resolve().parents[1]
APP_CODE = [*ROOT.glob("rlhf_engine/**/*.py"), *ROOT.glob("dashboard/*.py"), *ROOT.glob("pages/*.py"), ROOT / "app.py"]


# ---------------------------------------------------------------------------------------------- the server


def test_the_shipped_settings_bind_loopback_with_xsrf_on():
    server = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server["address"] == "127.0.0.1" and server["enableXsrfProtection"] is True
    makefile = (ROOT / "Makefile").read_text()
    assert "HOST ?= 127.0.0.1" in makefile and "--server.address $(HOST)" in makefile


def test_a_server_started_with_the_project_settings_listens_on_loopback_only_and_refuses_uploads_without_a_token(
        tmp_path):
    workspace = tmp_path / "ws"
    (workspace / "runs").mkdir(parents=True)
    with dashboard_server(workspace, tmp_path / "server.log", address=None) as url:
        port = int(url.rsplit(":", 1)[1])
        listening = {c.laddr.ip for c in psutil.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert listening == {"127.0.0.1"}
        request = urllib.request.Request(f"{url}/_stcore/upload_file/some-session/some-file", method="PUT",
                                         data=b"--x--", headers={"Content-Type": "multipart/form-data; boundary=x"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403  # no XSRF cookie and token: refused before the upload is read


# ---------------------------------------------------------------------------------------------- model folders


def copy_tiny_model_without_weights(tiny_model_dir: str, folder: Path) -> Path:
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    return folder


class LeavesAMarker:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_checkpoint_is_never_unpickled(tmp_path, tiny_model_dir):
    folder = copy_tiny_model_without_weights(tiny_model_dir, tmp_path / "pickled-model")
    marker = tmp_path / "pickle-ran"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(LeavesAMarker(marker)))
    with pytest.raises(ModelSourceError, match="cannot load model"):
        load_model_and_tokenizer(ModelConfig(source=str(folder), quant="none"))
    assert not marker.exists()


def test_model_code_shipped_in_a_folder_never_runs(tmp_path, tiny_model_dir):
    folder = copy_tiny_model_without_weights(tiny_model_dir, tmp_path / "remote-code-model")
    shutil.copy(next(Path(tiny_model_dir).glob("*.safetensors")), folder)
    marker = tmp_path / "remote-code-ran"
    code = f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    for name in ("configuration_evil.py", "modeling_evil.py", "tokenization_evil.py"):
        (folder / name).write_text(code)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                               "AutoModelForCausalLM": "modeling_evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ModelSourceError):
        load_model_and_tokenizer(ModelConfig(source=str(folder), quant="none"))
    assert not marker.exists()


@functools.cache
def _syntax_nodes(path: Path) -> tuple:
    return tuple(ast.walk(ast.parse(path.read_text(), str(path))))


def calls(name: str):
    """Every call of a function or method called ``name`` in the app's code, with its file."""
    for path in APP_CODE:
        for node in _syntax_nodes(path):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    yield path, node


def keyword(node: ast.Call, name: str):
    value = next((k.value for k in node.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else value


def test_the_code_never_trusts_remote_code_loads_pickles_or_renders_html():
    for path, node in calls("from_pretrained"):
        assert keyword(node, "trust_remote_code") in (None, False), (path, node.lineno)
    assert any(keyword(node, "trust_remote_code") is False for _, node in calls("from_pretrained"))
    for path, node in calls("load"):
        if isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", None) == "torch":
            assert keyword(node, "weights_only") is True, (path, node.lineno)  # no arbitrary unpickling
    for name in ("markdown", "write", "caption", "info", "error", "success", "warning", "expander", "button"):
        for path, node in calls(name):
            assert keyword(node, "unsafe_allow_html") in (None, False), (path, node.lineno)
    for name in ("html", "iframe"):
        assert not list(calls(name)), f"st.{name} renders raw HTML"


# ---------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped", "..", "a/../../escaped", ".hidden", "x\\..\\y",
                                  "run\x00name", "~/escaped"])
def test_a_run_name_that_leaves_the_runs_folder_is_refused_on_the_page(tmp_path, monkeypatch, tiny_model_dir, name):
    from test_app import make_workspace, open_page, plain

    from rlhf_engine.data.pairs import PreferencePair
    from rlhf_engine.data.store import PairStore

    workspace = make_workspace(tmp_path / "deep" / "ws", tiny_model_dir,
                               [PreferencePair(f"q{i}", "good", "bad") for i in range(4)])
    monkeypatch.setenv("RLHF_WORKSPACE", str(workspace))
    before = sorted(p for p in tmp_path.rglob("*") if "pairs.sqlite" not in p.name)
    at = open_page("pages/reward_model.py")
    at.text_input(key="rm.name").set_value(name)
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception
    assert any("is not allowed" in plain(e.value) for e in at.error)
    after = sorted(p for p in tmp_path.rglob("*") if "pairs.sqlite" not in p.name)
    assert after == before  # no folder made anywhere
    assert PairStore(workspace / "pairs.sqlite").count() == 4
