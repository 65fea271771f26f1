"""A batched sweep: its runs side by side on one base model give each run the metrics it gets alone."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlhf_engine.config import PPOConfig, RewardConfig
from rlhf_engine.core.batched import probe_side_by_side, step_side_by_side
from rlhf_engine.core.generation import sample_responses
from rlhf_engine.core.reward import RewardModel
from rlhf_engine.data.pairs import PreferencePair, write_pairs
from rlhf_engine.lab.demo import gold_score
from rlhf_engine.methods.ppo import PPOTrainer
from rlhf_engine.runs.reward_job import start_reward_job

PAIRS = [PreferencePair(f"Say something about item {i}.", "Lovely, great, wonderful.", "Awful, bad, terrible.")
         for i in range(8)]
PROMPTS = [f"Tell me about thing {i}." for i in range(10)]
PROBES = ["Describe a rainy Monday.", "Review your phone.", "Say hello."]
BETAS = (0.0, 0.1, 1.0)
UNTIMED = ("time/", "tokens_per_s")


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tiny_model_dir):
    from rlhf_engine.config import ModelConfig

    root = tmp_path_factory.mktemp("batched")
    write_pairs(PAIRS, root / "pairs.jsonl")
    model = ModelConfig(source=tiny_model_dir, quant="none", lora_r=4, lora_alpha=8)
    config = RewardConfig(model=model, steps=2, eval_every=2, norm_samples=4, norm_response_length=4)
    assert start_reward_job(root / "rm", config, root / "pairs.jsonl", background=False).state == "completed"
    return root / "rm", model


def _config(model, beta: float) -> PPOConfig:
    # two epochs of two minibatches: the shuffled minibatch order is part of what must match
    return PPOConfig(model=model, steps=3, batch_size=4, num_mini_batches=2, ppo_epochs=2, response_length=6,
                     learning_rate=5e-3, kl_coef=beta, seed=3, reference_probe_samples=2)


def _timeless(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith(UNTIMED)}


def _run_alone(rm_path, model, beta):
    trainer = PPOTrainer(_config(model, beta), RewardModel.load(rm_path), PROMPTS, gold_scorer=gold_score)
    steps = [trainer.step() for _ in range(3)]
    reference = [row for i in (0, 1) for row in trainer.probe_answers(PROBES, reference=True, sample=i)]
    return steps, trainer.probe_answers(PROBES), reference


def test_each_run_of_a_batched_sweep_has_the_metrics_it_has_alone(rm_dir):
    rm_path, model = rm_dir
    alone = [_run_alone(rm_path, model, beta) for beta in BETAS]

    reward_model = RewardModel.load(rm_path)
    first = PPOTrainer(_config(model, BETAS[0]), reward_model, PROMPTS, gold_scorer=gold_score)
    trainers = [first] + [PPOTrainer(_config(model, beta), reward_model, PROMPTS, gold_scorer=gold_score,
                                     base=(first.model.peft, first.tokenizer), name=f"policy{i}")
                          for i, beta in enumerate(BETAS[1:], 1)]
    assert all(t.model.peft is first.model.peft for t in trainers)  # one base model
    together = [step_side_by_side(trainers) for _ in range(3)]
    probes = probe_side_by_side(trainers, PROBES)
    reference = probe_side_by_side(trainers, PROBES, reference=True)

    for i, beta in enumerate(BETAS):
        steps, probe_rows, reference_rows = alone[i]
        for step, ((metrics, samples), (metrics_b, samples_b)) in enumerate(zip(steps, [t[i] for t in together]), 1):
            assert metrics["beta"] == metrics_b["beta"] == beta
            expected, got = _timeless(metrics), _timeless(metrics_b)
            assert expected.keys() == got.keys()
            for key in expected:
                assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-5), (beta, step, key)
            assert [s["response"] for s in samples] == [s["response"] for s in samples_b], (beta, step)
        assert [r["response"] for r in probes[i]] == [r["response"] for r in probe_rows]
        assert [r["kl"] for r in probes[i]] == pytest.approx([r["kl"] for r in probe_rows], rel=1e-4, abs=1e-5)
        assert [(r["sample"], r["response"]) for r in reference[i]] == [(r["sample"], r["response"])
                                                                       for r in reference_rows]
    # the runs really differ (else equality would prove little): β changed what they learnt
    assert together[-1][0][0]["objective/kl"] != pytest.approx(together[-1][2][0]["objective/kl"], rel=1e-3)


def test_rows_decoded_together_get_the_tokens_they_get_alone(rm_dir):
    """Each row block through its own adapter and random stream, in one batch, as when decoded alone."""
    rm_path, model = rm_dir
    first = PPOTrainer(_config(model, 0.0), RewardModel.load(rm_path), PROMPTS)
    other = PPOTrainer(dataclasses.replace(_config(model, 0.0), seed=4), first.reward_model, PROMPTS,
                       base=(first.model.peft, first.tokenizer), name="policy1")
    with torch.no_grad():  # make the two adapters differ a lot
        for name, param in first.model.peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    prompts = PROMPTS[:3]
    alone = []
    for trainer, seed in ((first, 1), (other, 2)):
        trainer.model.use("policy")
        alone.append(sample_responses(first.model.peft, first.tokenizer, prompts, 8, 0.7,
                                      generators=torch.Generator().manual_seed(seed)))
    generators = [torch.Generator().manual_seed(1)] * 3 + [torch.Generator().manual_seed(2)] * 3  # one per block
    together = sample_responses(first.model.peft, first.tokenizer, prompts * 2, 8, 0.7, generators=generators,
                                adapter_names=["policy"] * 3 + ["policy1"] * 3)
    for i, rollout in enumerate(alone):
        part = together.rows(slice(3 * i, 3 * i + 3))
        assert torch.equal(part.response_ids, rollout.response_ids)
        assert torch.equal(part.query_ids, rollout.query_ids)
    assert not torch.equal(alone[0].response_ids, alone[1].response_ids)


def test_repeated_prompts_pass_once_and_decode_the_tokens_of_separate_calls(rm_dir):
    """Best-of-n's samples: r responses per prompt from one pass of each prompt (its cache repeated), row
    s * P + p drawing from stream (s, p), are the tokens r separate decodings give."""
    rm_path, model = rm_dir
    trainer = PPOTrainer(_config(model, 0.0), RewardModel.load(rm_path), PROMPTS)
    prompts, peft, tokenizer = PROMPTS[:3], trainer.model.peft, trainer.tokenizer
    streams = [[torch.Generator().manual_seed(10 * s + p) for p in range(3)] for s in range(3)]
    with peft.disable_adapter():
        separate = [sample_responses(peft, tokenizer, prompts, 8, 0.7, generators=streams[s]) for s in range(3)]
        streams = [[torch.Generator().manual_seed(10 * s + p) for p in range(3)] for s in range(3)]
        together = sample_responses(peft, tokenizer, prompts, 8, 0.7, generators=sum(streams, []), repeats=3)
    for s, alone in enumerate(separate):
        part = together.rows(slice(3 * s, 3 * s + 3))
        assert torch.equal(part.response_ids, alone.response_ids) and torch.equal(part.query_ids, alone.query_ids)
        torch.testing.assert_close(part.logprobs, alone.logprobs)
    assert not torch.equal(separate[0].response_ids, separate[1].response_ids)  # the streams differ
    with pytest.raises(ValueError, match="adapter_names"):
        sample_responses(peft, tokenizer, prompts, 8, 0.7, adapter_names=["policy"] * 6, repeats=2)


def test_the_reference_reads_every_runs_answers_with_each_prompt_passed_once(rm_dir):
    """shared_prompt_logprobs: two runs' answers to the same prompts (and one prompt twice within a run), each prompt
    passed once, give each answer token the reference log-prob a whole-sequence pass gives it."""
    from rlhf_engine.core.prompt_cache import shared_prompt_logprobs

    rm_path, model = rm_dir
    first = PPOTrainer(_config(model, 0.0), RewardModel.load(rm_path), PROMPTS)
    other = PPOTrainer(dataclasses.replace(_config(model, 0.0), seed=4), first.reward_model, PROMPTS,
                       base=(first.model.peft, first.tokenizer), name="policy1")
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0]]
    rollouts = [first.sample(prompts, torch.Generator().manual_seed(1)), other.sample(prompts[:2],
                                                                                     torch.Generator().manual_seed(2))]
    peft = first.model.peft
    with peft.disable_adapter():
        for rows in (32, 1):
            together = shared_prompt_logprobs(peft, rollouts, first.config.temperature, rows=rows)
            for roll, got in zip(rollouts, together):
                want = first.token_logprobs_of(roll, reference=True)
                mask = roll.response_mask.bool()
                torch.testing.assert_close(got[mask], want[mask], rtol=1e-4, atol=1e-4)


def test_a_quantised_base_cannot_take_rows_through_adapters_and_says_so(rm_dir):
    """A 4-bit base's LoRA layers are bitsandbytes layers: a side-by-side decoding then decodes each run's block
    alone (sample_side_by_side asks rows_can_take_adapters); a fused plain base can."""
    from rlhf_engine.core.lora_fused import rows_can_take_adapters

    rm_path, model = rm_dir
    trainer = PPOTrainer(_config(model, 0.0), RewardModel.load(rm_path), PROMPTS)
    assert rows_can_take_adapters(trainer.model.peft)
    assert not rows_can_take_adapters(torch.nn.Linear(2, 2))


def test_decoding_uses_the_batch_invariant_attention_and_puts_the_fast_one_back(rm_dir):
    from rlhf_engine.core.generation import eager_attention

    rm_path, model = rm_dir
    trainer = PPOTrainer(_config(model, 0.0), RewardModel.load(rm_path), PROMPTS)
    inner = trainer.model.peft.get_base_model()
    inner.set_attn_implementation("sdpa")
    with eager_attention(trainer.model.peft):
        assert inner.config._attn_implementation == "eager"
    assert inner.config._attn_implementation == "sdpa"
    seen = []
    layer = inner.model.layers[0].self_attn
    hook = layer.register_forward_pre_hook(lambda module, args: seen.append(module.config._attn_implementation))
    trainer.sample(PROMPTS[:2])
    hook.remove()
    assert seen and set(seen) == {"eager"} and inner.config._attn_implementation == "sdpa"


def test_a_sweep_of_methods_side_by_side_gives_each_run_the_metrics_and_probes_it_has_alone(rm_dir, tmp_path):
    """GRPO, RLOO and DPO on one base model in the sweep's one process: GRPO's and RLOO's rollouts decoded in one
    batch, DPO stepping on its pairs beside them, every probe answer decoded together."""
    from rlhf_engine.config import DPOConfig, GRPOConfig, RLOOConfig
    from rlhf_engine.lab.sweep import Sweep, plan_methods
    from rlhf_engine.lab.sweep_job import prepare_sweep
    from rlhf_engine.runs.policy_job import start_policy_job
    from rlhf_engine.runs.runfolder import RunFolder

    rm_path, model = rm_dir
    shared = dict(model=model, steps=2, response_length=4, probe_every=2, probe_prompts=3, seed=3,
                  learning_rate=5e-3)
    configs = {"grpo": GRPOConfig(batch_size=4, group_size=2, **shared),
               "rloo": RLOOConfig(batch_size=4, group_size=2, **shared), "dpo": DPOConfig(batch_size=2, **shared)}
    members = plan_methods(configs, {"grpo": [0.0, 0.5]})
    assert [label for label, _ in members] == ["grpo-beta-0", "grpo-beta-0.5", "rloo-beta-0.05", "dpo-beta-0.1"]
    (job,) = prepare_sweep(tmp_path / "sw", PPOConfig(**shared), rm_path, methods=members)
    job.start()
    assert job.join() == "completed", job.run.status()
    for member, (label, config) in zip(Sweep(tmp_path / "sw").members(), members):
        alone = start_policy_job(tmp_path / f"alone-{label}", config, rm_path, background=False).run
        assert alone.status()["state"] == member.run.status()["state"] == "completed"
        assert member.run.config()["kind"] == label.split("-")[0]
        for step, (a, b) in enumerate(zip(alone.metrics(), member.run.metrics(), strict=True), 1):
            expected, got = _timeless(a), _timeless(b)
            assert expected.keys() == got.keys()
            for key in expected:
                assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-5), (label, step, key)
        assert [(p["policy"], p["step"], p["response"]) for p in RunFolder(alone.path).probes()] == \
            [(p["policy"], p["step"], p["response"]) for p in member.run.probes()], label


def test_a_subset_probe_answers_its_prompts_as_the_full_probe_does_alone_or_side_by_side(rm_dir):
    """Each probe prompt draws from its own stream (``probe_generators``): the first prompts of the probe set get
    the same answers, scores and KL whether a probe asks them alone or with all the others, one run or several."""
    rm_path, model = rm_dir
    reward_model = RewardModel.load(rm_path)
    quick = dict(ppo_epochs=1, num_mini_batches=1, reference_probe_samples=1)
    first = PPOTrainer(dataclasses.replace(_config(model, 0.0), **quick), reward_model, PROMPTS)
    other = PPOTrainer(dataclasses.replace(_config(model, 0.5), seed=4, **quick), reward_model, PROMPTS,
                       base=(first.model.peft, first.tokenizer), name="policy1")
    trainers = [first, other]
    step_side_by_side(trainers)  # trained a step: the policies differ from the reference and from each other

    def answers(rows):
        return [(r["prompt"], r["sample"], r["response"]) for r in rows]

    full = probe_side_by_side(trainers, PROBES)
    subset = probe_side_by_side(trainers, PROBES[:2])
    for run, rows in enumerate(subset):
        assert answers(rows) == answers(full[run][:2])
        assert [r["kl"] for r in rows] == pytest.approx([r["kl"] for r in full[run][:2]], rel=1e-4, abs=1e-5)
        assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in full[run][:2]], rel=1e-4, abs=1e-5)
    assert answers(first.probe_answers(PROBES[:1])) == answers(full[0][:1])  # alone
    reference_full = probe_side_by_side(trainers, PROBES, reference=True)[0]
    reference_subset = probe_side_by_side(trainers, PROBES[:2], reference=True)[0]
    assert answers(reference_subset) == [a for a in answers(reference_full) if a[0] in PROBES[:2]]
    assert answers(full[0]) != answers(full[1])  # the runs differ, so the equalities above prove something
