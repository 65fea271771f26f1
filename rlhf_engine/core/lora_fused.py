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

import contextlib
import types
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from rlhf_engine.core import cpu_linear


class _LoraOnFrozenCPUBase(torch.autograd.Function):
    """y = x Wᵀ + b + s (x Aᵀ) Bᵀ for a frozen fp32 base on CPU (``cpu_linear``), with its own backward.

    The backward is the one autograd would build, with each product in the form that is fast there:
    autograd's ``dyᵀ (x Aᵀ)`` for B's gradient is a [N, M] x [M, r] product that MKL runs at a few
    GFLOP/s; ``((x Aᵀ)ᵀ dy)ᵀ`` is the same sum, ~4x faster, and ``dy B`` goes through oneDNN (~4x).
    """

    @staticmethod
    def forward(ctx, x, base, lora_a, lora_b, scaling):
        xa = cpu_linear.onednn_linear(x, lora_a, None)  # [M, r]
        out = cpu_linear.frozen_product(base, x)
        out.addmm_(xa, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(x, xa, base.weight, lora_a, lora_b)
        ctx.scaling = scaling
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, xa, weight, lora_a, lora_b = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_xa = cpu_linear.input_gradient(grad_out, lora_b).mul_(ctx.scaling)  # s dy B: [M, r]
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = cpu_linear.input_gradient(grad_out, weight).addmm_(grad_xa, lora_a)
        if ctx.needs_input_grad[2]:
            grad_a = grad_xa.t().mm(x)  # [r, K]
        if ctx.needs_input_grad[3]:
            grad_b = xa.t().mm(grad_out).t().mul_(ctx.scaling)  # s dyᵀ (x Aᵀ): [N, r]
        return grad_x, None, grad_a, grad_b, None


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Forward of one ``lora.Linear``: the fused path when it is exact, PEFT's forward otherwise."""
    peft_forward = type(self).forward
    groups = getattr(self, "_row_adapters", None)
    if groups is not None and not (args or kwargs):
        return _grouped_forward(self, x, groups)
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
    if cpu_linear.takes_onednn(base, flat) and torch.is_grad_enabled():
        out = _LoraOnFrozenCPUBase.apply(flat, base, lora_a, lora_b, self.scaling[name])
        return out.view(*x.shape[:-1], out.shape[-1])
    # Without gradient (decoding) the base layer's own forward takes oneDNN where it can, and the rank-r
    # product x Aᵀ plain torch: at decoding's few rows oneDNN's call costs more than the product (27 against
    # 10 µs at 8 rows, the autograd function ~60 µs more), ~20 ms a token of the bundled model.
    out = base(flat) if not torch.is_grad_enabled() else nn.functional.linear(flat, base.weight, base.bias)
    # In place: linear's backward keeps its input and weight, not its output, so overwriting it is safe.
    out.addmm_(nn.functional.linear(flat, lora_a), lora_b.t(), alpha=self.scaling[name])
    return out.view(*x.shape[:-1], out.shape[-1])


def _grouped_forward(self, x: torch.Tensor, groups: tuple[tuple[int, int, str], ...]) -> torch.Tensor:
    """Rows ``start:stop`` of the batch through adapter ``name``, for each (start, stop, name): the base
    product once for the whole batch, then each group's LoRA product added to its rows (contiguous slices,
    no gather). What PEFT's mixed-adapter batches compute, without a hook per layer and call (measured:
    32 rows of 4 adapters decode in 14.7 s through PEFT's, against 8.1 s for 32 rows of one adapter):
    each row gets x Wᵀ + b + s (x Aᵀ) Bᵀ with its own A, B and s. A name without an adapter in this layer
    (or "__base__") leaves its rows at the base product."""
    if self.disable_adapters or self.merged:
        raise ValueError("mixed-adapter rows need enabled, unmerged adapters")
    rows_per_item = x[0].numel() // x.shape[-1]  # tokens per batch row
    flat = x.reshape(-1, x.shape[-1])
    out = self.base_layer(flat)  # any base: plain (oneDNN on CPU), 4-bit or 8-bit
    for start, stop, name in groups:
        if name not in self.lora_A:
            continue
        rows = slice(start * rows_per_item, stop * rows_per_item)
        lora_a, lora_b, scale = self.lora_A[name].weight, self.lora_B[name].weight, self.scaling[name]
        xa = nn.functional.linear(flat[rows].to(lora_a.dtype), lora_a)
        if out.dtype == lora_b.dtype:
            out[rows].addmm_(xa, lora_b.t(), alpha=scale)
        else:
            out[rows] += (nn.functional.linear(xa, lora_b) * scale).to(out.dtype)
    return out.view(*x.shape[:-1], out.shape[-1])


def rows_can_take_adapters(model: nn.Module) -> bool:
    """Whether ``rows_through_adapters`` works on ``model``: its LoRA layers are plain ones that
    ``fuse_lora_products`` patched (a 4- or 8-bit base's are bitsandbytes layers: not)."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    return bool(layers) and all(type(m) is LoraLinear and getattr(m.forward, "__func__", None) is _fused_forward
                                for m in layers)


@contextlib.contextmanager
def rows_through_adapters(model: nn.Module, adapter_names: Sequence[str]) -> Iterator[None]:
    """While inside, batch row i of every forward pass goes through the LoRA adapter ``adapter_names[i]``
    ("__base__": no adapter), in every fused layer of ``model``; for inference (no gradient). Rows with the
    same adapter must be next to each other (a batched sweep's runs are). Batches must keep their rows."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    groups: list[list] = []
    for i, name in enumerate(adapter_names):
        if groups and groups[-1][2] == name:
            groups[-1][1] = i + 1
        elif any(g[2] == name for g in groups):
            raise ValueError(f"the rows of adapter {name!r} are not next to each other")
        else:
            groups.append([i, i + 1, name])
    frozen = tuple(tuple(g) for g in groups)
    layers = [m for m in model.modules() if type(m) is LoraLinear]
    if not rows_can_take_adapters(model):
        raise ValueError("rows_through_adapters needs a model whose LoRA layers fuse_lora_products patched")
    for layer in layers:
        layer._row_adapters = frozen
    try:
        with torch.no_grad():
            yield
    finally:
        for layer in layers:
            layer._row_adapters = None


def _merge(self, *args, **kwargs) -> None:
    """PEFT's merge, which writes the base weight through ``.data``; then the base's oneDNN copy is stale."""
    type(self).merge(self, *args, **kwargs)
    cpu_linear.refresh(self.base_layer)


def _unmerge(self, *args, **kwargs) -> None:
    """PEFT's unmerge (``.data`` again), then the same."""
    type(self).unmerge(self, *args, **kwargs)
    cpu_linear.refresh(self.base_layer)


def fuse_lora_products(model: nn.Module) -> int:
    """Give every PEFT ``lora.Linear`` in ``model`` the fused forward; returns how many layers (idempotent).

    Adapters added to the same layers later are covered too: the layer decides at each call.
    """
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.forward = types.MethodType(_fused_forward, module)
            module.merge = types.MethodType(_merge, module)
            module.unmerge = types.MethodType(_unmerge, module)
            count += 1
    return count
