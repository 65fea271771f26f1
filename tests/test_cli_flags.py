"""The CLI's flags: none of those the CLI had before its flags came from the config dataclasses is lost, and
every method of the registry (built-in or added through RLHF_WORKBENCH_METHODS) has a command with a flag per
setting."""

import argparse
import dataclasses
import textwrap

import pytest

from rlhf_engine.cli import build_parser
from rlhf_engine.methods import registry

# Every option of every command as the hand-typed parser had it, with a sample value of its kind (None: a flag
# that takes no value), generated once from that parser. Flags may be added; none of these may go.
TODAY = {
    "validate-data": {},
    "make-demo-pairs": {
        "--n": "1", "--out": "x", "--model": "x", "--quant": "4bit", "--completions": "1", "--temperature": "0.5",
        "--response-length": "1", "--seed": "1",
    },
    "train-rm": {
        "--data": "x", "--out": "x", "--model": "x", "--quant": "4bit", "--steps": "1", "--batch-size": "1",
        "--lr": "0.5", "--pooling": "last", "--seed": "1", "--report-to": "x", "--set": "x",
    },
    "ppo": {
        "--reward": "x", "--out": "x", "--prompts": "x", "--model": "x", "--quant": "4bit", "--steps": "1",
        "--kl-coef": "0.5", "--kl-estimator": "k1", "--batch-size": "1", "--response-length": "1", "--lr": "0.5",
        "--temperature": "0.5", "--missing-eos-penalty": "0.5", "--checkpoint-every": "1", "--seed": "1",
        "--report-to": "x", "--set": "x", "--kl-target": "0.5", "--adaptive-kl": None,
    },
    "grpo": {
        "--reward": "x", "--out": "x", "--prompts": "x", "--model": "x", "--quant": "4bit", "--steps": "1",
        "--kl-coef": "0.5", "--kl-estimator": "k1", "--batch-size": "1", "--response-length": "1", "--lr": "0.5",
        "--temperature": "0.5", "--missing-eos-penalty": "0.5", "--checkpoint-every": "1", "--seed": "1",
        "--report-to": "x", "--set": "x", "--group-size": "1", "--loss-type": "grpo", "--kl-in": "loss",
    },
    "rloo": {
        "--reward": "x", "--out": "x", "--prompts": "x", "--model": "x", "--quant": "4bit", "--steps": "1",
        "--kl-coef": "0.5", "--kl-estimator": "k1", "--batch-size": "1", "--response-length": "1", "--lr": "0.5",
        "--temperature": "0.5", "--missing-eos-penalty": "0.5", "--checkpoint-every": "1", "--seed": "1",
        "--report-to": "x", "--set": "x", "--group-size": "1",
    },
    "dpo": {
        "--reward": "x", "--out": "x", "--data": "x", "--prompts": "x", "--model": "x", "--quant": "4bit",
        "--steps": "1", "--kl-coef": "0.5", "--kl-estimator": "k1", "--batch-size": "1", "--response-length": "1",
        "--lr": "0.5", "--temperature": "0.5", "--missing-eos-penalty": "0.5", "--checkpoint-every": "1",
        "--seed": "1", "--report-to": "x", "--set": "x",
    },
    "sweep": {
        "--reward": "x", "--out": "x", "--kl-coefs": "x", "--vary": "kl_coef", "--values": "x", "--adaptive": None,
        "--methods": "x", "--betas": "x", "--best-of-n": "1", "--best-of-n-prompts": "1", "--one-at-a-time": None,
        "--prompts": "x", "--model": "x", "--quant": "4bit", "--steps": "1", "--kl-coef": "0.5",
        "--kl-estimator": "k1", "--batch-size": "1", "--response-length": "1", "--lr": "0.5", "--temperature": "0.5",
        "--missing-eos-penalty": "0.5", "--checkpoint-every": "1", "--seed": "1", "--report-to": "x", "--set": "x",
        "--kl-target": "0.5",
    },
    "resume": {},
    "sample": {
        "--model": "x", "--quant": "4bit", "--adapter": "x", "--prompt": "x", "--max-new-tokens": "1",
        "--temperature": "0.5", "--seed": "1",
    },
    "run-job": {},
    "export": {"--out": "x", "--adapter": None},
    "report": {"--out": "x"},
    "runs": {},
    "pairs": {"--store": "x"},
    "pairs add": {},
    "pairs list": {"--search": "x", "--limit": "1"},
    "pairs count": {},
    "pairs delete": {},
    "pairs export": {},
    "collect": {
        "--store": "x", "--model": "x", "--quant": "4bit", "--prompt": "x", "--max-new-tokens": "1",
        "--temperature": "0.5", "--seed": "1",
    },
}

# The defaults that were not None then (--store left out: it follows RLHF_WORKSPACE).
TODAY_DEFAULTS = {
    "make-demo-pairs": {"--model": "default", "--quant": "none", "--completions": 4, "--temperature": 0.7,
                        "--response-length": 32, "--seed": 0},
    "train-rm": {"--model": "default", "--quant": "4bit", "--seed": 0, "--set": []},
    "ppo": {"--model": "default", "--quant": "4bit", "--seed": 0, "--set": [], "--adaptive-kl": False},
    "grpo": {"--model": "default", "--quant": "4bit", "--seed": 0, "--set": []},
    "rloo": {"--model": "default", "--quant": "4bit", "--seed": 0, "--set": []},
    "dpo": {"--model": "default", "--quant": "4bit", "--seed": 0, "--set": []},
    "sweep": {"--vary": "kl_coef", "--adaptive": False, "--betas": [], "--best-of-n": 0, "--best-of-n-prompts": None,
              "--one-at-a-time": False, "--model": "default", "--quant": "4bit", "--seed": 0, "--set": []},
    "sample": {"--model": "default", "--quant": "none", "--max-new-tokens": 64, "--temperature": 0.7, "--seed": 0},
    "export": {"--adapter": False},
    "pairs list": {"--limit": 20},
    "collect": {"--model": "default", "--quant": "none", "--max-new-tokens": 64, "--temperature": 0.9, "--seed": 0},
}

FLAG = object()  # where a command's argv takes the flag under test
MINIMAL = {  # the shortest valid argv of each command, FLAG where the option under test goes
    "validate-data": ["validate-data", "pairs.csv", FLAG],
    "make-demo-pairs": ["make-demo-pairs", "--n", "2", "--out", "p.jsonl", FLAG],
    "train-rm": ["train-rm", "--data", "p.jsonl", "--out", "rm", FLAG],
    "sweep": ["sweep", "--reward", "rm", "--out", "s", FLAG],
    "resume": ["resume", "run", FLAG],
    "sample": ["sample", "--prompt", "hi", FLAG],
    "run-job": ["run-job", "run", FLAG],
    "export": ["export", "run", "--out", "o", FLAG],
    "report": ["report", "run", FLAG],
    "runs": ["runs", FLAG],
    "pairs": ["pairs", FLAG, "count"],
    "pairs add": ["pairs", "add", "p.jsonl", FLAG],
    "pairs list": ["pairs", "list", FLAG],
    "pairs count": ["pairs", "count", FLAG],
    "pairs delete": ["pairs", "delete", "1", FLAG],
    "pairs export": ["pairs", "export", "p.jsonl", FLAG],
    "collect": ["collect", FLAG],
}


def minimal(command: str) -> list:
    """MINIMAL's argv, or a method command's: --reward and --out are all it needs."""
    return MINIMAL.get(command) or [command, "--reward", "rm", "--out", "run", FLAG]


def subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for word in command.split():
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    return parser


def argv_with(command: str, option: str | None = None, sample: str | None = None) -> list[str]:
    extra = [] if option is None else [option] if sample is None else [option, sample]
    out = []
    for word in minimal(command):
        out.extend(extra if word is FLAG else [word])
    return out


@pytest.mark.parametrize("command", TODAY)
def test_every_flag_of_the_hand_typed_parser_is_still_there_and_parses(command):
    parser = build_parser()
    options = subparser(parser, command)._option_string_actions
    missing = [option for option in TODAY[command] if option not in options]
    assert not missing, f"{command} lost {missing}"
    parser.parse_args(argv_with(command))
    for option, sample in TODAY[command].items():
        parser.parse_args(argv_with(command, option, sample))  # argparse exits 2 on a flag it refuses


@pytest.mark.parametrize("command", TODAY_DEFAULTS)
def test_defaults_are_as_they_were(command):
    options = subparser(build_parser(), command)._option_string_actions
    for option, default in TODAY_DEFAULTS[command].items():
        action = options[option]
        if isinstance(action, argparse.BooleanOptionalAction):  # unset: the config's default (False) applies
            assert action.default in (default, None), option
        else:
            assert action.default == default, option


def test_the_renamed_destinations_reach_the_config():
    from rlhf_engine.cli import ppo_config, reward_config

    args = build_parser().parse_args(["ppo", "--reward", "rm", "--out", "o", "--lr", "0.001", "--adaptive-kl",
                                      "--kl-target", "3", "--set", "cliprange=0.3", "--no-whiten-advantages"])
    config = ppo_config(args)
    assert (config.learning_rate, config.adaptive_kl, config.kl_target, config.cliprange) == (0.001, True, 3.0, 0.3)
    assert config.whiten_advantages is False and config.seed == 0 and config.model.quant == "4bit"
    args = build_parser().parse_args(["train-rm", "--data", "p", "--out", "o", "--lr", "0.002", "--eval-every",
                                      "7", "--set", "eval_every=9", "--seed", "3"])
    config = reward_config(args)
    assert (config.learning_rate, config.eval_every, config.seed) == (0.002, 9, 3)  # --set wins over the flag


def option_of(field: str) -> str:
    return "--" + field.replace("_", "-")


def fields_of(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name != "model"]


def test_each_method_has_its_command_with_a_flag_per_setting():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for method in registry.methods().values():
        assert method.name in commands
        options = commands[method.name]._option_string_actions
        assert [f for f in fields_of(method.config) if option_of(f) not in options] == []
        assert ("--data" in options) == method.learns_from_pairs
    for cls, command in ((registry.get("ppo").config, "sweep"), (__import__("rlhf_engine.config").config
                                                                 .RewardConfig, "train-rm")):
        options = commands[command]._option_string_actions
        assert [f for f in fields_of(cls) if option_of(f) not in options] == []


@pytest.mark.parametrize("argv, words", [
    (["grpo", "--reward", "r", "--out", "o", "--lr-schedule", "cosine"], "invalid choice"),
    (["ppo", "--reward", "r", "--out", "o", "--value-model", "both"], "invalid choice"),
    (["ppo", "--reward", "r", "--out", "o", "--ppo-epochs", "0"], "positive integer"),
    (["rloo", "--reward", "r", "--out", "o", "--epochs", "two"], "positive integer"),
    (["dpo", "--reward", "r", "--out", "o", "--max-length", "0"], "positive integer"),
    (["ppo", "--reward", "r", "--out", "o", "--kl-target", "-1"], "number >= 0"),
    (["train-rm", "--data", "p", "--out", "o", "--weight-decay", "lots"], "invalid float"),
])
def test_generated_flags_refuse_bad_values_with_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err


def test_help_of_every_command_renders():
    parser = build_parser()
    for command in [c for c in TODAY if " " not in c] + list(registry.names()):
        assert subparser(parser, command).format_help()


@pytest.fixture(scope="module")
def toy_method_folder(tmp_path_factory):
    """A method kept outside the package: REINFORCE with no baseline, knobs of its own. Written once: the
    registry keeps the methods of a value of RLHF_WORKBENCH_METHODS once it has imported them."""
    folder = tmp_path_factory.mktemp("toy-method")
    (folder / "cli_toy_method.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass

        from rlhf_engine.config import PolicyConfig
        from rlhf_engine.methods.registry import Method


        @dataclass
        class ToyConfig(PolicyConfig):
            """REINFORCE on whole answers."""

            baseline: str = "none"  # what is taken off each score before it weights the answer's log-probability
            clip_advantage: float | None = None  # if set, advantages are clipped to +- this
            sign_only: bool = False  # weight each answer by the sign of its score alone


        METHOD = Method("toy", "Toy", ToyConfig, "cli_toy_method:ToyTrainer",
                        "Plain REINFORCE: each answer's log-probability weighted by its score. For tests.",
                        (), ("objective/scores", "time/step_s"))
    '''))
    return folder


@pytest.fixture
def extra_method(toy_method_folder, monkeypatch):
    monkeypatch.syspath_prepend(str(toy_method_folder))
    monkeypatch.setenv(registry.EXTRA_METHODS_ENV, "cli_toy_method")
    return registry.get("toy")


def test_an_extra_method_is_a_command_with_its_flags(extra_method):
    parser = build_parser()
    args = parser.parse_args(["toy", "--reward", "rm", "--out", "o", "--baseline", "mean", "--clip-advantage", "2",
                              "--sign-only", "--steps", "3"])
    from rlhf_engine.cli import policy_config

    config = policy_config(args, extra_method.config)
    assert (config.baseline, config.clip_advantage, config.sign_only, config.steps) == ("mean", 2.0, True, 3)
    assert "Plain REINFORCE" in subparser(parser, "toy").format_help()


def test_an_extra_method_can_join_a_sweep_of_methods(extra_method, tmp_path, capsys):
    from rlhf_engine.cli import main

    argv = ["sweep", "--reward", "/no/rm", "--out", str(tmp_path / "s"), "--methods", "ppo,sft"]
    assert main(argv) == 2
    assert "give each of ppo, grpo, rloo, dpo, toy" in capsys.readouterr().err
    argv[-1] = "ppo,toy"
    argv += ["--set", "vf_coef=0.2", "--betas", "toy=0.1"]
    assert main(argv) == 2  # no reward model there: refused once the members are planned
    assert "none of" not in capsys.readouterr().err


def test_a_broken_extra_method_is_one_line_and_exit_2(monkeypatch, capsys):
    from rlhf_engine.cli import main

    monkeypatch.setenv(registry.EXTRA_METHODS_ENV, "no_such_module_for_the_cli")
    assert main(["runs", "/no/such/runs"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no_such_module_for_the_cli" in err and "\n" not in err
