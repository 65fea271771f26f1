"""Frozen fp32 linears through oneDNN (rlhf_engine/cpu_linear.py): PyTorch's numbers and gradients, and
PyTorch's own path wherever a weight is trained; a weight changed, copied or merged is never read stale."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from peft import get_peft_model
from torch import nn

from rlhf_engine.config import PPOConfig
from rlhf_engine.core import cpu_linear
from rlhf_engine.core.cpu_linear import use_onednn_linears
from rlhf_engine.core.generation import token_logprobs
from rlhf_engine.core.lora_fused import fuse_lora_products
from rlhf_engine.core.models import load_model_and_tokenizer, lora_config
from rlhf_engine.methods.ppo import PPOTrainer, policy_loss, value_loss

MODES = ["packed", "onednn"]


@pytest.fixture
def onednn_calls(monkeypatch):
    """The input shapes of every product that went through the frozen-weight oneDNN path."""
    calls = []
    real = cpu_linear.frozen_product

    def counted(layer, x):
        calls.append(tuple(x.shape))
        return real(layer, x)

    monkeypatch.setattr(cpu_linear, "frozen_product", counted)
    return calls


def _layer_pair(mode, bias=True, frozen=True):
    """(PyTorch's layer, a copy of it through oneDNN as ``mode`` says)."""
    torch.manual_seed(0)
    plain = nn.Linear(48, 40, bias=bias).requires_grad_(not frozen)
    mine = copy.deepcopy(plain)
    assert use_onednn_linears(mine, mode) == mode
    return plain, mine


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 48), (3, 7, 48)])
def test_values_and_input_gradients_are_pytorchs(mode, bias, shape, onednn_calls):
    plain, mine = _layer_pair(mode, bias)
    x = torch.randn(*shape, requires_grad=True)
    x_mine = x.detach().clone().requires_grad_(True)
    want, got = plain(x), mine(x_mine)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(want)
    want.backward(grad)
    got.backward(grad)
    torch.testing.assert_close(x_mine.grad, x.grad, rtol=1e-5, atol=1e-6)
    assert onednn_calls == [shape]
    with torch.no_grad():  # no graph: the same product, without the autograd function
        torch.testing.assert_close(mine(x), plain(x), rtol=1e-5, atol=1e-6)
    assert len(onednn_calls) == 2


def test_a_weight_being_trained_takes_pytorchs_path_and_gets_its_gradient(onednn_calls):
    plain, mine = _layer_pair("packed", frozen=False)
    x = torch.randn(4, 48)
    mine(x).pow(2).sum().backward()
    plain(x).pow(2).sum().backward()
    assert onednn_calls == []
    torch.testing.assert_close(mine.weight.grad, plain.weight.grad)
    with torch.no_grad():  # the same layer, no gradient wanted: oneDNN
        mine(x)
    assert len(onednn_calls) == 1


@pytest.mark.parametrize("change", ["in place", "through .data, then refresh", "a new tensor"])
def test_a_changed_weight_is_packed_again(change):
    _, mine = _layer_pair("packed")
    x = torch.randn(4, 48)
    before = mine(x)
    if change == "in place":
        with torch.no_grad():
            mine.weight.mul_(2.0)
    elif change == "a new tensor":
        mine.weight.data = mine.weight.data * 2.0
    else:
        mine.weight.data.mul_(2.0)
        cpu_linear.refresh(mine)
    after = mine(x)
    torch.testing.assert_close(after, F.linear(x, mine.weight, mine.bias), rtol=1e-5, atol=1e-6)
    assert (after - before).abs().max() > 0.1


def test_a_deep_copy_computes_with_its_own_weights():
    _, mine = _layer_pair("packed")
    twin = copy.deepcopy(mine)
    with torch.no_grad():
        twin.weight.zero_()
    x = torch.randn(4, 48)
    torch.testing.assert_close(twin(x), twin.bias.expand(4, -1))
    torch.testing.assert_close(mine(x), F.linear(x, mine.weight, mine.bias), rtol=1e-5, atol=1e-6)


def test_auto_packs_a_small_model_and_reads_a_large_one_in_place(monkeypatch):
    assert use_onednn_linears(nn.Linear(8, 8), "auto") == "packed"
    monkeypatch.setattr(cpu_linear, "PACKED_COPY_LIMIT", 8 * 8 * 4 - 1)
    layer = nn.Linear(8, 8)
    assert use_onednn_linears(layer, "auto") == "onednn" and not layer.onednn_weight.packed
    untouched = nn.Linear(8, 8)
    assert use_onednn_linears(untouched, "pytorch") == "pytorch" and "forward" not in vars(untouched)
    bf16 = nn.Linear(8, 8).to(torch.bfloat16)
    assert use_onednn_linears(bf16, "auto") == "pytorch" and "forward" not in vars(bf16)
    with pytest.raises(ValueError, match="cpu_matmul"):
        use_onednn_linears(nn.Linear(8, 8), "fastest")


def test_peft_merge_and_unmerge_change_the_base_through_data_and_the_output_stays_right(tiny_model_config):
    base, tokenizer = load_model_and_tokenizer(tiny_model_config)  # packed: the default on CPU
    model = get_peft_model(base, lora_config(tiny_model_config), adapter_name="policy")
    fuse_lora_products(model)
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(std=0.05)
    ids = tokenizer(["The film was lovely"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
        model.merge_adapter()  # W += s B A through .data: invisible to the version counter
        torch.testing.assert_close(model(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-5)
        model.unmerge_adapter()
        with model.disable_adapter():
            torch.testing.assert_close(model(input_ids=ids).logits, plain, rtol=1e-4, atol=1e-5)
    assert (adapted - plain).abs().max() > 1e-3


class _FirstHalfWins:
    gain, bias, normalized_on = 1.0, 0.0, None

    def score(self, prompts, responses, normalized=True):
        n = len(responses)
        return torch.tensor([1.0 if i < n // 2 else -1.0 for i in range(n)])


def _ppo_gradients(model_config, cpu_matmul):
    """One rollout and the gradient of PPO's loss on it (B non-zero, so every LoRA weight gets one)."""
    config = PPOConfig(model=dataclasses.replace(model_config, cpu_matmul=cpu_matmul), steps=1, batch_size=4,
                       response_length=6, seed=3)
    trainer = PPOTrainer(config, _FirstHalfWins(), [f"prompt number {i}" for i in range(8)])
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in trainer.model.peft.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    batch = trainer.advantages(trainer.rollout(trainer.next_prompts()))
    roll = batch.scored.rollout
    logits, values = trainer.model.forward(roll.input_ids, roll.attention_mask, roll.response_ids.shape[1],
                                           config.temperature)
    pg, _, _ = policy_loss(token_logprobs(logits, roll.response_ids), batch.scored.logprobs, batch.advantages,
                           batch.mask, config.cliprange)
    vf, _ = value_loss(values, batch.scored.values, batch.returns, batch.mask, config.cliprange_value)
    (pg + config.vf_coef * vf).backward()
    return batch, [p.grad.clone() for p in trainer.params]


def test_ppos_rollout_and_gradients_are_the_same_through_onednn_as_through_pytorch(tiny_model_config,
                                                                                   onednn_calls):
    batch_a, grads_a = _ppo_gradients(tiny_model_config, "pytorch")
    assert onednn_calls == []
    batch_b, grads_b = _ppo_gradients(tiny_model_config, "packed")
    assert len(onednn_calls) > 0
    assert torch.equal(batch_b.scored.rollout.response_ids, batch_a.scored.rollout.response_ids)
    for key in ("logprobs", "ref_logprobs", "values", "scores"):
        torch.testing.assert_close(getattr(batch_b.scored, key), getattr(batch_a.scored, key), rtol=1e-4, atol=1e-5,
                                   msg=key)
    torch.testing.assert_close(batch_b.advantages, batch_a.advantages, rtol=1e-4, atol=1e-5)
    assert len(grads_a) == len(grads_b) > 0
    for a, b in zip(grads_a, grads_b):
        assert a.abs().max() > 0
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4 * float(a.abs().max()))
