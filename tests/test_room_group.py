"""A workshop room's group: participants' policy runs side by side in one process on one base model, each with its
own seed and its own reward model, each with the metrics it has alone; a run added while the group trains joins
at a step boundary; one run stops, or fails, alone."""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from rlhf_engine.config import ModelConfig, PPOConfig
from rlhf_engine.core.reward import ADAPTER_NAME, HEAD_FILE, RewardModel
from rlhf_engine.runs.group_job import (
    MEMBERS_FILE,
    add_member,
    group_body,
    group_key,
    members_of,
    prepare_group,
    stop_member,
)
from rlhf_engine.runs.job import Job
from rlhf_engine.runs.policy_job import prepare_policy_job, start_policy_job
from rlhf_engine.runs.runfolder import RunFolder

UNTIMED = ("time/", "tokens_per_s")
TEXTS = ["Lovely, great, wonderful.", "Awful, bad, terrible.", "Hello there.", ""]
PROMPTS = [f"Say something about item {i}." for i in range(len(TEXTS))]


def _model(tiny_model_dir) -> ModelConfig:
    return ModelConfig(source=tiny_model_dir, quant="none", lora_r=4, lora_alpha=8)  # the trained RM's base


def _config(tiny_model_dir, seed: int, steps: int = 4, **changes) -> PPOConfig:
    # two epochs of two minibatches (the shuffled order must match too); probes after steps 2 and 4
    settings = dict(steps=steps, batch_size=4, num_mini_batches=2, ppo_epochs=2, response_length=6,
                    learning_rate=5e-3, kl_coef=0.05, seed=seed, probe_every=2, probe_prompts=3)
    return PPOConfig(model=_model(tiny_model_dir), **{**settings, **changes})


@pytest.fixture(scope="module")
def reward_dirs(tmp_path_factory, trained_tiny_reward_dir):
    """Three reward models on the tiny base: the trained one, another (its adapter and head moved far from the
    first's: scoring with the wrong adapter would show), and one whose head gives NaN (a run that fails)."""
    root = tmp_path_factory.mktemp("group-rms")
    first, other, broken = root / "rm-a", root / "rm-b", root / "rm-nan"
    for folder in (first, other, broken):
        shutil.copytree(trained_tiny_reward_dir, folder)
    generator = torch.Generator().manual_seed(7)
    adapter = other / ADAPTER_NAME / "adapter_model.safetensors"
    weights = load_file(str(adapter))
    save_file({k: v + 0.3 * torch.randn(v.shape, generator=generator) for k, v in weights.items()}, str(adapter))
    head = load_file(str(other / HEAD_FILE))
    save_file({"weight": -3 * head["weight"], "bias": head["bias"] + 0.5}, str(other / HEAD_FILE))
    head = load_file(str(broken / HEAD_FILE))
    save_file({"weight": torch.full_like(head["weight"], float("nan")), "bias": head["bias"]}, str(broken / HEAD_FILE))
    return first, other, broken


@pytest.fixture(scope="module")
def alone(tmp_path_factory, tiny_model_dir, reward_dirs):
    """Each (seed, reward model) run of the tests trained alone, in a process of its own's way (policy_body)."""
    root = tmp_path_factory.mktemp("alone")
    first, other, _ = reward_dirs
    runs = {}
    for seed, rm, steps in ((3, first, 4), (4, other, 4), (5, first, 3)):
        job = start_policy_job(root / f"seed-{seed}", _config(tiny_model_dir, seed, steps), rm, background=False)
        assert job.state == "completed", job.run.status()
        runs[seed] = job.run
    return runs


def _timeless(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith(UNTIMED)}


def _assert_same_run(alone: RunFolder, member: RunFolder) -> None:
    """The member's metrics (to float tolerance, as a batched sweep's: test_batched), samples and probes are the
    run's alone."""
    expected_rows, got_rows = alone.metrics(), member.metrics()
    assert len(expected_rows) == len(got_rows) > 0
    for step, (a, b) in enumerate(zip(expected_rows, got_rows), 1):
        expected, got = _timeless(a), _timeless(b)
        assert expected.keys() == got.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-5), (member.id, step, key)
    assert [s["response"] for s in alone.samples()] == [s["response"] for s in member.samples()], member.id
    assert [(p["policy"], p["step"], p["response"]) for p in alone.probes()] == \
        [(p["policy"], p["step"], p["response"]) for p in member.probes()], member.id
    assert [p["score"] for p in member.probes()] == pytest.approx([p["score"] for p in alone.probes()], rel=1e-4,
                                                                  abs=1e-5)


def _wait_for_step(group: RunFolder, step: int, job: Job) -> None:
    deadline = time.monotonic() + 120
    while group.status().get("step", 0) < step and job.alive:
        assert time.monotonic() < deadline, group.status()
        time.sleep(0.02)


def test_two_reward_models_on_one_base_score_as_each_does_alone(reward_dirs, tiny_model_dir, tmp_path):
    from rlhf_engine.methods.ppo import PPOTrainer

    first, other, _ = reward_dirs
    alone = [RewardModel.load(folder).score(PROMPTS, TEXTS) for folder in (first, other)]
    assert not torch.allclose(alone[0], alone[1])

    shared = RewardModel.load(first)
    trainer = PPOTrainer(_config(tiny_model_dir, 3), shared, PROMPTS)  # its adapter moves onto the policy's base
    base = (trainer.model.peft, trainer.tokenizer, trainer.config.model)
    beside = RewardModel.load(other, base=base)  # loaded straight onto that base: no second copy
    again = RewardModel.load(other)
    again.share_base(trainer.model.peft)  # the same folder loaded twice: a third name
    names = [rm.adapter_name for rm in (shared, beside, again)]
    assert names[0] == ADAPTER_NAME and len(set(names)) == 3 and all(n.startswith("reward-") for n in names[1:])
    assert shared.backbone is beside.backbone is again.backbone is trainer.model.peft
    for rm, expected in zip((shared, beside, again), (alone[0], alone[1], alone[1])):
        assert torch.allclose(rm.score(PROMPTS, TEXTS), expected, rtol=1e-5, atol=1e-6), rm.adapter_name
    twin = beside.twin()  # another run scoring with the same reward model: one adapter, its own gain and bias
    twin.gain, twin.bias = 2.0, 1.0
    assert twin.adapter_name == beside.adapter_name and (beside.gain, beside.bias) != (2.0, 1.0)
    raw = beside.score(PROMPTS, TEXTS, normalized=False)
    assert torch.allclose(twin.score(PROMPTS, TEXTS), 2.0 * raw + 1.0, rtol=1e-5, atol=1e-6)
    trainer.step()  # the policy still trains beside them, and they still score as alone
    assert torch.allclose(beside.score(PROMPTS, TEXTS), alone[1], rtol=1e-5, atol=1e-6)
    beside.save(tmp_path / "saved")  # saved as reward/ whatever its name on the shared base
    assert torch.allclose(RewardModel.load(tmp_path / "saved").score(PROMPTS, TEXTS), alone[1], rtol=1e-5, atol=1e-6)


def test_group_key_names_what_decoding_together_needs(tmp_path, tiny_model_dir, reward_dirs):
    first = reward_dirs[0]
    a = prepare_policy_job(tmp_path / "a", _config(tiny_model_dir, 3), first).run
    b = prepare_policy_job(tmp_path / "b", _config(tiny_model_dir, 4, kl_coef=0.5), first).run
    c = prepare_policy_job(tmp_path / "c", _config(tiny_model_dir, 4, temperature=1.0), first).run
    assert group_key(a.path) == group_key(b.path) != group_key(c.path)
    assert group_key(first) is None  # a reward model's folder joins no group
    with pytest.raises(ValueError, match="temperature"):
        prepare_group(tmp_path / "g", [a.path, c.path])
    group = prepare_group(tmp_path / "g", [a.path, b.path], owners=["ann", None])
    assert group.status()["owners"] == ["ann"]
    with pytest.raises(ValueError, match="cannot train"):
        add_member(group.path, c.path)
    with pytest.raises(ValueError, match="already"):
        add_member(group.path, b.path)


def test_a_group_gives_each_run_its_metrics_alone_and_takes_a_newcomer_at_a_step_boundary(
        tmp_path, tiny_model_dir, reward_dirs, alone):
    first, other, _ = reward_dirs
    workspace = tmp_path / "participants"
    m1 = prepare_policy_job(workspace / "ann" / "run", _config(tiny_model_dir, 3), first).run
    m2 = prepare_policy_job(workspace / "bob" / "run", _config(tiny_model_dir, 4), other).run
    m3 = prepare_policy_job(workspace / "cy" / "run", _config(tiny_model_dir, 5, steps=3), first).run
    group = prepare_group(tmp_path / "room" / "group-1", [m1.path, m2.path], owners=["ann", "bob"], grace_s=0.5)
    job = Job(group, group_body).start()
    _wait_for_step(group, 1, job)
    assert add_member(group.path, m3.path, owner="cy")  # while ann's and bob's runs train
    assert job.join(timeout=300) == "completed", (group.status(), group.events())

    joined = {m["run"]: m for m in group.status()["members"]}
    assert 2 <= joined[str(m3.path)]["joined_at_step"] <= 4  # beside the others, not after them
    for member, seed in ((m1, 3), (m2, 4), (m3, 5)):
        assert member.status()["state"] == "completed" and joined[str(member.path)]["state"] == "completed"
        assert f"started in group {group.id}" in member.events()
        assert (member.path / "policy" / "adapter_model.safetensors").is_file()  # the final adapter, as alone
        _assert_same_run(alone[seed], member)
    status = group.status()
    assert status["state"] == "completed" and status["owners"] == []  # every run left
    assert any("closed" in line for line in map(str, (group.path / MEMBERS_FILE).read_text().splitlines()))
    late = prepare_policy_job(workspace / "dee" / "run", _config(tiny_model_dir, 6), first).run
    assert not add_member(group.path, late.path)  # the group has ended: the caller starts it another way
    assert [m["run"] for m in members_of(group.path)] == [str(m1.path), str(m2.path), str(m3.path)]


def test_a_run_stops_or_fails_alone_and_the_others_go_on(tmp_path, tiny_model_dir, reward_dirs, alone):
    from rlhf_engine.runs.resume import resume_job

    first, other, broken = reward_dirs
    good = prepare_policy_job(tmp_path / "good", _config(tiny_model_dir, 3), first).run
    stopping = prepare_policy_job(tmp_path / "stopping", _config(tiny_model_dir, 4), other).run
    failing = prepare_policy_job(tmp_path / "failing", _config(tiny_model_dir, 5), broken).run
    group = prepare_group(tmp_path / "group", [good.path, stopping.path, failing.path], grace_s=0.2)
    job = Job(group, group_body).start()
    _wait_for_step(group, 1, job)
    stop_member(stopping.path)
    assert job.join(timeout=300) == "completed", (group.status(), group.events())

    assert failing.status()["state"] == "failed"
    assert "reward-model score" in failing.status()["error"] and failing.metrics() == []
    stopped = stopping.status()
    assert stopped["state"] == "stopped" and 1 <= stopped["step"] < 4
    assert stopping.latest_checkpoint().name == f"step-{stopped['step']:06d}"  # checkpointed as it stopped
    assert not (stopping.path / "stop-requested").exists()
    assert good.status()["state"] == "completed"
    _assert_same_run(alone[3], good)
    # Resume, alone, continues the stopped run from its checkpoint to the run it would have been
    assert resume_job(stopping.path, background=False).state == "completed"
    _assert_same_run(alone[4], stopping)


def test_stopping_the_group_stops_every_run_with_a_checkpoint(tmp_path, tiny_model_dir, reward_dirs):
    """What SIGINT to a group's process does (run-job sets the job's stop event, as a sweep's)."""
    first, other, _ = reward_dirs
    runs = [prepare_policy_job(tmp_path / name, _config(tiny_model_dir, seed, steps=20, probe_every=0), rm).run
            for name, seed, rm in (("a", 3, first), ("b", 4, other))]
    group = prepare_group(tmp_path / "group", [run.path for run in runs], owners=["ann", "bob"])
    job = Job(group, group_body).start()
    _wait_for_step(group, 1, job)
    assert group.status()["owners"] == ["ann", "bob"]  # the runs it trains, by owner
    job.stop()
    assert job.join(timeout=300) == "stopped"
    for run in runs:
        status = run.status()
        assert status["state"] == "stopped" and 1 <= status["step"] < 20
        assert run.latest_checkpoint().name == f"step-{status['step']:06d}"
    assert not add_member(group.path, runs[0].path)  # a stopped group takes no more runs
