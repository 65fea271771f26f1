"""The CUDA path: bf16 and 4-bit NF4 load, bitsandbytes' CUDA kernels run, the oneDNN CPU path stays off,
and one PPO step and one reward-model step train there. Skipped where there is no GPU; on a machine with
one, ``benchmarks/gpu_check.sh`` runs this file first."""

import math

import pytest
import torch

from rlhf_engine.config import ModelConfig, PPOConfig, RewardConfig
from rlhf_engine.core.generation import sample_responses
from rlhf_engine.core.models import load_model_and_tokenizer
from rlhf_engine.data.pairs import PreferencePair

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here (benchmarks/gpu_check.sh runs these where a GPU is lent)")


def no_onednn_layers(model) -> bool:
    """cpu_linear's oneDNN products are for fp32 weights on CPU only."""
    return not any(hasattr(m, "onednn_weight") for m in model.modules())


def test_bf16_loads_on_the_gpu_and_samples_without_the_cpu_matmul_path(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(ModelConfig(source=tiny_model_dir, quant="none"))
    weight = next(model.parameters())
    assert weight.device.type == "cuda"
    assert weight.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
    assert no_onednn_layers(model)
    rollout = sample_responses(model, tokenizer, ["Hello there"], max_new_tokens=4, temperature=0.7)
    assert rollout.response_ids.device.type == "cuda" and rollout.response_ids.shape[0] == 1


def test_4bit_nf4_loads_on_the_gpu_and_runs_bitsandbytes_cuda_kernels(tiny_model_dir):
    import bitsandbytes.cextension as native
    from bitsandbytes.nn import Linear4bit

    model, _ = load_model_and_tokenizer(ModelConfig(source=tiny_model_dir, quant="4bit"))
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert layers and all(m.weight.device.type == "cuda" and m.weight.quant_state.quant_type == "nf4"
                          for m in layers)
    assert native.BNB_BACKEND == "CUDA" and getattr(native.lib, "compiled_with_cuda", False)
    assert no_onednn_layers(model)
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profile:
        with torch.no_grad():
            model(input_ids=torch.tensor([[1, 5, 9, 12]], device="cuda"))
        torch.cuda.synchronize()
    assert any(event.key.startswith("bitsandbytes::") for event in profile.key_averages())
    assert any(event.device_type == torch.autograd.DeviceType.CUDA for event in profile.events())


def test_one_reward_model_step_and_one_ppo_step_train_on_the_gpu(tiny_model_dir):
    from rlhf_engine.core.reward import train_reward_model
    from rlhf_engine.methods.ppo import PPOTrainer

    model = ModelConfig(source=tiny_model_dir, quant="4bit", lora_r=4, lora_alpha=8)
    pairs = [PreferencePair(f"Say something about item {i}.", "Lovely, great.", "Awful, bad.") for i in range(6)]
    rm, result = train_reward_model(RewardConfig(model=model, steps=1, batch_size=4, eval_every=1), pairs)
    assert rm.device.type == "cuda" and result is not None and math.isfinite(result["margin_mean"])
    config = PPOConfig(model=model, steps=1, batch_size=2, response_length=4, probe_every=0)
    trainer = PPOTrainer(config, rm, [p.prompt for p in pairs])
    before = [p.detach().clone() for p in trainer.params]
    metrics, _ = trainer.step()
    assert trainer.params[0].device.type == "cuda"
    assert math.isfinite(metrics["loss/policy"]) and math.isfinite(metrics["objective/kl"])
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params))  # the step moved the adapter
