"""Model sources, pad token, quantization and left padding done right."""

import pytest
import torch

from rlhf_engine.config import ModelConfig
from rlhf_engine.core.generation import response_logits, sample_responses, token_logprobs
from rlhf_engine.core.models import (
    ModelSourceError,
    choose_dtype,
    load_model_and_tokenizer,
    load_tokenizer,
    resolve_source,
)


def test_bundled_source_resolves_to_a_cached_safetensors_folder(bundled_model_dir):
    from pathlib import Path

    folder = Path(resolve_source("default"))
    assert folder == Path(bundled_model_dir)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


@pytest.mark.parametrize("source, words", [
    ("./no/such/folder", "model folder not found"),
    ("/tmp/definitely-missing.gguf", "GGUF file not found"),
])
def test_unknown_sources_give_one_clear_error(source, words):
    with pytest.raises(ModelSourceError, match=words):
        resolve_source(source)


def test_folder_without_config_and_plain_file_are_refused(tmp_path):
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_source(str(tmp_path))
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelSourceError, match="is a file"):
        resolve_source(str(f))


def test_pad_token_is_distinct_from_eos_and_padding_is_left(bundled_model_dir):
    tokenizer = load_tokenizer(bundled_model_dir)
    assert tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.pad_token not in tokenizer.chat_template
    assert tokenizer.padding_side == "left"


def test_auto_dtype_is_fp32_on_cpu():
    assert choose_dtype("auto", torch.device("cpu")) == torch.float32
    assert choose_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_left_padded_batch_gives_the_same_logprobs_as_each_sequence_alone(tiny_model_config):
    model, tokenizer = load_model_and_tokenizer(tiny_model_config)
    torch.manual_seed(0)
    prompts = ["Hi", "Write a long sentence about the weather in a small town by the sea."]
    rollout = sample_responses(model, tokenizer, prompts, max_new_tokens=6, temperature=0.7)
    length = rollout.response_ids.shape[1]
    batch = token_logprobs(response_logits(model, rollout.input_ids, rollout.attention_mask, length, 0.7),
                           rollout.response_ids)
    for i in range(2):
        keep = rollout.query_mask[i].bool()
        ids = torch.cat([rollout.query_ids[i][keep], rollout.response_ids[i]])[None]
        alone = token_logprobs(response_logits(model, ids, torch.ones_like(ids), length, 0.7),
                               rollout.response_ids[i][None])
        real = rollout.response_mask[i].bool()
        assert torch.allclose(batch[i][real], alone[0][real], atol=1e-4)


def test_logprobs_use_the_sampling_temperature(tiny_model_config):
    model, tokenizer = load_model_and_tokenizer(tiny_model_config)
    ids = torch.tensor([[1, 5, 9, 12, 40]])
    hot = response_logits(model, ids, torch.ones_like(ids), 3, temperature=2.0)
    cold = response_logits(model, ids, torch.ones_like(ids), 3, temperature=1.0)
    assert torch.allclose(hot * 2.0, cold, atol=1e-5)


def test_four_bit_quantized_model_loads_and_generates_on_this_device(tiny_model_dir):
    config = ModelConfig(source=tiny_model_dir, quant="4bit", lora_r=4, lora_alpha=8)
    model, tokenizer = load_model_and_tokenizer(config)
    assert any("4bit" in type(m).__name__ for m in model.modules())
    rollout = sample_responses(model, tokenizer, ["Hello there"], max_new_tokens=4, temperature=0.7)
    assert rollout.response_ids.shape == (1, 4)


def test_dropout_is_off(tiny_model_config):
    model, _ = load_model_and_tokenizer(tiny_model_config)
    assert not model.training
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_recomputed_logprobs_match_what_generate_sampled_from(tiny_model_config):
    """Left padding, position ids and the temperature agree between generate() and our forward pass."""
    from transformers import GenerationConfig

    from rlhf_engine.core.generation import truncate_after_eos
    from rlhf_engine.core.models import encode_prompt, left_pad

    model, tokenizer = load_model_and_tokenizer(tiny_model_config)
    ids, mask = left_pad([encode_prompt(tokenizer, p) for p in ["Hi", "Tell me a long story about a cat."]],
                         tokenizer.pad_token_id)
    torch.manual_seed(1)
    out = model.generate(input_ids=ids, attention_mask=mask, output_scores=True, return_dict_in_generate=True,
                         generation_config=GenerationConfig(do_sample=True, temperature=0.7, top_k=0, top_p=1.0,
                                                            max_new_tokens=5, pad_token_id=tokenizer.pad_token_id,
                                                            eos_token_id=tokenizer.eos_token_id))
    response = out.sequences[:, ids.shape[1]:]
    response, response_mask, _ = truncate_after_eos(response, tokenizer.eos_token_id, tokenizer.pad_token_id)
    sampled = torch.stack(out.scores, 1).log_softmax(-1).gather(2, response.unsqueeze(-1)).squeeze(-1)
    full_mask = torch.cat([mask, response_mask], 1)
    ours = token_logprobs(response_logits(model, torch.cat([ids, response], 1), full_mask, response.shape[1], 0.7),
                          response)
    real = response_mask.bool()
    assert torch.allclose(ours[real], sampled[real], atol=1e-4)


def test_the_samplers_own_logprobs_and_entropy_are_those_of_a_pass_over_its_answers(tiny_model_config):
    """What GRPO and RLOO read instead of a policy pass over the rollout: the same numbers, 0 after EOS."""
    from rlhf_engine.core.generation import token_entropy

    model, tokenizer = load_model_and_tokenizer(tiny_model_config)
    roll = sample_responses(model, tokenizer, ["Hi", "Tell me a long story about a cat.", "Why?"], max_new_tokens=12,
                            temperature=0.7, generators=torch.Generator().manual_seed(3))
    logits = response_logits(model, roll.input_ids, roll.attention_mask, roll.response_ids.shape[1], 0.7)
    real = roll.response_mask.bool()
    assert roll.logprobs.shape == roll.entropy.shape == roll.response_ids.shape
    torch.testing.assert_close(roll.logprobs[real], token_logprobs(logits, roll.response_ids)[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(roll.entropy[real], token_entropy(logits)[real], atol=1e-4, rtol=0)
    assert not roll.logprobs[~real].any() and not roll.entropy[~real].any()
    part = roll.rows(slice(1, 3))
    assert torch.equal(part.logprobs, roll.logprobs[1:3, :part.response_ids.shape[1]])


def test_4bit_weights_stay_differentiable_after_a_pass_without_gradient(tiny_model_dir):
    """A no-grad pass (generation) must not switch bitsandbytes to its backward-less CPU kernel."""
    from bitsandbytes.nn import Linear4bit
    from peft import get_peft_model

    from rlhf_engine.config import ModelConfig
    from rlhf_engine.core.models import load_model_and_tokenizer, lora_config

    config = ModelConfig(source=tiny_model_dir, quant="4bit", lora_r=4, lora_alpha=8)
    grads = []
    for warm_up_without_grad in (False, True):
        model, _ = load_model_and_tokenizer(config)
        assert all(not m.support_avx512bf16_for_cpu for m in model.modules() if isinstance(m, Linear4bit))
        torch.manual_seed(0)
        peft = get_peft_model(model, lora_config(config))
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.data.normal_(std=0.1)
        ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
        if warm_up_without_grad:
            with torch.no_grad():
                peft(input_ids=ids)
        peft(input_ids=ids).logits.pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in peft.named_parameters() if p.grad is not None})
    first_layer = [n for n in grads[0] if "layers.0." in n and "lora_A" in n]
    assert first_layer
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)
