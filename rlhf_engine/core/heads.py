"""The scalar heads on a LoRA model: the reward model's score head and PPO's value head.

Both are one linear layer from the base model's last hidden state to a number, built on the model's
device, saved as a float32 safetensors file and loaded back in place (an optimiser may hold its
parameters).
"""

from __future__ import annotations

import math
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from rlhf_engine.config import ModelConfig
from rlhf_engine.core.models import load_model_and_tokenizer, lora_config


def new_lora_model(config: ModelConfig, adapter_name: str):
    """(PEFT model, tokenizer): the base model ``config`` names, loaded, with a fresh LoRA adapter."""
    from peft import get_peft_model

    base, tokenizer = load_model_and_tokenizer(config)
    return get_peft_model(base, lora_config(config), adapter_name=adapter_name), tokenizer


def new_head(peft_model, random_init: bool) -> nn.Linear:
    """hidden -> 1 on the model's device, bias 0; weights N(0, 1/sqrt(d+1)) (the reward model's score head,
    Ziegler et al. 2019) or, without ``random_init``, 0 (the value head: lm-human-preferences' scale 0)."""
    hidden = peft_model.get_base_model().config.hidden_size
    head = nn.Linear(hidden, 1)
    if random_init:
        nn.init.normal_(head.weight, std=1.0 / math.sqrt(hidden + 1))
    else:
        nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head.to(peft_model.device)


def save_head(head: nn.Linear, path: Path) -> None:
    save_file({k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()}, str(path))


def load_head(path: Path, head: nn.Linear | None = None, device=None) -> nn.Linear:
    """A saved head: into ``head`` (in place), or as a new layer on ``device``."""
    state = load_file(str(path))
    if head is None:
        head = nn.Linear(state["weight"].shape[1], 1).to(device)
    head.load_state_dict({k: v.to(head.weight.device) for k, v in state.items()})
    return head
