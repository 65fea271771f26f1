"""GRPO and RLOO as trainers on the shared rollout: they learn from their groups, resume exactly, and run from
the command line with PPO's flags and errors."""

import json
import shutil
import time

import pytest
import torch

from rlhf_engine.cli import main
from rlhf_engine.config import GRPOConfig, RLOOConfig
from rlhf_engine.core.generation import token_logprobs
from rlhf_engine.data.pairs import PreferencePair
from rlhf_engine.runs.policy_job import start_policy_job
from rlhf_engine.runs.resume import resume_job
from rlhf_engine.runs.runfolder import RunFolder

TRL_GROUP_METRICS = {"reward", "reward_std", "frac_reward_zero_std", "entropy", "completions/mean_length",
                     "completions/clipped_ratio", "loss", "grad_norm"}


class EvenRowsWin:
    """Scores +1 for even rows and -1 for odd ones: every group of 2 or 4 answers has winners and losers."""

    gain, bias, normalized_on = 1.0, 0.0, None

    def score(self, prompts, responses, normalized=True):
        return torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(len(responses))])


def _trainer(method, model_config, **kw):
    from rlhf_engine.methods.grpo import GRPOTrainer
    from rlhf_engine.methods.rloo import RLOOTrainer

    if method.startswith("rloo"):  # "rloo_clipped": two passes with the clipped ratio, as TRL's
        config = RLOOConfig(model=model_config, epochs=2 if method == "rloo_clipped" else 1, **kw)
        return RLOOTrainer(config, EvenRowsWin(), [f"prompt {i}" for i in range(4)])
    config = GRPOConfig(model=model_config, loss_type=method, **kw)
    return GRPOTrainer(config, EvenRowsWin(), [f"prompt {i}" for i in range(4)])


@pytest.mark.parametrize("method", ["grpo", "dr_grpo", "rloo", "rloo_clipped"])
def test_one_update_raises_the_answers_that_beat_their_group_and_lowers_the_others(tiny_model_config, method):
    trainer = _trainer(method, tiny_model_config, steps=1, batch_size=8, group_size=4, kl_coef=0.0,
                       learning_rate=3e-3, response_length=8, lr_schedule="constant")
    prompts = trainer.next_prompts()
    assert prompts[:4] == [prompts[0]] * 4 and prompts[4:] == [prompts[4]] * 4  # two groups of four, in a row
    batch = trainer.advantages(trainer.rollout(prompts))
    assert torch.equal(batch.advantages > 0, torch.tensor([True, False] * 4))
    roll = batch.scored.rollout

    def answer_logprobs():
        with torch.no_grad():
            logits = trainer.model.policy_logits(roll.input_ids, roll.attention_mask, roll.response_ids.shape[1],
                                                 trainer.config.temperature)
        return (token_logprobs(logits, roll.response_ids) * roll.response_mask).sum(1)

    before = answer_logprobs()
    stats = trainer.update(batch)
    change = answer_logprobs() - before
    assert (change[0::2] > 0).all() and (change[1::2] < 0).all(), change
    assert stats["grad_norm"] > 0


def test_grpo_puts_beta_k3_in_the_loss_or_beta_kl_in_the_reward(tiny_model_config):
    trainer = _trainer("grpo", tiny_model_config, steps=1, batch_size=4, group_size=2, kl_coef=0.5, response_length=4)
    scored = trainer.rollout(trainer.next_prompts())
    scored.logprobs = scored.ref_logprobs + 0.1  # as if the policy had moved: KL 0.1 per token (k1)
    in_loss = trainer.advantages(scored)
    assert torch.equal(in_loss.rewards, scored.scores)  # the KL is the loss's business
    trainer.config.kl_in = "reward"
    in_reward = trainer.advantages(scored)
    torch.testing.assert_close(in_reward.rewards, scored.scores - 0.5 * 0.1 * scored.mask.sum(1))


@pytest.fixture
def reward_dir(trained_tiny_reward_dir, tmp_path):
    """A copy of the session's tiny reward model (runs may write their normalisation beside it)."""
    shutil.copytree(trained_tiny_reward_dir, tmp_path / "rm-copy")
    return tmp_path / "rm-copy"


def test_a_stopped_grpo_run_resumes_to_the_metrics_of_one_that_ran_straight(tmp_path, tiny_model_config,
                                                                             reward_dir):
    config = GRPOConfig(model=tiny_model_config, steps=3, batch_size=4, group_size=2, response_length=4,
                        checkpoint_every=1, probe_every=0, learning_rate=1e-2)
    straight = start_policy_job(tmp_path / "straight", config, reward_dir, background=False)
    assert straight.state == "completed", straight.run.status()
    assert RunFolder(straight.run.path).config()["kind"] == "grpo"
    stopped = start_policy_job(tmp_path / "stopped", config, reward_dir)
    while len(stopped.run.metrics()) < 1 and stopped.alive:
        time.sleep(0.02)
    stopped.stop()
    assert stopped.join(timeout=120) == "stopped"
    assert stopped.run.status()["step"] < 3
    assert resume_job(stopped.run.path, background=False).state == "completed"
    for a, b in zip(straight.run.metrics(), stopped.run.metrics(), strict=True):
        for key in ("objective/scores", "objective/kl", "loss", "reward_std"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)


def test_grpo_and_rloo_from_the_command_line_log_trls_metric_names_and_refuse_bad_input(tmp_path, tiny_model_dir,
                                                                                       reward_dir, capsys):
    common = ["--reward", str(reward_dir), "--model", tiny_model_dir, "--quant", "none", "--steps", "2",
              "--batch-size", "4", "--response-length", "4"]
    assert main(["grpo", "--out", str(tmp_path / "grpo"), *common, "--group-size", "2", "--loss-type", "dr_grpo",
                 "--set", "probe_every=0"]) == 0
    assert main(["rloo", "--out", str(tmp_path / "rloo"), *common, "--group-size", "2", "--kl-coef", "0.1",
                 "--set", "probe_every=0"]) == 0
    for method, extra in (("grpo", {"kl", "clip_ratio/region_mean"}), ("rloo", set())):
        run = RunFolder(tmp_path / method)
        assert run.config()["kind"] == method and run.status()["state"] == "completed"
        rows = run.metrics()
        assert [m["step"] for m in rows] == [1, 2]
        assert TRL_GROUP_METRICS | extra | {"objective/kl", "kl/k1", "kl/k2", "kl/k3"} <= set(rows[-1])
        assert (tmp_path / method / "policy" / "adapter_model.safetensors").is_file()
        samples = [json.loads(line) for line in (tmp_path / method / "samples.jsonl").read_text().splitlines()]
        assert {"advantage", "reward", "token_kl"} <= set(samples[0])
    assert json.loads((tmp_path / "grpo" / "config.json").read_text())["config"]["loss_type"] == "dr_grpo"
    capsys.readouterr()
    assert main(["rloo", "--out", str(tmp_path / "bad"), *common, "--group-size", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "batch_size 4 must be a multiple of group_size 3" in err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit) as exit_info:  # a PPO-only flag is refused by the parser
        main(["grpo", "--out", str(tmp_path / "bad"), *common, "--kl-target", "3"])
    assert exit_info.value.code == 2


def test_dpo_raises_the_chosen_answers_over_the_rejected_and_probes_its_kl_from_the_command_line(
        tmp_path, tiny_model_dir, reward_dir, capsys):
    out = tmp_path / "dpo"
    assert main(["dpo", "--reward", str(reward_dir), "--out", str(out), "--model", tiny_model_dir, "--quant", "none",
                 "--steps", "6", "--batch-size", "4", "--lr", "3e-3", "--response-length", "4",
                 "--set", "probe_every=3", "--set", "probe_prompts=3", "--set", "lr_schedule=constant"]) == 0
    run = RunFolder(out)
    assert run.config()["kind"] == "dpo" and run.config()["pairs"] == str(reward_dir / "pairs.jsonl")
    rows = run.metrics()
    assert [m["step"] for m in rows] == list(range(1, 7))
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
            "logps/rejected", "beta", "grad_norm"} <= set(rows[-1])
    assert rows[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert rows[-1]["rewards/margins"] > 0.05 and rows[-1]["loss"] < rows[0]["loss"]  # it learnt the preference
    probes = run.probes()
    assert {p["policy"] for p in probes} == {"reference", "policy"} and {p["step"] for p in probes} == {0, 3, 6}
    assert any(p["kl"] != 0 for p in probes if p["policy"] == "policy")  # its KL to the reference, on held-out prompts
    assert (out / "policy" / "adapter_model.safetensors").is_file() and (out / "pairs.jsonl").is_file()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    capsys.readouterr()
    assert main(["dpo", "--reward", str(reward_dir), "--out", str(tmp_path / "dpo-bad"), "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bad.jsonl" in err and "row 2" in err
    assert not (tmp_path / "dpo-bad").exists()


@pytest.mark.parametrize("method", ["grpo", "dr_grpo", "rloo", "rloo_clipped"])
def test_a_group_update_in_parts_of_fewer_answers_takes_the_same_step_as_in_one_pass(tiny_model_config, method):
    after = []
    for per_pass in (8, 3, 1):  # 3: parts of 3, 3 and 2 answers, weighted by their shares
        trainer = _trainer(method, tiny_model_config, steps=1, batch_size=8, group_size=4, kl_coef=0.1,
                           learning_rate=3e-3, response_length=8, answers_per_pass=per_pass)
        metrics, _ = trainer.step()
        after.append((metrics, [p.detach().clone() for p in trainer.params]))
    (whole, params), *in_parts = after
    for metrics, moved in in_parts:
        for name in ("loss", "grad_norm", "kl", "clip_ratio/region_mean"):
            if name in whole:
                assert metrics[name] == pytest.approx(whole[name], rel=1e-4, abs=1e-6), name
        for a, b in zip(params, moved):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(params, _trainer(
        method, tiny_model_config, steps=1, batch_size=8, group_size=4).params))  # the step moved the weights


def test_dpo_in_passes_of_fewer_pairs_takes_the_same_step_as_in_one_pass(tiny_model_config):
    from rlhf_engine.config import DPOConfig
    from rlhf_engine.methods.dpo import DPOTrainer

    pairs = [PreferencePair(f"Say something about item {i}.", "Lovely, great" + ", wonderful" * (i % 3),
                            "Awful." * (1 + i % 2)) for i in range(6)]
    after = []
    for per_pass in (6, 4, 1):
        config = DPOConfig(model=tiny_model_config, steps=1, batch_size=6, learning_rate=1e-2, pairs_per_pass=per_pass,
                           probe_every=0)
        trainer = DPOTrainer(config, EvenRowsWin(), pairs)
        metrics, _ = trainer.step()
        after.append((metrics, [p.detach().clone() for p in trainer.params]))
    (whole, params), *in_passes = after
    for metrics, moved in in_passes:
        assert metrics["loss"] == pytest.approx(whole["loss"], rel=1e-5)
        assert metrics["rewards/margins"] == pytest.approx(whole["rewards/margins"], abs=1e-6)
        for a, b in zip(params, moved):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
