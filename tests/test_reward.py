"""Reward model: head init, training on separable pairs, save -> load gives identical scores."""

import math

import pytest
import torch

from rlhf_engine.config import ModelConfig, RewardConfig
from rlhf_engine.core.reward import RewardModel, evaluate, new_reward_model, split_pairs, train_reward_model
from rlhf_engine.data.pairs import PreferencePair

GOOD, BAD = "I love it, wonderful and great.", "I hate it, terrible and awful."


def _pairs(n=24):
    return [PreferencePair(f"Tell me about thing number {i}.", GOOD, BAD) for i in range(n)]


def test_head_is_initialised_with_std_one_over_sqrt_d_plus_one(tiny_model_config):
    rm = new_reward_model(RewardConfig(model=tiny_model_config))
    d = rm.head.weight.shape[1]
    assert rm.head.bias.item() == 0.0
    assert abs(rm.head.weight.std().item() - 1 / math.sqrt(d + 1)) < 0.5 / math.sqrt(d + 1)


def test_score_is_read_at_the_last_real_token_not_a_pad(tiny_model_config):
    rm = new_reward_model(RewardConfig(model=tiny_model_config))
    alone = rm.score(["Hi"], ["a short answer"], normalized=False)
    with_long_neighbour = rm.score(["Hi", "A much longer prompt " * 5], ["a short answer", "x " * 30],
                                   normalized=False)
    assert torch.allclose(alone[0], with_long_neighbour[0], atol=1e-4)


def test_mean_pooling_averages_the_response_tokens_whatever_the_padding(tiny_model_config):
    from rlhf_engine.core.generation import last_hidden_state
    from rlhf_engine.core.models import encode_prompt

    rm = new_reward_model(RewardConfig(model=tiny_model_config, pooling="mean"))
    prompt, response = "Hi", "a short answer"
    prompt_ids = encode_prompt(rm.tokenizer, prompt, True)
    response_ids = rm.tokenizer(response, add_special_tokens=False)["input_ids"] + [rm.tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        hidden = last_hidden_state(rm.backbone, ids, torch.ones_like(ids))
        by_hand = rm.head(hidden[0, -len(response_ids):].mean(0)).item()
    with_long_neighbour = rm.score([prompt, "A much longer prompt " * 5], [response, "x " * 30], normalized=False)
    assert with_long_neighbour[0].item() == pytest.approx(by_hand, abs=1e-4)
    last = new_reward_model(RewardConfig(model=tiny_model_config))
    last.head.load_state_dict(rm.head.state_dict())
    assert last.score([prompt], [response], normalized=False).item() != pytest.approx(by_hand, abs=1e-4)


def test_training_separates_chosen_from_rejected(tiny_model_config):
    config = RewardConfig(model=tiny_model_config, steps=30, batch_size=8, learning_rate=3e-3, eval_every=10)
    seen = []
    rm, result = train_reward_model(config, _pairs(), on_metrics=seen.append)
    assert [m["step"] for m in seen] == list(range(1, 31))
    assert seen[-1]["loss"] < seen[0]["loss"]
    assert result["accuracy"] == 1.0 and result["margin_mean"] > 0
    assert "eval/accuracy" in seen[9]


@pytest.mark.parametrize("quant, pooling", [("none", "last"), ("4bit", "last"), ("none", "mean")])
def test_save_then_load_gives_identical_scores(tmp_path, tiny_model_dir, quant, pooling):
    config = RewardConfig(model=ModelConfig(source=tiny_model_dir, quant=quant, lora_r=4, lora_alpha=8),
                          steps=3, learning_rate=1e-2, pooling=pooling)
    rm, _ = train_reward_model(config, _pairs(8))
    rm.gain, rm.bias = 2.0, -0.5
    prompts, responses = ["Q1", "A longer question two"], [GOOD, BAD]
    before = rm.score(prompts, responses)
    rm.save(tmp_path / "rm")
    assert (tmp_path / "rm" / "reward" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "rm" / "score_head.safetensors").is_file()
    loaded = RewardModel.load(tmp_path / "rm")
    assert (loaded.gain, loaded.bias, loaded.pooling) == (2.0, -0.5, pooling)
    assert torch.equal(before, loaded.score(prompts, responses))


def test_saved_adapter_loads_with_plain_peft(tmp_path, tiny_model_config):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rm, _ = train_reward_model(RewardConfig(model=tiny_model_config, steps=2), _pairs(6))
    rm.save(tmp_path / "rm")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_config.source)
    PeftModel.from_pretrained(base, str(tmp_path / "rm" / "reward"))


def test_split_is_seeded_and_keeps_both_sides_non_empty():
    train, held = split_pairs(_pairs(10), 0.2, seed=0)
    assert len(train) == 8 and len(held) == 2
    assert split_pairs(_pairs(10), 0.2, seed=0) == (train, held)
    with pytest.raises(ValueError, match="at least 2"):
        split_pairs(_pairs(1), 0.2, 0)


def test_evaluate_reports_accuracy_and_margins(tiny_model_config):
    rm = new_reward_model(RewardConfig(model=tiny_model_config))
    result = evaluate(rm, _pairs(4))
    assert len(result["margins"]) == 4
    assert result["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_normalisation_scores_with_the_adapter_on_while_sampling_with_it_off(tiny_model_config):
    from rlhf_engine.core.generation import decode_responses, sample_responses
    from rlhf_engine.core.models import set_seed
    from rlhf_engine.core.reward import normalize_on_policy

    config = RewardConfig(model=tiny_model_config, steps=5, learning_rate=3e-2)
    rm, _ = train_reward_model(config, _pairs(8))
    prompts = [f"Prompt {i}" for i in range(8)]
    set_seed(5)
    normalize_on_policy(rm, rm.backbone, rm.tokenizer, prompts, 8, 6, 0.7, batch_size=8,
                        policy_context=rm.backbone.disable_adapter)
    set_seed(5)
    with rm.backbone.disable_adapter():
        texts = decode_responses(rm.tokenizer, sample_responses(rm.backbone, rm.tokenizer, prompts, 6, 0.7))
    scores = rm.score(prompts, texts)
    assert abs(scores.mean().item()) < 1e-4
    assert abs(scores.std().item() - 1.0) < 1e-4


def _uneven_pairs():
    """Prompts and answers of different lengths, so both paddings (left prompts, right answers) are exercised."""
    return [PreferencePair("Hi", "a short answer", "a rather longer answer that goes on for a while"),
            PreferencePair("Tell me, in a few words, what you thought of the film we saw yesterday.",
                           "Lovely.", "Dull, slow and far too long for what it had to say."),
            PreferencePair([{"role": "user", "content": "And the hotel?"}], "Warm and quiet.", "Noisy.")]


def _whole_sequence_scores(rm, pairs):
    prompts = [p.prompt for p in pairs] * 2
    scores = rm(*rm.batch(prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs]))
    return scores[:len(pairs)], scores[len(pairs):]


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_prompt_passed_once_gives_the_scores_and_gradients_of_whole_sequences(tiny_model_config, pooling):
    from rlhf_engine.core.reward import pair_scores

    rm = new_reward_model(RewardConfig(model=tiny_model_config, pooling=pooling))
    torch.manual_seed(0)
    for name, param in rm.backbone.named_parameters():
        if "lora_B" in name:  # B starts at 0; make the adapter matter, so its gradients are checked too
            param.data.normal_(std=0.1)
    pairs = _uneven_pairs()
    assert rm.answer_pair_scores(pairs) is not None  # the shared-prompt path is the one under test
    results = []
    for scorer in (pair_scores, _whole_sequence_scores):
        chosen, rejected = scorer(rm, pairs)
        (chosen - 2 * rejected).sum().backward()
        grads = {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}
        rm.zero_grad(set_to_none=True)
        results.append((chosen.detach(), rejected.detach(), grads))
    (chosen, rejected, grads), (want_chosen, want_rejected, want_grads) = results
    torch.testing.assert_close(chosen, want_chosen.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rejected, want_rejected.float(), rtol=1e-4, atol=1e-5)
    assert set(grads) == set(want_grads) and any("lora_A" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], rtol=1e-3, atol=1e-6, msg=name)


def test_answers_sharing_a_prompt_score_as_whole_sequences_in_any_chunking(tiny_model_config):
    """score() with a prompt given several answers (best-of-n, a group method) passes each prompt once, in chunks
    of whole groups, and gives each answer its whole sequence's score, in the order given."""
    from rlhf_engine.core.prompt_cache import shared_prompt_scores

    rm = new_reward_model(RewardConfig(model=tiny_model_config, pooling="mean"))
    pairs = _uneven_pairs()
    prompts = [p.prompt for p in pairs for _ in range(3)][::-1]  # groups of 3, not in the order first seen
    answers = [f"{text} {i}" for i, text in enumerate([p.chosen for p in pairs] * 3)]
    with torch.no_grad():
        want = torch.cat([rm(*rm.batch([p], [a])) for p, a in zip(prompts, answers)]).float()
        for rows in (None, 1, 4):
            torch.testing.assert_close(shared_prompt_scores(rm, prompts, answers, rows), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rm.score(prompts, answers, normalized=False), want, rtol=1e-4, atol=1e-5)


def test_pairs_cut_to_max_length_are_scored_as_whole_sequences(tiny_model_config):
    from rlhf_engine.core.reward import pair_scores

    rm = new_reward_model(RewardConfig(model=tiny_model_config, max_length=24))
    pairs = _uneven_pairs()  # the second pair's prompt alone is longer than 24 tokens
    assert rm.answer_pair_scores(pairs) is None
    with torch.no_grad():
        got, want = pair_scores(rm, pairs), _whole_sequence_scores(rm, pairs)
    torch.testing.assert_close(got[0], want[0].float())
    torch.testing.assert_close(got[1], want[1].float())
