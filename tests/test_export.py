"""Exports: a run's policy as a plain causal LM, its reward model as a sequence classifier, or the adapter alone;
each loads with transformers and gives the run's own numbers."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from rlhf_engine.cli import main
from rlhf_engine.config import PPOConfig
from rlhf_engine.runs.policy_job import start_policy_job

IDS = [[1, 5, 9, 12, 40, 7, 3, 22]]


def token_logprobs_of(model, ids=IDS) -> torch.Tensor:
    """log p(token t | tokens < t) of a fixed sequence: [L - 1]."""
    ids = torch.tensor(ids)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    return torch.log_softmax(logits[0, :-1], -1).gather(1, ids[0, 1:, None]).squeeze(1)


def run_policy(run_dir, model_config):
    """The run's own policy: its base as the run loaded it, its final adapter on top (PEFT, not merged)."""
    from peft import PeftModel

    from rlhf_engine.core.models import load_model_and_tokenizer

    base, _ = load_model_and_tokenizer(model_config)
    return PeftModel.from_pretrained(base, str(run_dir / "policy"))


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory, trained_tiny_reward_dir, tiny_model_dir):
    """A tiny reward model and a 2-step PPO run against it whose adapter moved well away from zero."""
    from rlhf_engine.config import ModelConfig

    root = tmp_path_factory.mktemp("export-runs")
    shutil.copytree(trained_tiny_reward_dir, root / "rm")
    model = ModelConfig(source=tiny_model_dir, quant="none", lora_r=4, lora_alpha=8)
    config = PPOConfig(model=model, steps=2, batch_size=4, response_length=6, learning_rate=5e-2, probe_prompts=2,
                       temperature=0.9)
    job = start_policy_job(root / "ppo", config, root / "rm", background=False)
    assert job.state == "completed", job.run.status()
    return root, model


def test_an_exported_policy_loads_without_peft_and_gives_the_runs_own_logprobs(trained_runs, tmp_path, capsys):
    root, model = trained_runs
    assert main(["export", str(root / "ppo"), "--out", str(tmp_path / "merged")]) == 0
    out = tmp_path / "merged"
    assert str(out) in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md"} <= names
    assert "adapter_config.json" not in names
    assert json.loads((out / "generation_config.json").read_text())["temperature"] == 0.9
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and "library_name: transformers" in card and "`kl_coef`" in card
    assert "objective/scores" in card and "Reward model:" in card
    assert "a PPO policy trained with RLHF Workbench" in card and "PPO's value head" in card

    # Loaded in a fresh interpreter where importing peft fails: plain transformers, nothing else; then the
    # model card's own snippet, as a reader would paste it.
    card_code = card.split("```python\n", 1)[1].split("```", 1)[0]
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["peft"] = None
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(out)!r})
        tokenizer = AutoTokenizer.from_pretrained({str(out)!r})
        ids = torch.tensor({IDS!r})
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
        logprobs = torch.log_softmax(logits[0, :-1], -1).gather(1, ids[0, 1:, None]).squeeze(1)
        torch.manual_seed(0)
        new_tokens = model.generate(ids, max_new_tokens=4).shape[1] - ids.shape[1]
        pad_apart = tokenizer.pad_token_id != tokenizer.eos_token_id
        DIR, question = {str(out)!r}, "Say something about item 3."
    """) + card_code + textwrap.dedent("""
        print(json.dumps({"logprobs": logprobs.tolist(), "new_tokens": new_tokens, "pad": pad_apart,
                          "card_answer": answer}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["new_tokens"] >= 1 and loaded["pad"] and isinstance(loaded["card_answer"], str)
    policy = run_policy(root / "ppo", model)
    own = token_logprobs_of(policy)
    with policy.disable_adapter():
        base = token_logprobs_of(policy)
    torch.testing.assert_close(torch.tensor(loaded["logprobs"]), own, atol=1e-4, rtol=0)
    assert (own - base).abs().max() > 1e-3  # the adapter changed the model: the equality is not the base's


def test_an_exported_reward_model_gives_the_runs_scores_with_its_normalisation_in_the_config(trained_runs, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from rlhf_engine.core.reward import RewardModel
    from rlhf_engine.runs.export import NORMALIZATION_FIELD, export_run

    root, _ = trained_runs
    out = export_run(root / "rm", tmp_path / "rm-export")
    exported = AutoModelForSequenceClassification.from_pretrained(str(out))
    rm = RewardModel.load(root / "rm")
    prompts, answers = ["Say something about item 3.", "Hello?"], ["Lovely, great, wonderful.", "Awful, bad."]
    raw = rm.score(prompts, answers, normalized=False)
    norm = exported.config.to_dict()[NORMALIZATION_FIELD]
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        ids, _ = rm.encode(prompt, answer)
        with torch.no_grad():
            logit = exported(input_ids=torch.tensor([ids])).logits[0, 0].item()
        assert logit + norm["raw_offset"] == pytest.approx(raw[i].item(), abs=1e-4)
        assert norm["gain"] * (logit + norm["raw_offset"]) + norm["bias"] == pytest.approx(
            rm.score([prompt], [answer])[0].item(), abs=1e-4)
    assert raw[0] != raw[1]
    card = (out / "README.md").read_text()
    scope = {"DIR": str(out), "question": prompts[0], "answer": answers[0]}
    exec(card.split("```python\n", 1)[1].split("```", 1)[0], scope)  # the card's snippet, as a reader pastes it
    assert scope["score"] == pytest.approx(rm.score(prompts[:1], answers[:1])[0].item(), abs=1e-4)
    assert "pipeline_tag: text-classification" in card and f"{norm['gain']:.6g}" in card


def test_the_adapter_alone_loads_on_its_base_and_exports_refuse_clearly(trained_runs, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root, model = trained_runs
    assert main(["export", str(root / "ppo"), "--out", str(tmp_path / "adapter"), "--adapter"]) == 0
    out = tmp_path / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in out.iterdir()}
    base_path = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(out))
    torch.testing.assert_close(token_logprobs_of(loaded), token_logprobs_of(run_policy(root / "ppo", model)),
                               atol=1e-4, rtol=0)
    assert "library_name: peft" in (out / "README.md").read_text()
    capsys.readouterr()

    before = sorted(p.name for p in out.iterdir())
    for argv, words in (([str(root / "ppo"), "--out", str(out)], "not empty"),  # never over an existing folder
                        ([str(tmp_path), "--out", str(tmp_path / "x")], "not a run folder")):
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and words in err, err
    assert sorted(p.name for p in out.iterdir()) == before
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x-*"))


@pytest.mark.parametrize("method", ["grpo", "dpo"])
def test_every_methods_policy_exports_with_its_own_logprobs(trained_runs, tmp_path, method):
    from transformers import AutoModelForCausalLM

    from rlhf_engine.config import DPOConfig, GRPOConfig
    from rlhf_engine.methods import registry
    from rlhf_engine.runs.export import export_run

    root, model = trained_runs
    config = (GRPOConfig(model=model, steps=1, batch_size=4, group_size=2, response_length=4, learning_rate=5e-2,
                         probe_every=0) if method == "grpo" else
              DPOConfig(model=model, steps=1, batch_size=4, learning_rate=5e-2, probe_every=0))
    job = start_policy_job(tmp_path / method, config, root / "rm", background=False)
    assert job.state == "completed", job.run.status()
    out = export_run(tmp_path / method, tmp_path / f"{method}-merged")
    card = (out / "README.md").read_text()
    assert f"- {method}" in card  # tagged with its method, and named by its title in the registry
    assert f"a {registry.get(method).title} policy trained with RLHF Workbench" in card
    assert "value head" not in card  # PPO's note: these methods learn no value
    torch.testing.assert_close(token_logprobs_of(AutoModelForCausalLM.from_pretrained(str(out))),
                               token_logprobs_of(run_policy(tmp_path / method, model)), atol=1e-4, rtol=0)
