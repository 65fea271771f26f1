"""Defaults that learn, and runs that say when they did not: the reward model's held-out verdict against chance,
"auto" pooling per model, and a policy run's warning when its reward model agrees no better than chance."""

import json

import pytest

from rlhf_engine.config import ModelConfig, PPOConfig, RewardConfig, from_dict
from rlhf_engine.runs.policy_job import prepare_policy_job
from rlhf_engine.runs.reward_job import (
    heldout_agreement,
    heldout_verdict,
    learnt_beyond_chance,
    prepare_reward_job,
    reward_verdict,
    start_reward_job,
    weak_reward_model_warning,
)
from rlhf_engine.runs.runfolder import RunFolder

# what a new user met: train-rm's old defaults (last token) on the bundled model, 29 of 51 held-out pairs
WEAK = {"accuracy": 29 / 51, "held_out_pairs": 51, "train_pairs": 205}
STRONG = {"accuracy": 45 / 51, "held_out_pairs": 51, "train_pairs": 205}


def test_the_standard_error_is_binomial_and_a_perfect_share_is_not_a_certainty():
    share, se, pairs = heldout_agreement(WEAK)
    assert pairs == 51 and se == pytest.approx((share * (1 - share) / 51) ** 0.5)
    assert heldout_agreement({"accuracy": 1.0, "held_out_pairs": 3})[1] == pytest.approx((0.25 / 3) ** 0.5)


def test_an_agreement_within_the_noise_of_chance_says_so_and_names_the_fixes():
    verdict = heldout_verdict(WEAK, RewardConfig(pooling="last"))  # the bundled model at the last token
    assert verdict.startswith("Held-out agreement 57% ± 7% (29 of 51 pairs; chance 50%)")
    assert "within the noise of chance (1.0 standard errors)" in verdict
    assert "mean pooling" in verdict and "80%" in verdict  # measured on the bundled model
    assert "more pairs (it learnt from 205)" in verdict and "more steps (it took 120)" in verdict
    assert not learnt_beyond_chance(WEAK)
    other_model = heldout_verdict(WEAK, RewardConfig(model=ModelConfig(source="org/other"), pooling="last"))
    assert "mean pooling (pooling = mean)" in other_model and "80%" not in other_model
    assert "mean pooling" not in heldout_verdict(WEAK, RewardConfig(pooling="mean"))  # it has it already


def test_an_agreement_clear_of_chance_says_how_far_and_no_fix():
    verdict = heldout_verdict(STRONG)
    assert verdict == "Held-out agreement 88% ± 5% (45 of 51 pairs; chance 50%), 8.5 standard errors above chance."
    assert learnt_beyond_chance(STRONG)
    below = heldout_verdict({"accuracy": 10 / 51, "held_out_pairs": 51})
    assert "standard errors below chance" in below and "swapped" in below
    assert not learnt_beyond_chance({"accuracy": 10 / 51, "held_out_pairs": 51})


@pytest.mark.parametrize("source, pooling, resolved", [
    ("default", "auto", "mean"),  # the bundled model: its EOS state does not carry the answer's sentiment
    ("org/other", "auto", "last"),  # any other model: the literature's last token
    ("default", "last", "last"),  # a word given is kept
    ("org/other", "mean", "mean"),
])
def test_auto_pooling_resolves_per_model(source, pooling, resolved):
    assert RewardConfig(model=ModelConfig(source=source), pooling=pooling).resolved_pooling() == resolved


def test_a_run_stores_the_pooling_auto_stood_for_and_old_runs_read_the_same(tmp_path, pairs_file, tiny_model_config):
    for name, model, resolved in (("bundled", ModelConfig(), "mean"), ("tiny", tiny_model_config, "last")):
        job = prepare_reward_job(tmp_path / name, RewardConfig(model=model), pairs_file)
        assert job.run.config()["config"]["pooling"] == resolved
    old_run = {"model": {"source": "default"}, "pooling": "last"}  # written before "auto" existed
    assert from_dict(RewardConfig, old_run).resolved_pooling() == "last"


def test_train_rm_help_says_what_auto_pooling_is(capsys):
    from rlhf_engine.cli import main

    with pytest.raises(SystemExit):
        main(["train-rm", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{auto,last,mean}" in text and "auto: mean on the bundled model, else last (default auto)" in text


@pytest.fixture(scope="module")
def weak_reward_dir(tmp_path_factory, tiny_model_dir):
    """A tiny reward model trained through the engine on 12 pairs: 2 held out, never clear of chance."""
    from rlhf_engine.data.pairs import PreferencePair, write_pairs

    root = tmp_path_factory.mktemp("weak")
    write_pairs([PreferencePair(f"Say something about item {i}.", "Lovely, great.", "Awful, bad.")
                 for i in range(12)], root / "pairs.jsonl")
    model = ModelConfig(source=tiny_model_dir, quant="none", lora_r=4, lora_alpha=8)
    config = RewardConfig(model=model, steps=2, eval_every=2, norm_samples=2, norm_response_length=2)
    job = start_reward_job(root / "rm", config, root / "pairs.jsonl", background=False)
    assert job.state == "completed", job.run.status()
    return root / "rm"


def test_a_reward_run_ends_with_its_verdict_in_events_log(weak_reward_dir):
    verdict = reward_verdict(weak_reward_dir)
    assert verdict.startswith("Held-out agreement") and "of 2 pairs" in verdict
    assert "within the noise of chance" in verdict
    assert RunFolder(weak_reward_dir).events().splitlines()[-2].endswith(verdict)  # the last word before 'completed'


def test_a_policy_run_on_a_weak_reward_model_warns_at_its_start(tmp_path, weak_reward_dir, tiny_model_config):
    warning = weak_reward_model_warning(weak_reward_dir)
    assert warning is not None and "does not agree with its preference labels beyond chance" in warning
    config = PPOConfig(model=tiny_model_config, steps=1, batch_size=2, response_length=4)
    run = prepare_policy_job(tmp_path / "ppo", config, weak_reward_dir).run
    assert f"warning: {warning}" in run.events()
    assert run.status()["warning"] == warning


def test_a_reward_model_clear_of_chance_gives_no_warning(tmp_path, weak_reward_dir, tiny_model_config):
    strong = tmp_path / "strong-rm"
    strong.mkdir()
    for name in ("reward_model.json", "config.json"):
        (strong / name).write_bytes((weak_reward_dir / name).read_bytes())
    (strong / "eval.json").write_text(json.dumps(STRONG))
    assert weak_reward_model_warning(strong) is None
    assert weak_reward_model_warning(tmp_path / "no-evaluation") is None  # nothing to judge by: no word
    config = PPOConfig(model=tiny_model_config, steps=1, batch_size=2, response_length=4)
    run = prepare_policy_job(tmp_path / "ppo", config, strong).run
    assert "warning" not in run.status() and "warning:" not in run.events()


@pytest.mark.parametrize("argv, penalty, group_penalty", [
    ([], 0.5, 1.0),  # the bundled model: its answers to open prompts run past the cap without it (group methods: more)
    (["--set", "missing_eos_penalty=none"], None, None),  # turned off on purpose
    (["--set", "missing_eos_penalty=1.5"], 1.5, 1.5),
    (["--model", "someone/other-model"], None, None),  # any other model: the literature's default (none)
])
def test_the_command_line_starts_the_bundled_model_with_a_missing_eos_penalty(tmp_path, argv, penalty, group_penalty):
    from rlhf_engine import cli
    from rlhf_engine.config import GRPOConfig, RLOOConfig

    for command, config_class, want in (("ppo", PPOConfig, penalty), ("grpo", GRPOConfig, group_penalty),
                                        ("rloo", RLOOConfig, group_penalty)):
        args = cli.build_parser().parse_args([command, "--reward", str(tmp_path), "--out", str(tmp_path / "x"), *argv])
        assert cli.train.policy_config(args, config_class).missing_eos_penalty == want
    assert PPOConfig().missing_eos_penalty is None  # the engine's own default stays the literature's
