"""The fused LoRA forward (rlhf_engine/lora_fused.py) is PEFT's function: same outputs, same gradients,
on a base computed by PyTorch or by oneDNN (rlhf_engine/cpu_linear.py)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from peft import get_peft_model
from peft.tuners.lora.layer import Linear as LoraLinear

from rlhf_engine.core.cpu_linear import use_onednn_linears
from rlhf_engine.core.lora_fused import fuse_lora_products
from rlhf_engine.core.models import load_model_and_tokenizer, lora_config


def _two_models(config, cpu_matmul="packed"):
    """(PEFT's own model on PyTorch's products, the same weights to fuse with its base's linears computed
    as ``cpu_matmul`` says), with non-zero B so the adapters change the output."""
    config = dataclasses.replace(config, cpu_matmul="pytorch")
    base, tokenizer = load_model_and_tokenizer(config)
    plain = get_peft_model(base, lora_config(config), adapter_name="policy")
    plain.add_adapter("other", lora_config(config))
    torch.manual_seed(1)
    for name, param in plain.named_parameters():
        if "lora_B" in name:
            param.data.normal_(std=0.05)
    fused = copy.deepcopy(plain)
    assert use_onednn_linears(fused, cpu_matmul) == cpu_matmul
    return plain, fused, tokenizer


def _batch(tokenizer):
    texts = ["The film was lovely", "A cold, noisy room and rude staff at the desk"]
    encoded = tokenizer(texts, return_tensors="pt", padding=True)
    return encoded["input_ids"], encoded["attention_mask"]


def test_every_lora_layer_gets_the_fused_forward_once(tiny_model_config):
    plain, fused, _ = _two_models(tiny_model_config)
    layers = sum(type(m) is LoraLinear for m in fused.modules())
    assert layers == 2 * 7  # 2 layers x q, k, v, o, gate, up, down
    assert fuse_lora_products(fused) == layers
    assert fuse_lora_products(fused) == layers  # again: still one wrapper per layer, not a wrapper of a wrapper
    assert all("forward" in vars(m) for m in fused.modules() if type(m) is LoraLinear)
    assert not any("forward" in vars(m) for m in plain.modules() if type(m) is LoraLinear)


@pytest.mark.parametrize("cpu_matmul", ["pytorch", "packed", "onednn"])
@pytest.mark.parametrize("adapter", ["policy", "other"])
def test_outputs_and_gradients_match_peft(tiny_model_config, adapter, cpu_matmul):
    plain, fused, tokenizer = _two_models(tiny_model_config, cpu_matmul)
    fuse_lora_products(fused)
    ids, mask = _batch(tokenizer)
    grads = []
    for model in (plain, fused):
        model.set_adapter(adapter)
        logits = model(input_ids=ids, attention_mask=mask).logits
        (logits.float().pow(2).mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        grads[-1]["logits"] = logits.detach()
    assert set(grads[0]) == set(grads[1]) and any(f"lora_A.{adapter}" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)
    base_logits = None
    with fused.disable_adapter():  # the base model: PEFT's path, no adapter in the output
        base_logits = fused(input_ids=ids, attention_mask=mask).logits
    assert (base_logits - grads[1]["logits"]).abs().max() > 1e-3


def test_disabled_adapters_and_other_dtypes_fall_back_to_peft(tiny_model_config):
    plain, fused, tokenizer = _two_models(tiny_model_config)
    fuse_lora_products(fused)
    ids, mask = _batch(tokenizer)
    with torch.no_grad():
        with plain.disable_adapter():
            want = plain(input_ids=ids, attention_mask=mask).logits
        with fused.disable_adapter():
            got = fused(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want)
    # LoRA weights in another dtype than the input: PEFT casts the input, so the fused path must step aside.
    pairs = [(a, b) for a, b in zip(plain.modules(), fused.modules()) if type(a) is LoraLinear]
    mine, theirs = pairs[0][1], pairs[0][0]
    for layer in (mine, theirs):
        layer.lora_A["policy"].to(torch.bfloat16)
        layer.lora_B["policy"].to(torch.bfloat16)
    x = torch.randn(3, mine.in_features)
    with torch.no_grad():
        torch.testing.assert_close(mine(x), theirs(x))
