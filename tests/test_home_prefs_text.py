"""What the Home and Preferences pages say: link labels that fit, headings numbered in order, the workshop's
minutes from its preset, the model in words, and how many pairs a reward model holds out."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from test_app import PAIRS, make_workspace, open_page, plain, texts

from rlhf_engine.config import ModelConfig
from rlhf_engine.core.models import describe_model
from rlhf_engine.data.store import PairStore
from rlhf_engine.lab import workshop

WHOLE_WIDTH_LABEL = 60  # characters a page link across the page shows whole
COLUMN_LABEL = 24  # ... in a quarter-width column ("Choose or try the model" fits; 33 characters were cut off)


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_model_dir):
    root = make_workspace(tmp_path / "ws", tiny_model_dir)
    monkeypatch.setenv("RLHF_WORKSPACE", str(root))
    return root


def numbers(labels: list[str]) -> list[int]:
    return [int(re.match(r"(\d+)\. ", label).group(1)) for label in labels]


def test_home_link_labels_fit_their_space(workspace):
    at = open_page()
    labels = [link.proto.label for link in at.get("page_link")]
    assert labels and all(len(label) <= WHOLE_WIDTH_LABEL for label in labels), labels
    in_columns = [link.proto.label for column in at.columns for link in column.get("page_link")]
    assert len(in_columns) == 4 and all(len(label) <= COLUMN_LABEL for label in in_columns), in_columns


def test_home_gives_the_workshop_minutes_of_its_preset(workspace, monkeypatch):
    def workshop_label(at) -> str:
        return next(link.proto.label for link in at.get("page_link") if link.proto.page == "workshop")

    assert f"about {workshop.preset().minutes} minutes" in workshop_label(open_page())
    monkeypatch.setattr(workshop, "preset", lambda device=None: dataclasses.replace(workshop.CPU, minutes=37))
    assert "about 37 minutes" in workshop_label(open_page())  # read from the preset, not written on the page


def test_home_numbers_its_headings_and_its_picture_the_same_way(workspace):
    at = open_page()
    headings = [h.value for h in at.subheader]
    assert numbers(headings) == list(range(1, len(headings) + 1))
    picture = at.get("graphviz_chart")[0].proto.spec
    steps = re.findall(r'label="(\d+\. [^"\\]*)', picture)
    assert numbers(steps) == list(range(1, len(headings) + 1))
    assert [step.split()[-1] for step in steps[1:3]] == ["pairs", "model"]  # 2 pairs, 3 reward model, as headed
    assert [h.split(". ", 1)[1] for h in headings[1:3]] == ["Preference pairs", "Reward model"]


def test_home_describes_the_model_in_words(workspace):
    at = open_page()
    config = ModelConfig(**json.loads((workspace / "model.json").read_text()))
    shown = plain(texts(at))
    assert f"{describe_model(config)}; chosen." in shown
    assert "· none ·" not in shown


def test_describe_model_names_the_bundled_model_and_its_precision_in_words(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the words for this machine: CPU
    assert describe_model(ModelConfig(quant="none")) == (
        "the bundled SmolLM2-135M-Instruct, full precision (float32, not quantized) on CPU")
    assert describe_model(ModelConfig(quant="4bit", dtype="bfloat16")) == (
        "the bundled SmolLM2-135M-Instruct, 4-bit NF4 weights (bfloat16 compute) on CPU")
    assert describe_model(ModelConfig(source="org/model", quant="none", dtype="float16")) == (
        "org/model, half precision (float16, not quantized) on CPU")
    assert describe_model(ModelConfig(quant="none", device="cuda")).endswith("on GPU")  # asked for, even if absent


@pytest.mark.parametrize(("stored", "sentence"), [
    (10, "learns from 8 and holds out the other 2 (20%)"),
    (1, "needs at least 2"),
])
def test_preferences_says_how_many_pairs_the_reward_model_holds_out(workspace, stored, sentence):
    PairStore(workspace / "pairs.sqlite").add_many(PAIRS[:stored], source="test")
    at = open_page("pages/preferences.py")
    assert f"**{stored}** pairs stored" in at.caption[0].value
    assert sentence in at.caption[0].value
    assert "trains on all" not in at.caption[0].value
