"""Every dashboard page through Streamlit's AppTest, on a temporary workspace and the tiny model."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rlhf_engine.config import ModelConfig, PolicyConfig, RewardConfig, to_dict
from rlhf_engine.data.pairs import PreferencePair
from rlhf_engine.data.store import PairStore
from rlhf_engine.runs.reward_job import start_reward_job
from rlhf_engine.runs.runfolder import RunFolder

APP = Path(__file__).resolve().parents[1] / "app.py"
PAIRS = [PreferencePair(f"Say something about item {i}.", "Lovely, great, wonderful.", "Awful, bad, terrible.")
         for i in range(10)]


def tiny_config(tiny_model_dir: str) -> ModelConfig:
    return ModelConfig(source=tiny_model_dir, quant="none", lora_r=4, lora_alpha=8)


def make_workspace(root: Path, tiny_model_dir: str, pairs=()) -> Path:
    (root / "runs").mkdir(parents=True, exist_ok=True)
    (root / "model.json").write_text(json.dumps(to_dict(tiny_config(tiny_model_dir))))
    if pairs:
        PairStore(root / "pairs.sqlite").add_many(pairs, source="test")
    return root


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_model_dir) -> Path:
    root = make_workspace(tmp_path / "ws", tiny_model_dir)
    monkeypatch.setenv("RLHF_WORKSPACE", str(root))
    return root


@pytest.fixture(scope="module")
def trained_workspace(tmp_path_factory, tiny_model_dir) -> Path:
    """A workspace with stored pairs and a completed tiny reward model (trained through the engine)."""
    root = make_workspace(tmp_path_factory.mktemp("trained") / "ws", tiny_model_dir, PAIRS)
    config = RewardConfig(model=tiny_config(tiny_model_dir), steps=4, eval_every=2, norm_samples=4,
                          norm_response_length=4)
    from rlhf_engine.data.pairs import write_pairs

    write_pairs(PAIRS, root / "pairs.jsonl")
    job = start_reward_job(root / "runs" / "rm-tiny", config, root / "pairs.jsonl", background=False)
    assert job.state == "completed", job.run.status()
    return root


@pytest.fixture
def jobs_in_threads(monkeypatch):
    """The pages' jobs run in threads of the test process (the engine's own Job, as `run-job` runs it)
    instead of a process each, which would import torch, transformers and peft again (~10 s of CPU). What
    the job process adds is tested where it matters: test_browser (the pages' jobs in their processes),
    test_jobs (ProcessJob's stop and kill) and the simulated-pairs test below."""
    from rlhf_engine.runs import job, queue  # noqa: F401 - the queue holds the real ProcessJob class, for isinstance
    from rlhf_engine.runs.resume import prepared_job

    monkeypatch.setattr(job, "ProcessJob", lambda run: prepared_job(run.path))


def open_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def plain(markdown: str) -> str:
    """What a reader sees of escaped Markdown (user and file text is escaped on the pages)."""
    return markdown.replace("\\", "")


def texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.text])


# ---------------------------------------------------------------------------------------------- home

def test_home_shows_the_loop_and_where_the_project_stands(workspace):
    PairStore(workspace / "pairs.sqlite").add_many(PAIRS[:3], source="test")
    run = RunFolder(workspace / "runs" / "ppo-old")
    run.create("ppo", {"config": {}}, 10)
    run.set_status("running", step=4)  # this process is alive, so it reads as running
    at = open_page()
    assert at.title[0].value == "RLHF Workbench"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["pairs stored"] == "3" and metrics["policy runs"] == "1"
    assert "ppo-old — running, step 4/10" in plain(texts(at))
    links = {link.proto.page for link in at.get("page_link")}
    assert {"model", "preferences", "reward_model", "ppo", "runs"} <= links


def test_home_counts_the_runs_of_every_method_and_names_the_methods_of_the_registry(workspace):
    from rlhf_engine.methods import registry

    for name, kind in (("ppo-a", "ppo"), ("dpo-b", "dpo"), ("rm-c", "reward_model")):
        run = RunFolder(workspace / "runs" / name)
        run.create(kind, {"config": {}}, 10)
        run.set_status("completed", step=10)
    at = open_page()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["policy runs"] == "2" and metrics["reward models trained"] == "1"  # DPO's run is a policy run
    assert "dpo-b — completed, step 10/10" in plain(texts(at))
    titles = [method.title for method in registry.methods().values()]
    assert f"4. {titles[0]} (or {', '.join(titles[1:])})" in [h.value for h in at.subheader]
    assert "DPO" in titles


def test_a_run_whose_process_died_shows_as_interrupted_with_resume(workspace):
    run = RunFolder(workspace / "runs" / "ppo-dead")
    run.create("ppo", {"config": {}}, 10)
    status = json.loads((run.path / "status.json").read_text())
    (run.path / "status.json").write_text(json.dumps({**status, "state": "running", "pid": 2**22 + 12345}))
    at = open_page("pages/runs.py")
    assert "interrupted" in at.dataframe[0].value["state"].tolist()
    assert any(b.label == "Resume" for b in at.button)


# ---------------------------------------------------------------------------------------------- model

def test_model_page_shows_what_is_loaded_and_chats(workspace, tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from dashboard.state import loaded_model
    from rlhf_engine.core import models

    loads = []
    load = models.load_model_and_tokenizer
    monkeypatch.setattr(models, "load_model_and_tokenizer", lambda config: loads.append(config) or load(config))
    loaded_model.clear()
    at = open_page("pages/model.py")
    labels = [m.label for m in at.metric]
    assert labels == ["parameters", "weights in memory", "device", "compute dtype"]
    assert at.metric[2].value == "cpu" and at.metric[3].value == "float32"
    parameters = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    assert at.metric[0].value == f"{parameters / 1e6:.1f} M"  # read from the files: the count a load gives
    assert "not quantized" in texts(at)
    assert loads == []  # drawn without loading the model (that took seconds)
    at.chat_input[0].set_value("Hello there").run()
    assert not at.exception
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert len(loads) == 1  # the first answer loads it


def test_model_page_reports_a_bad_source_plainly(workspace):
    at = open_page("pages/model.py")
    at.radio[0].set_value("Local folder")
    at.text_input[0].set_value(str(workspace / "no-such-model"))
    at.button[0].click().run()
    assert not at.exception
    assert any("Loading the model failed" in e.value for e in at.error)
    assert json.loads((workspace / "model.json").read_text())["source"] != str(workspace / "no-such-model")


# ---------------------------------------------------------------------------------------------- preferences

def test_upload_previews_then_stores(workspace):
    at = open_page("pages/preferences.py")
    lines = "".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                    for p in PAIRS[:3])
    at.file_uploader[0].set_value(("mine.jsonl", lines.encode(), "application/json")).run()
    assert not at.exception
    assert any("mine.jsonl: 3 valid pairs" in plain(s.value) for s in at.success)
    assert len(at.dataframe[0].value) == 3
    assert PairStore(workspace / "pairs.sqlite").count() == 0  # nothing stored before the click
    next(b for b in at.button if b.label == "Add 3 pairs to the store").click().run()
    assert PairStore(workspace / "pairs.sqlite").count() == 3
    assert plain(at.success[0].value) == "Stored 3 pairs from mine.jsonl."
    assert "**3** pairs stored" in at.caption[0].value
    assert not any(b.label.startswith("Add ") for b in at.button)  # the same file cannot be stored twice
    at.run()
    assert PairStore(workspace / "pairs.sqlite").count() == 3


def test_a_hub_dataset_from_the_local_cache_previews_then_stores_and_a_missing_one_says_how_to_fetch_it(
        workspace, hub_cache):
    hub_cache("testorg/prefs", {"train": [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(4)],
                                "test": [{"prompt": "t", "chosen": "yes", "rejected": "no"}]})
    at = open_page("pages/preferences.py")
    at.text_input(key="preferences.hub").set_value("testorg/prefs:train[:3]").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("testorg/prefs:train[:3]: 3 valid pairs" in plain(s.value) for s in at.success)
    assert PairStore(workspace / "pairs.sqlite").count() == 0
    next(b for b in at.button if b.label == "Add 3 pairs to the store").click().run()
    assert PairStore(workspace / "pairs.sqlite").count() == 3
    at.text_input(key="preferences.hub").set_value("nobody/missing").run()
    assert not at.exception
    assert any("not in the local Hugging Face cache" in plain(e.value) and "load_dataset('nobody/missing')"
               in plain(e.value) for e in at.error)
    assert PairStore(workspace / "pairs.sqlite").count() == 3


def test_bad_upload_names_file_and_row_and_stores_nothing(workspace):
    at = open_page("pages/preferences.py")
    bad = b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n'
    at.file_uploader[0].set_value(("broken.jsonl", bad, "application/json")).run()
    assert not at.exception
    assert len(at.error) == 1
    message = plain(at.error[0].value)
    assert message.startswith("broken.jsonl: row 2:") and "rejected" in message
    assert not any(b.label.startswith("Add ") for b in at.button)
    assert PairStore(workspace / "pairs.sqlite").count() == 0


@pytest.mark.parametrize("name, content, words", [
    ("latin1.csv", "prompt,chosen,rejected\nq,café,b\n".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
    ("garbage.parquet", b"PAR1\x00\x01 not really", "unreadable Parquet file"),
    ("deep.json", b'[{"prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b', "chosen": "a", "rejected": "b"}]',
     "nested too deeply"),
    ("twice.jsonl", b'{"prompt": "q", "chosen": "a", "chosen": "c", "rejected": "b"}\n', "row 1: key 'chosen' appears"),
    ("../../escape.jsonl", b'{"prompt": "q", "chosen": "a"}\n', "missing column 'rejected'"),
])
def test_every_kind_of_bad_upload_is_one_message_and_stores_nothing(workspace, name, content, words):
    at = open_page("pages/preferences.py")
    at.file_uploader[0].set_value((name, content, "application/octet-stream")).run()
    assert not at.exception
    assert len(at.error) == 1
    message = plain(at.error[0].value)
    assert message.startswith(f"{name}: ") and words in message and "\n" not in message
    assert not any(b.label.startswith("Add ") for b in at.button)
    assert PairStore(workspace / "pairs.sqlite").count() == 0
    assert not (workspace.parent.parent / "escape.jsonl").exists()


def test_an_upload_over_the_size_limit_is_refused_with_the_limit_and_the_cli_way(workspace):
    from streamlit import config as streamlit_config

    limit = streamlit_config.get_option("server.maxUploadSize")
    streamlit_config.set_option("server.maxUploadSize", 1)  # MB; the shipped limit is 50
    try:
        at = open_page("pages/preferences.py")
        line = json.dumps({"prompt": "q" * 1000, "chosen": "a", "rejected": "b"}) + "\n"
        at.file_uploader[0].set_value(("big.jsonl", (line * 1100).encode(), "application/json")).run()
    finally:
        streamlit_config.set_option("server.maxUploadSize", limit)
    assert not at.exception
    message = plain(at.error[0].value)
    assert message.startswith("big.jsonl: 1.1 MB is over the upload limit of 1 MB") and "pairs add" in message
    assert not any(b.label.startswith("Add ") for b in at.button)
    assert PairStore(workspace / "pairs.sqlite").count() == 0


def test_collect_stores_the_picked_answer_at_once(workspace):
    at = open_page("pages/preferences.py")
    at.text_input(key="preferences.collect.typed").set_value("Tell me about the sea.")
    at.button(key="preferences.collect.generate").click().run()
    assert not at.exception
    answers = at.session_state["preferences.candidate"]["answers"]
    store = PairStore(workspace / "pairs.sqlite")
    at.button(key="preferences.collect.Skip").click().run()
    assert store.count() == 0
    at.button(key="preferences.collect.generate").click().run()
    answers = at.session_state["preferences.candidate"]["answers"]
    at.button(key="preferences.collect.B is better").click().run()
    if answers[0].strip() == answers[1].strip():
        assert store.count() == 0
    else:
        stored = store.list()[0].pair
        assert store.count() == 1 and stored.chosen == answers[1] and stored.rejected == answers[0]
        assert stored.prompt == "Tell me about the sea."


def test_browse_filters_and_deletes(workspace):
    store = PairStore(workspace / "pairs.sqlite")
    store.add_many(PAIRS[:3] + [PreferencePair("A question on whales", "Good", "Bad")], source="test")
    at = open_page("pages/preferences.py")
    at.text_input(key="preferences.browse.search").set_value("whales").run()
    frame = at.dataframe[0].value
    assert frame["prompt"].tolist() == ["A question on whales"]
    at.multiselect(key="preferences.browse.delete").set_value(frame["id"].tolist()).run()
    at.button(key="preferences.browse.delete_btn").click().run()
    assert store.count() == 3 and store.count("whales") == 0
    at.selectbox(key="preferences.browse.format").set_value("csv")
    at.button(key="preferences.browse.export").click().run()
    assert at.get("download_button")[0].proto.label == "Download pairs.csv"


# ---------------------------------------------------------------------------------------------- reward model

def test_reward_model_page_shows_a_trained_model_its_evaluation_and_scores(trained_workspace, monkeypatch):
    """(Training from this page's Train button, in the background, is the browser test's; queueing it, the
    double-click test's.)"""
    monkeypatch.setenv("RLHF_WORKSPACE", str(trained_workspace))
    at = open_page("pages/reward_model.py")
    assert at.selectbox[0].value == "none"  # quantization follows the Model page (the tiny model: none)
    at.selectbox(key="rm.pick").set_value("rm-tiny").run()
    assert not at.exception
    assert "4 steps plotted" in texts(at)
    assert {"held-out accuracy", "mean margin (raw)", "held-out pairs"} <= {m.label for m in at.metric}
    assert len(at.get("plotly_chart")) == 4  # loss, accuracy, margin histogram, score vs length
    at.button(key="rm.try.score").click().run()
    assert not at.exception
    assert any(m.label == "score (normalised)" for m in at.metric)


# ---------------------------------------------------------------------------------------------- PPO and runs

def test_ppo_page_shows_every_knob_with_its_default(trained_workspace, monkeypatch):
    monkeypatch.setenv("RLHF_WORKSPACE", str(trained_workspace))
    at = open_page("pages/ppo.py")
    for key in ("kl_coef", "kl_target", "steps", "batch_size", "response_length", "temperature", "ppo_epochs",
                "cliprange", "cliprange_value", "learning_rate", "vf_coef", "lam", "gamma"):
        widget = at.number_input(key=f"ppo.{key}")
        assert "Default:" in widget.help, key
    assert at.number_input(key="ppo.kl_coef").value == 0.05
    assert "Default: 'k1'" in at.selectbox(key="ppo.kl_estimator").help
    assert at.selectbox(key="ppo.value_model").value == "shared"
    assert "Default: 'shared'" in at.selectbox(key="ppo.value_model").help
    assert at.checkbox(key="ppo.adaptive_kl").value is False


def test_a_tiny_ppo_run_started_from_the_page_produces_metric_points(trained_workspace, monkeypatch, jobs_in_threads):
    monkeypatch.setenv("RLHF_WORKSPACE", str(trained_workspace))
    at = open_page("pages/ppo.py")
    at.text_input[0].set_value("ppo-page")
    for key, value in (("steps", 3), ("batch_size", 2), ("response_length", 4), ("probe_every", 2)):
        at.number_input(key=f"ppo.{key}").set_value(value)
    next(b for b in at.button if b.label == "Start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run = RunFolder(trained_workspace / "runs" / "ppo-page")
    wait_for(lambda: len(run.metrics()) >= 1 or run.status()["state"] == "failed")
    at.run()
    assert not at.exception
    plotted = int(next(c.value for c in at.caption if "steps plotted" in c.value).split()[0])
    assert plotted >= 1
    wait_for(lambda: run.status()["state"] in ("completed", "failed"))
    assert run.status()["state"] == "completed", run.status()
    at.run()
    assert "3 steps plotted" in texts(at)
    assert run.config()["gold"] is True  # the tiny RM learnt pairs that follow the simulated annotator's rule
    charts = at.get("plotly_chart")
    assert len(charts) == 9 + 2  # seven panels + gold + the KL estimators, the held-out probes and the token view
    estimators = json.loads(charts[3].proto.spec)  # after the score, gold and KL panels
    assert estimators["layout"]["title"]["text"].startswith("KL estimators")
    assert [t["name"] for t in estimators["data"]] == ["kl/k1", "kl/k2", "kl/k3"]
    assert len(at.dataframe[0].value) == 3 * 2  # samples of every step, newest first
    assert "policy at step 3" in texts(at)


def test_a_grpo_run_started_from_the_page_draws_trls_metrics_and_each_answers_advantage(trained_workspace,
                                                                                       monkeypatch, jobs_in_threads):
    monkeypatch.setenv("RLHF_WORKSPACE", str(trained_workspace))
    at = open_page("pages/ppo.py")
    at.segmented_control(key="policy.method").set_value("grpo").run()
    assert at.number_input(key="grpo.kl_coef").value == 0.04  # GRPO's own default (DeepSeekMath), not PPO's
    assert "Default: 'loss'" in at.selectbox(key="grpo.kl_in").help
    at.text_input(key="grpo.name").set_value("grpo-page")
    for key, value in (("steps", 2), ("batch_size", 4), ("group_size", 2), ("response_length", 4),
                       ("probe_every", 0)):
        at.number_input(key=f"grpo.{key}").set_value(value)
    next(b for b in at.button if b.label == "Start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run = RunFolder(trained_workspace / "runs" / "grpo-page")
    wait_for(lambda: run.status()["state"] in ("completed", "failed"))
    assert run.status()["state"] == "completed", run.status()
    at.selectbox(key="ppo.pick").set_value("grpo-page").run()
    assert not at.exception
    assert "2 steps plotted" in texts(at) and "GRPO · β 0.04 in the loss" in texts(at)
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert titles[:3] == ["Reward: the RM score (score units)", "Gold score (the true reward)", "KL to the reference"]
    assert "Groups that teach nothing" in titles and "Value loss" not in titles
    assert "advantage" in at.dataframe[0].value.columns
    heatmap = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert len(heatmap["data"]) == 1 and "advantage" in heatmap["layout"]["title"]["text"]  # KL row, no value row


def test_a_dpo_run_started_from_the_page_draws_its_implicit_rewards_and_probe_kl(trained_workspace, monkeypatch,
                                                                                jobs_in_threads):
    monkeypatch.setenv("RLHF_WORKSPACE", str(trained_workspace))
    at = open_page("pages/ppo.py")
    at.segmented_control(key="policy.method").set_value("dpo").run()
    assert at.number_input(key="dpo.kl_coef").value == 0.1  # the DPO paper's β
    at.text_input(key="dpo.name").set_value("dpo-page")
    for key, value in (("steps", 2), ("batch_size", 2), ("response_length", 4), ("probe_every", 2),
                       ("probe_prompts", 2)):
        at.number_input(key=f"dpo.{key}").set_value(value)
    next(b for b in at.button if b.label == "Start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run = RunFolder(trained_workspace / "runs" / "dpo-page")
    wait_for(lambda: run.status()["state"] in ("completed", "failed"))
    assert run.status()["state"] == "completed", run.status()
    at.selectbox(key="ppo.pick").set_value("dpo-page").run()
    assert not at.exception
    assert "DPO · β 0.1 · 2 pairs per step from pairs.jsonl" in texts(at)
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert titles[0] == "Implicit rewards (chosen, rejected)"
    assert list(at.dataframe[0].value.columns) == ["step", "prompt", "chosen", "rejected", "margin"]
    assert "KL" in texts(at) and "at step 2" in texts(at)  # the held-out probes measure its KL


@dataclass
class ToyConfig(PolicyConfig):
    """A method's settings with no hand-made form on the policy page."""

    baseline_decay: float = 0.9  # how fast the running-mean baseline forgets (share kept per step)
    note: str | None = None  # a free-text remark; empty for none


def test_a_method_registered_from_outside_gets_a_form_of_its_config_fields(workspace, monkeypatch):
    """No UI code: the policy page offers the method, says its summary and draws a knob for every field of its
    config but the model, in order, labelled and explained by its comment."""
    import sys
    import types

    from rlhf_engine.methods import registry

    module = types.ModuleType("workbench_toy_form_method")
    module.METHOD = registry.Method("toyform", "ToyForm", ToyConfig, "workbench_toy_form_method:Nothing",
                                    "ToyForm raises well-scored answers against a running mean.",
                                    registry.GROUP_PANELS, ("objective/scores",))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setenv(registry.EXTRA_METHODS_ENV, module.__name__)
    at = open_page("pages/ppo.py")
    assert "ToyForm" in at.title[0].value
    at.segmented_control(key="policy.method").set_value("toyform").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "ToyForm raises well-scored answers against a running mean." in texts(at)
    decay = at.number_input(key="toyform.baseline_decay")
    assert decay.value == 0.9 and decay.label.startswith("baseline_decay — how fast")
    assert "share kept per step" in decay.help and "Default: 0.9" in decay.help
    assert at.number_input(key="toyform.steps").value == 100  # the fields every policy config has, too
    assert at.text_input(key="toyform.note").value == ""
    from dashboard.widgets import form_fields

    assert [name for name, _ in form_fields("toyform")] == [f.name for f in fields(ToyConfig) if f.name != "model"]


def test_runs_page_compares_runs(trained_workspace, monkeypatch):
    monkeypatch.setenv("RLHF_WORKSPACE", str(trained_workspace))
    for beta, name in ((0.05, "ppo-a"), (0.5, "ppo-b")):
        run = RunFolder(trained_workspace / "runs" / name)
        run.create("ppo", {"config": {"kl_coef": beta}}, 2)
        for step in (1, 2):
            run.append_metrics({"step": step, "objective/scores": step * beta, "objective/kl": step / beta,
                                "beta": beta})
        run.set_status("completed", step=2)
    at = open_page("pages/runs.py")
    table = at.dataframe[0].value
    assert {"ppo-a", "ppo-b", "rm-tiny"} <= set(table["run"])
    at.radio(key="runs.kind").set_value("policy").run()
    assert {"ppo-a", "ppo-b"} <= set(at.multiselect(key="runs.sel").value)
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # the overlay and the reward-vs-KL chart
    from rlhf_engine.lab.styles import method_colour

    scatter = json.loads(charts[1].proto.spec)["data"]
    points = {t["name"]: t["marker"] for t in scatter if t["name"].endswith(": RM score")}
    a, b = (points[f"PPO, β = {beta} ({name}) (training batches): RM score"]  # named in words, and by their id
            for beta, name in (("0.05", "ppo-a"), ("0.5", "ppo-b")))
    assert a["color"] == b["color"] == method_colour("ppo")[0]  # one method, one colour (not black, not by β)
    assert a["symbol"] == b["symbol"] == "square"  # no probe answers: points from training batches
    assert not any(t.get("text") for t in scatter)  # named in the legend, no labels on the chart to overlap
    overlay = json.loads(charts[0].proto.spec)["data"]
    lines = {t["name"]: (t["line"]["color"], t["marker"]["symbol"]) for t in overlay}
    (colour_a, marker_a), (colour_b, marker_b) = lines["PPO, β = 0.05 (ppo-a)"], lines["PPO, β = 0.5 (ppo-b)"]
    assert colour_a == colour_b == method_colour("ppo")[0] and marker_a != marker_b  # a marker per β
    # (the shared workspace may hold other tests' policy runs at other βs: the markers follow the order of every β)
    shown = json.dumps([json.loads(c.proto.spec) for c in charts]) + " ".join(c.value for c in at.caption)
    assert "beta-" not in shown and "coloured by β" not in shown
    assert "Colour: the method (" in shown and "PPO blue" in shown and "marker: β (" in shown
    assert "β = 0.05" in shown and "β = 0.5" in shown


def test_a_second_job_waits_in_the_queue_and_the_page_says_so(trained_workspace, monkeypatch):
    monkeypatch.setenv("RLHF_WORKSPACE", str(trained_workspace))
    with queue_held(trained_workspace):
        at = open_page("pages/reward_model.py")
        at.text_input[0].set_value("rm-queued")
        at.number_input(key="rm.steps").set_value(2)
        next(b for b in at.button if b.label == "Train").click().run()
        assert not at.exception and not at.error
        assert at.success[0].value.startswith("Queued rm-queued: it starts when the job before it ends")
        assert "Device busy with **blocker**; 1 waiting" in texts(at)
        run = RunFolder(trained_workspace / "runs" / "rm-queued")
        assert run.status()["state"] == "queued"
        next(b for b in at.button if b.label == "Stop").click().run()  # off the queue before it starts
        assert run.status()["state"] == "stopped"  # (that the queue then runs its jobs in turn: test_jobs.py)
    assert RunFolder(trained_workspace / "runs" / "blocker").status()["state"] == "completed"


@contextlib.contextmanager
def queue_held(root: Path, name: str = "blocker"):
    """The dashboard's job queue with a job that holds the device until the block ends: new jobs stay
    queued; those still waiting at the end are taken off the queue before they start."""
    import threading

    from dashboard.state import job_queue
    from rlhf_engine.runs.job import Job

    assert job_queue().wait_idle(120)  # job processes of earlier tests have exited
    release = threading.Event()
    blocker = RunFolder(root / "runs" / name)
    blocker.create("test", {}, 1)
    job_queue().submit(Job(blocker, lambda job: "completed" if release.wait(120) else "failed"))
    try:
        yield job_queue()
    finally:
        for job in job_queue().jobs()[1:]:
            job_queue().stop(job)
        release.set()
        assert job_queue().wait_idle(120)


@pytest.fixture
def busy_queue(workspace):
    with queue_held(workspace) as queue:
        yield queue


def test_two_clicks_on_start_start_one_job(workspace, busy_queue):
    PairStore(workspace / "pairs.sqlite").add_many(PAIRS, source="test")
    at = open_page("pages/reward_model.py")
    at.text_input(key="rm.name").set_value("rm-twice")
    next(b for b in at.button if b.label == "Train").click().run()
    assert at.success[0].value.startswith("Queued rm-twice")
    # the second click of a double click arrives with the form as the first one sent it
    at.text_input(key="rm.name").set_value("rm-twice")
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception and not at.error
    assert any("rm-twice is already started" in plain(i.value) for i in at.info)
    assert [job.run.id for job in busy_queue.jobs()] == ["blocker", "rm-twice"]
    # another browser tab naming the same run: refused by the engine's claim on the folder
    other = open_page("pages/reward_model.py")
    other.text_input(key="rm.name").set_value("rm-twice")
    next(b for b in other.button if b.label == "Train").click().run()
    assert any("already holds a run" in plain(e.value) for e in other.error)
    assert [job.run.id for job in busy_queue.jobs()] == ["blocker", "rm-twice"]


def test_two_clicks_on_make_simulated_pairs_start_one_job(workspace, busy_queue):
    at = open_page("pages/preferences.py")
    at.number_input(key="preferences.simulate.n").set_value(2)
    at.button(key="preferences.simulate.start").click().run()
    at.button(key="preferences.simulate.start").click().run()
    assert not at.exception and not at.error
    assert any("is still making pairs" in plain(i.value) for i in at.info)
    assert len(busy_queue.jobs()) == 2 and len(list((workspace / "runs").glob("pairs-*"))) == 1


def test_simulated_pairs_run_in_their_own_process_and_stop_storing_nothing(workspace):
    at = open_page("pages/preferences.py")
    at.number_input(key="preferences.simulate.n").set_value(5)
    at.button(key="preferences.simulate.start").click().run()
    assert not at.exception and not at.error
    run = RunFolder(next((workspace / "runs").iterdir()))
    assert run.config()["kind"] == "demo_pairs"
    wait_for(lambda: run.status()["state"] == "running")
    assert run.status()["pid"] != os.getpid()  # the job runs in a process of its own
    at.run()
    assert "of 5 pairs" in at.get("progress")[0].proto.text
    next(b for b in at.button if b.label == "Stop").click().run()
    wait_for(lambda: run.status()["state"] in ("stopped", "failed", "completed"))
    assert run.status()["state"] == "stopped"
    assert PairStore(workspace / "pairs.sqlite").count() == 0  # all the pairs or none


def test_a_failed_run_shows_its_reason_on_the_page(trained_workspace, monkeypatch):
    monkeypatch.setenv("RLHF_WORKSPACE", str(trained_workspace))
    run = RunFolder(trained_workspace / "runs" / "ppo-failed")
    run.create("ppo", {"config": {"kl_coef": 0.05}}, 10)
    run.set_status("failed", step=2, error="NonFiniteError: objective/kl is NaN or infinite at step 3")
    at = open_page("pages/ppo.py")
    at.selectbox(key="ppo.pick").set_value("ppo-failed").run()
    assert not at.exception
    assert any("The run failed: NonFiniteError: objective/kl is NaN" in plain(e.value) for e in at.error)
    assert any(b.label == "Resume" for b in at.button)


def _fake_ppo_run(root: Path, name: str, rows: list[dict], samples: list[dict] = (), config: dict | None = None,
                  state: str = "completed") -> RunFolder:
    run = RunFolder(root / "runs" / name)
    run.create("ppo", {"config": {"kl_estimator": "k1", "response_length": 16, **(config or {})}}, len(rows))
    for row in rows:
        run.append_metrics(row)
    run.append_samples(list(samples))
    run.set_status(state, step=len(rows))
    return run


def test_ppo_page_shows_health_alarms_and_the_token_view(workspace):
    rows = [{"step": s, "objective/kl": -1.5, "objective/scores": 0.1, "objective/entropy": 30.0,
             "response_length": 16.0, "eos_fraction": 0.0, "policy/clipfrac": 0.05, "loss/value": 0.1, "beta": 0.05}
            for s in range(1, 5)]
    sample = {"step": 4, "prompt": "Hi", "response": "<b>bold</b> text", "score": 0.5, "kl": -0.2,
              "tokens": ["<b>", "bold", "</b>", " text"], "token_kl": [0.1, -0.3, 0.0, 0.0],
              "token_value": [0.2, 0.1, 0.0, -0.1], "token_advantage": [1.0, -1.0, 0.5, 0.0]}
    run = _fake_ppo_run(workspace, "ppo-sick", rows, [sample], config={"report_to": "tensorboard"})
    at = open_page("pages/ppo.py")
    assert f"`tensorboard --logdir {run.path / 'tensorboard'}`" in texts(at)  # how to open the mirrored metrics
    warnings = [w.value for w in at.warning]
    assert any("negative" in w and "k3" in w for w in warnings), warnings  # kl_negative, with its suggestion
    assert any("length cap" in w and "missing" in w for w in warnings), warnings  # length_cap
    heatmap = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert [trace["type"] for trace in heatmap["data"]] == ["heatmap"] * 3
    assert heatmap["data"][0]["text"] == [["&lt;b&gt;", "bold", "&lt;/b&gt;", " text"]]  # shown as text, not markup
    assert heatmap["data"][2]["z"] == [[1.0, -1.0, 0.5, 0.0]]


def test_sweep_page_queues_runs_that_differ_only_in_beta(trained_workspace, monkeypatch):
    """(Its plots, drawn from a finished sweep, are checked in the workshop test below.)"""
    from rlhf_engine.lab.sweep import Sweep

    monkeypatch.setenv("RLHF_WORKSPACE", str(trained_workspace))
    with queue_held(trained_workspace, "blocker-sweep") as queue:
        at = open_page("pages/sweep.py")
        at.text_input(key="sweep.name").set_value("sweep-page")
        at.text_input(key="sweep.values.kl_coef").set_value("0, 0.3")
        at.number_input(key="sweep.bon").set_value(2)
        for key, value in (("steps", 2), ("batch_size", 2), ("response_length", 4), ("probe_every", 1),
                           ("probe_prompts", 2)):
            at.number_input(key=f"sweep.{key}").set_value(value)
        next(b for b in at.button if b.label == "Queue the sweep").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert "Queued the sweep: its runs train side by side" in at.success[0].value
        sweep = Sweep(trained_workspace / "runs" / "sweep-page")
        assert [m.label for m in sweep.members()] == ["beta-0", "beta-0.3", "adaptive"]
        assert [job.run.path.resolve() for job in queue.jobs()[1:]] == [sweep.path.resolve()]  # one job, all runs
        configs = [m.run.config()["config"] for m in sweep.members()]
        assert [(c["kl_coef"], c["adaptive_kl"]) for c in configs] == [(0.0, False), (0.3, False), (0.05, True)]
        assert all({k: v for k, v in c.items() if k not in ("kl_coef", "adaptive_kl")} ==
                   {k: v for k, v in configs[0].items() if k not in ("kl_coef", "adaptive_kl")} for c in configs)
        assert configs[0]["steps"] == 2 and configs[0]["probe_prompts"] == 2
        assert sweep.best_of_n_run() is not None


def test_sweep_page_queues_a_sweep_of_methods_that_share_the_budget_and_keep_their_own_knobs(trained_workspace,
                                                                                            monkeypatch):
    from rlhf_engine.lab.sweep import Sweep

    monkeypatch.setenv("RLHF_WORKSPACE", str(trained_workspace))
    with queue_held(trained_workspace, "blocker-methods"):
        at = open_page("pages/sweep.py")
        at.radio(key="sweep.vary").set_value("method").run()
        at.text_input(key="sweep.name").set_value("methods-page")
        at.text_input(key="sweep.values.method").set_value("ppo=0.02, ppo=0.2, grpo, dpo=0.3")
        at.number_input(key="sweep.bon").set_value(0)
        for key, value in (("steps", 2), ("batch_size", 4), ("response_length", 4), ("probe_prompts", 2)):
            at.number_input(key=f"sweep.{key}").set_value(value)
        next(b for b in at.button if b.label == "Queue the sweep").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        sweep = Sweep(trained_workspace / "runs" / "methods-page")
        assert [m.label for m in sweep.members()] == ["ppo-beta-0.02", "ppo-beta-0.2", "grpo-beta-0.04",
                                                      "dpo-beta-0.3"]
        runs = [m.run.config() for m in sweep.members()]
        assert [r["kind"] for r in runs] == ["ppo", "ppo", "grpo", "dpo"]
        assert all(r["config"]["steps"] == 2 and r["config"]["response_length"] == 4 for r in runs)  # shared
        assert runs[2]["config"]["learning_rate"] == 1e-4 and runs[3]["config"]["learning_rate"] == 5e-5  # own


def test_sweep_page_preset_fills_the_form_with_the_workshops_sweep(workspace, monkeypatch):
    from streamlit.elements.lib import policies

    from rlhf_engine.config import ModelConfig
    from rlhf_engine.lab import workshop
    from rlhf_engine.lab.sweep import parse_values

    warnings = []
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", lambda message, *args, **kw: warnings.append(message % args))
    at = open_page("pages/sweep.py")
    next(b for b in at.button if b.label == "Fill in the workshop preset").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert warnings == []  # the preset's values are not fought by the widgets' own defaults
    sizes = workshop.preset()
    preset = workshop.ppo_config(ModelConfig(), sizes)
    for name in ("steps", "batch_size", "response_length", "ppo_epochs", "probe_every", "kl_horizon"):
        assert at.number_input(key=f"sweep.{name}").value == getattr(preset, name), name
    for name in ("learning_rate", "kl_coef", "kl_target"):
        assert at.number_input(key=f"sweep.{name}").value == pytest.approx(getattr(preset, name)), name
    assert at.selectbox(key="sweep.lr_schedule").value == "constant"
    assert parse_values("kl_coef", at.text_input(key="sweep.values.kl_coef").value) == list(sizes.betas)
    assert at.checkbox(key="sweep.adaptive").value is False
    assert at.number_input(key="sweep.bon").value == sizes.best_of_n
    at.run()  # the preset stays through later reruns
    assert at.number_input(key="sweep.steps").value == preset.steps
    assert at.selectbox(key="sweep.lr_schedule").value == "constant"


@pytest.mark.slow
def test_workshop_page_walks_the_loop_and_ticks_each_step(workspace, monkeypatch, jobs_in_threads):
    import dataclasses

    from dashboard.state import job_queue
    from rlhf_engine.lab import workshop
    from rlhf_engine.lab.sweep import Sweep

    small = dataclasses.replace(workshop.CPU, rm_steps=2, ppo_steps=2, batch_size=4, probe_every=1, probe_prompts=3,
                                probe_subset=2, best_of_n=2, best_of_n_prompts=3, overopt_steps=3)
    monkeypatch.setattr(workshop, "preset", lambda device=None: small)

    def ticks(at) -> list[bool]:
        return [h.value.startswith(":material/check_box:") for h in at.subheader]

    def button(at, start: str):
        return next(b for b in at.button if b.label.startswith(start))

    at = open_page("pages/workshop.py")
    assert ticks(at) == [True] + [False] * 6  # the model is chosen in this workspace
    assert button(at, "Use the bundled model").disabled  # a finished step's button rests
    assert "float32, not quantized" in texts(at)  # the model and its precision named, no jargon
    assert button(at, "Train the reward model").disabled
    button(at, "Add the").click().run()
    assert ticks(at)[:3] == [True, True, False] and button(at, "Add the").disabled
    button(at, "Train the reward model").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert job_queue().wait_idle(600)
    at.run()
    assert ticks(at)[:4] == [True, True, True, False] and button(at, "Train the reward model").disabled
    assert "Held-out agreement" in plain(texts(at) + " ".join(w.value for w in at.warning))  # ± SE, against chance
    button(at, "Run the KL sweep").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert job_queue().wait_idle(600)
    sweep = next(Sweep(p) for p in (workspace / "runs").iterdir() if (p / "sweep.json").is_file())
    assert set(sweep.states().values()) == {"completed"}, sweep.states()
    assert [m.label for m in sweep.members()] == [f"beta-{b:g}" for b in small.betas]
    assert sweep.best_of_n_run() is not None and sweep.record()["batched"]
    at.run()
    assert ticks(at) == [True] * 4 + [False] * 3 and button(at, "Run the KL sweep").disabled
    shown = texts(at)
    assert "held-out prompts" in shown and "standard errors" in shown  # the results in the runs' own numbers
    labels = [f"PPO, β = {b:g}" for b in small.betas]  # named in words, never "beta-0"
    sweep_page = open_page("pages/sweep.py")  # the same sweep on the sweep page: its plots
    sweep_page.selectbox(key="sweep.pick").set_value(sweep.id).run()
    assert not sweep_page.exception
    charts = [json.loads(c.proto.spec) for c in sweep_page.get("plotly_chart")]
    frontier, gold, overlay = charts[:3]
    names = [trace["name"] for trace in frontier["data"]]
    assert "best-of-n: RM score" in names
    assert [n for n in names if n.endswith(": RM score") and not n.startswith("best")] == [
        f"{label}: RM score" for label in labels]
    assert "last held-out probe" in frontier["layout"]["xaxis"]["title"]["text"]  # one definition, on the axis
    assert "√KL" in gold["layout"]["xaxis"]["title"]["text"]
    colour_of, marker_of = {}, {}  # one colour per method, one marker per β, the same in every chart of the page
    for chart in (frontier, gold, overlay):
        for trace in chart["data"]:
            label = trace["name"].split(":")[0]
            if label in labels:
                colour = trace.get("marker", {}).get("color") or trace.get("line", {}).get("color")
                assert colour_of.setdefault(label, colour) == colour, (label, trace["name"])
                if trace["name"].endswith(": RM score"):  # a path has one marker per probe: the first is full
                    symbol = trace["marker"]["symbol"]
                    marker_of[label] = symbol[0] if isinstance(symbol, list) else symbol
    assert len(set(colour_of.values())) == 1 and len(set(marker_of.values())) == len(labels)
    assert "Sweeps" in [h.value for h in open_page("pages/runs.py").subheader]
    next(b for b in at.button if b.label == "Write HTML report").click().run()
    assert ticks(at) == [True] * 5 + [False] * 2
    assert (sweep.path / "report.html").is_file()
    assert any(d.label.startswith("Download report.html") for d in at.get("download_button"))
    button(at, "Run 3 steps at β = 0").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert job_queue().wait_idle(600)
    at.run()
    assert button(at, "Run 3 steps at β = 0").disabled
    assert len(at.get("plotly_chart")) >= 3  # the sweep's two and the long run's gold vs proxy
    assert "not fitted" in texts(at)  # 3 probe points: too few for Gao's RL form, and the page says so
    button(at, "Train PPO, GRPO, RLOO, DPO side by side").click().run()  # step 7: every method, two seeds
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert job_queue().wait_idle(600)
    methods = next(s for s in map(Sweep, (workspace / "runs").iterdir())
                   if s.exists() and s.id.startswith("workshop-methods"))
    assert set(methods.states().values()) == {"completed"}, methods.states()
    members = {m.label: m for m in methods.members()}
    assert len(members) == 8 and members["ppo-beta-0.05-seed-0"].run.path == sweep.members()[1].run.path  # reused
    assert methods.best_of_n_run().path == sweep.best_of_n_run().path
    at.run()
    assert ticks(at)[6] and not at.exception
    shown = plain(texts(at))
    assert "(seed 0) and" in shown and "In order of mean gold gain" in shown  # each method over its seeds, ranked


def test_runs_page_exports_a_run_and_offers_it_as_a_zip(trained_workspace, monkeypatch):
    import zipfile

    monkeypatch.setenv("RLHF_WORKSPACE", str(trained_workspace))
    at = open_page("pages/runs.py")
    at.selectbox(key="runs.export").set_value("rm-tiny").run()
    assert "python -m rlhf_engine export" in texts(at) and "AutoModelForSequenceClassification" in texts(at)
    next(b for b in at.button if b.label == "Export").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    exports = trained_workspace / "runs" / "rm-tiny" / "exports"
    folder = exports / "merged-step-000004"
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    with zipfile.ZipFile(folder.with_suffix(".zip")) as archive:
        assert f"{folder.name}/model.safetensors" in archive.namelist()
    assert any("Exported to" in s.value for s in at.success)
    assert [b.proto.label for b in at.get("download_button")] == ["Download merged-step-000004.zip"]
    at.run()
    assert not any(b.label == "Export" for b in at.button)  # done: the page offers the download, not a second export
    assert len(at.get("download_button")) == 1
