"""A run's policy: a LoRA adapter on a base model whose reference is the same base with adapters off.

Several policies can live on one base model (the runs of a batched sweep), each under its own adapter name;
the base weights are shared. ``Policy.forward`` is what an update reads; a method with a value model
(PPO) subclasses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlhf_engine.config import PolicyConfig
from rlhf_engine.core.generation import response_logits
from rlhf_engine.core.heads import new_lora_model
from rlhf_engine.core.lora_fused import fuse_lora_products
from rlhf_engine.core.models import lora_config
from rlhf_engine.core.rollout import POLICY


def adapters_on_base(config: PolicyConfig, base, names: Sequence[str]):
    """(PEFT model, tokenizer) with fresh LoRA adapters ``names`` (seeded with config.seed, in that order): on
    ``base`` = (PEFT model, tokenizer) of another run when given (a batched sweep), else on a newly loaded base."""
    with torch.random.fork_rng(devices=[]):  # the same initial adapters alone or beside other runs
        torch.manual_seed(config.seed)
        if base is None:
            peft_model, tokenizer = new_lora_model(config.model, names[0])
            peft_model.eval()  # dropout is off anyway; eval mode also allows mixed-adapter batches
        else:
            peft_model, tokenizer = base
            peft_model.add_adapter(names[0], lora_config(config.model))
        for name in names[1:]:
            peft_model.add_adapter(name, lora_config(config.model))
    fuse_lora_products(peft_model)
    return peft_model, tokenizer


class Policy(nn.Module):
    """A run's policy: one LoRA adapter (``name``) on a base model; the reference is that base, adapters off.

    Several can live on one base model (the runs of a batched sweep), each under its own adapter name.
    A run's adapter is saved as ``policy/`` whatever its name inside the model.
    """

    def __init__(self, peft_model, name: str = POLICY):
        super().__init__()
        self.peft = peft_model
        self.policy_adapter = name

    @property
    def adapters(self) -> dict[str, str]:
        """Saved folder name -> adapter name in the model."""
        return {POLICY: self.policy_adapter}

    @classmethod
    def create(cls, config: PolicyConfig, base=None, name: str = POLICY):
        """A fresh adapter (seeded with config.seed) on ``base`` or a newly loaded base; (policy, tokenizer)."""
        peft_model, tokenizer = adapters_on_base(config, base, [name])
        model = cls(peft_model, name)
        model.use(POLICY)
        return model, tokenizer

    def use(self, role: str) -> None:
        """Make this run's policy adapter the active one."""
        self.peft.set_adapter(self.policy_adapter)

    # Whether ``forward`` is one pass of the model (the rollout's pass can then be kept for the update).
    single_pass = True

    def forward(self, input_ids, attention_mask, response_length: int, temperature: float):
        """(logits / T [B, R, V], values [B, R] or None) of the answers: what a method's loss reads. A policy
        alone has no values; PPO's model (methods/ppo.py) adds them."""
        return self.policy_logits(input_ids, attention_mask, response_length, temperature), None

    def trainable_parameters(self) -> list[nn.Parameter]:
        """This run's LoRA weights (requires_grad follows the active adapter, so select by name)."""
        return [p for n, p in self.peft.named_parameters()
                if "lora_" in n and any(f".{adapter}." in n for adapter in self.adapters.values())]

    def policy_logits(self, input_ids, attention_mask, response_length: int, temperature: float):
        self.use(POLICY)
        return response_logits(self.peft, input_ids, attention_mask, response_length, temperature)

    @torch.no_grad()
    def reference_logits(self, input_ids, attention_mask, response_length: int, temperature: float):
        with self.peft.disable_adapter():
            return response_logits(self.peft, input_ids, attention_mask, response_length, temperature)

    def save_adapters(self, folder: Path) -> None:
        """policy/ (and any other adapter of the run) as standard PEFT adapter folders."""
        from peft.utils import get_peft_model_state_dict

        folder = Path(folder)
        for saved, adapter in self.adapters.items():
            (folder / saved).mkdir(parents=True, exist_ok=True)
            weights = get_peft_model_state_dict(self.peft, adapter_name=adapter)
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()},
                      str(folder / saved / "adapter_model.safetensors"))
            self.peft.peft_config[adapter].save_pretrained(str(folder / saved))

    def load_adapters(self, folder: Path) -> None:
        """Load the adapters written by save_adapters."""
        from peft.utils import set_peft_model_state_dict

        folder = Path(folder)
        for saved, adapter in self.adapters.items():
            weights = load_file(str(folder / saved / "adapter_model.safetensors"))
            set_peft_model_state_dict(self.peft, weights, adapter_name=adapter)
        self.use(POLICY)
