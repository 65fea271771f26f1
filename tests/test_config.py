"""Config documentation (the dashboard's help texts) and run-name safety."""

import dataclasses
import threading

import pytest

from rlhf_engine.config import ModelConfig, PPOConfig, RewardConfig, field_defaults, field_help
from rlhf_engine.methods import registry
from rlhf_engine.runs.runfolder import safe_name


@pytest.mark.parametrize("cls", [ModelConfig, RewardConfig, PPOConfig])
def test_every_knob_has_a_one_line_help(cls):
    helps = field_help(cls)
    knobs = [f.name for f in dataclasses.fields(cls) if f.name != "model"]
    assert [k for k in knobs if not helps.get(k)] == []
    assert all("\n" not in text and len(text) > 10 for text in helps.values())


def test_help_and_defaults_match_the_source():
    assert field_help(PPOConfig)["kl_coef"] == "beta, the KL penalty weight (TRL default 0.05)"
    assert field_help(PPOConfig)["missing_eos_penalty"].startswith("score lost by an answer with no EOS")
    assert field_defaults(PPOConfig)["cliprange"] == 0.2 and field_defaults(RewardConfig)["pooling"] == "auto"


def test_pages_reading_help_in_threads_at_once_all_get_it():
    """Each Streamlit session runs its page in a thread of its own. Under 20 participants one page raised "SystemError:
    AST constructor recursion depth mismatch" from inspect.getsource in field_help (Python 3.11 parses with shared
    state); the help is now read once per class under a lock. The crash is too rare to provoke here: this checks
    that threads reading at once all get the same help, and that a caller's change to it stays its own."""
    classes = [ModelConfig, RewardConfig, *(method.config for method in registry.methods().values())]
    expected = {cls: field_help(cls) for cls in classes}
    start, errors, wrong = threading.Barrier(8), [], []

    def read() -> None:
        start.wait()
        for _ in range(10):
            for cls in classes:
                try:
                    if field_help(cls) != expected[cls]:
                        wrong.append(cls)
                except Exception as err:  # noqa: BLE001 - reported below
                    errors.append(err)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [] and wrong == []
    field_help(PPOConfig)["kl_coef"] = "changed by a caller"
    assert field_help(PPOConfig) == expected[PPOConfig]


@pytest.mark.parametrize("name", ["../x", "../../etc/passwd", "a/b", ".hidden", "", " ", "x" * 101, "a\\b", "né"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(ValueError, match="not allowed"):
        safe_name(name)


def test_plain_names_pass():
    assert safe_name(" ppo-beta0.05_run1 ") == "ppo-beta0.05_run1"


def test_a_run_saved_before_value_model_existed_keeps_its_separate_value_adapter():
    """Old config.json files have no value_model: they ran with a separate adapter and must resume with one."""
    from rlhf_engine.config import from_dict, to_dict

    old = {k: v for k, v in to_dict(PPOConfig()).items() if k != "value_model"}
    assert from_dict(PPOConfig, old).value_model == "separate"
    assert from_dict(PPOConfig, to_dict(PPOConfig())).value_model == "shared"  # the new default round-trips
