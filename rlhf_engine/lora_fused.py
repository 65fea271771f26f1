"""LoRA layers computed as two fused matrix products instead of product, scale and add.

PEFT's ``lora.Linear`` computes ``base(x) + B(A(x)) * s`` as four operations, two of which (the scale
and the add) read and write a full [tokens, out_features] tensor in the forward and again in the
backward. ``addmm`` folds both into the second product: ``out.addmm_(x Aᵀ, Bᵀ, alpha=s)``. The result
is the same function (up to float rounding; s = alpha / r is exact for a power of two) with the same
gradients; on 2 CPU cores one PPO iteration of the bundled model is ~7 % faster (RESULTS.md, issue 5).

Only plain layers take the fused path: an ``nn.Linear`` base, one active vanilla LoRA adapter without
dropout, every weight in the input's dtype. Anything else (adapters disabled or merged, mixed-adapter
batches, DoRA and other variants, quantized bases, dtype casts) runs PEFT's own forward unchanged.
"""

from __future__ import annotations

import types

import torch
from torch import nn


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Forward of one ``lora.Linear``: the fused path when it is exact, PEFT's forward otherwise."""
    peft_forward = type(self).forward
    if args or kwargs or self.disable_adapters or self.merged or len(self.active_adapters) != 1:
        return peft_forward(self, x, *args, **kwargs)
    name = self.active_adapters[0]
    base = self.base_layer
    if (name not in self.lora_A or name in self.lora_variant or type(base) is not nn.Linear
            or not isinstance(self.lora_dropout[name], nn.Identity)):
        return peft_forward(self, x, *args, **kwargs)
    lora_a, lora_b = self.lora_A[name].weight, self.lora_B[name].weight
    if not x.dtype == base.weight.dtype == lora_a.dtype == lora_b.dtype:
        return peft_forward(self, x, *args, **kwargs)
    flat = x.reshape(-1, x.shape[-1])
    out = nn.functional.linear(flat, base.weight, base.bias)
    # In place: linear's backward keeps its input and weight, not its output, so overwriting it is safe.
    out.addmm_(nn.functional.linear(flat, lora_a), lora_b.t(), alpha=self.scaling[name])
    return out.view(*x.shape[:-1], out.shape[-1])


def fuse_lora_products(model: nn.Module) -> int:
    """Give every PEFT ``lora.Linear`` in ``model`` the fused forward; returns how many layers (idempotent).

    Adapters added to the same layers later are covered too: the layer decides at each call.
    """
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count
