"""End to end on the bundled SmolLM2-135M-Instruct, 4-bit, with the simulated annotator."""

import pytest
import torch

from rlhf_engine.config import ModelConfig, PPOConfig, RewardConfig
from rlhf_engine.data.pairs import read_pairs, write_pairs
from rlhf_engine.lab.demo import demo_prompt_split, gold_score, make_demo_pairs
from rlhf_engine.runs.policy_job import start_policy_job
from rlhf_engine.runs.reward_job import start_reward_job

pytestmark = pytest.mark.slow


def test_whole_loop_on_the_bundled_model(tmp_path):
    bundled = ModelConfig(source="default", quant="none")
    pairs = make_demo_pairs(4, bundled, seed=0, response_length=16, prompts=demo_prompt_split()[0][:8])
    assert all(gold_score(p.chosen) > gold_score(p.rejected) for p in pairs)
    write_pairs(pairs, tmp_path / "pairs.jsonl")
    assert read_pairs(tmp_path / "pairs.jsonl") == pairs

    quantized = ModelConfig(source="default", quant="4bit")
    rm_config = RewardConfig(model=quantized, steps=2, batch_size=2, eval_every=2, norm_samples=2,
                             norm_response_length=4)
    rm_job = start_reward_job(tmp_path / "rm", rm_config, tmp_path / "pairs.jsonl", background=False)
    assert rm_job.state == "completed", rm_job.run.status()

    ppo_config = PPOConfig(model=quantized, steps=1, batch_size=2, response_length=8, ppo_epochs=2, probe_prompts=2)
    ppo_job = start_policy_job(tmp_path / "ppo", ppo_config, tmp_path / "rm", background=False)
    assert ppo_job.state == "completed", ppo_job.run.status()
    metrics = ppo_job.run.metrics()
    assert [m["step"] for m in metrics] == [1]
    assert metrics[0]["objective/kl"] == pytest.approx(0.0, abs=1e-3)  # the first rollout is the reference's own
    samples = ppo_job.run.samples()
    assert any(s["response"].strip() for s in samples)
    assert {(p["step"], p["policy"]) for p in ppo_job.run.probes()} == {(0, "reference"), (1, "policy")}

    # The 4-bit run exported as a plain causal LM: dequantized, merged in float32, the run's own log-probs.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rlhf_engine.core.models import load_model_and_tokenizer
    from rlhf_engine.runs.export import export_run

    merged = export_run(tmp_path / "ppo", tmp_path / "ppo-export")
    assert "dequantized to float32" in (merged / "README.md").read_text()
    base, tokenizer = load_model_and_tokenizer(quantized)
    own = PeftModel.from_pretrained(base, str(tmp_path / "ppo" / "policy"))
    exported = AutoModelForCausalLM.from_pretrained(str(merged))
    ids = torch.tensor([tokenizer("Tell me about the sea. " + samples[0]["response"])["input_ids"]])
    with torch.no_grad():
        logprobs = [torch.log_softmax(m(input_ids=ids).logits[0, :-1].float(), -1).gather(1, ids[0, 1:, None])
                    for m in (own, exported)]
    torch.testing.assert_close(logprobs[1], logprobs[0], atol=1e-4, rtol=0)  # measured: 1.6e-5 at most
