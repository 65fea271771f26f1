"""Frozen fp32 linear maps on CPU through oneDNN, their weights pre-packed once.

On CPU, PyTorch computes an fp32 ``nn.Linear`` with MKL's sgemm. For the 8-row products of decoding it
repacks every weight on every call and runs on one thread: on the 2-core benchmark machine ~5 GB/s of
weights read, against a 30 GB/s streaming read. oneDNN's matmul with the weight reordered once into its
blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, what ``torch.compile`` does to frozen CPU
linears) reads them at ~15 GB/s there, and is ~25 % faster at the few hundred rows of a training pass.
The backward's input gradient ``dy W`` goes through oneDNN as well (~14 % faster than MKL's, no copy).
The arithmetic is the same: fp32 products summed in fp32, only in another order (RESULTS.md, issue 5).

Only frozen weights take this path: a layer whose weight takes a gradient in the current pass, another
dtype or device: PyTorch's ``F.linear``, decided at each call. A packed copy is made again when its
weight changes. Modes (``ModelConfig.cpu_matmul``):

- ``packed``: a packed copy of each weight (one more copy of the linear weights in memory);
- ``onednn``: oneDNN on the weights as they are (no copy, a little slower: it reorders at each call);
- ``auto``: ``packed`` when that copy is at most ``PACKED_COPY_LIMIT`` bytes, else ``onednn``;
- ``pytorch``: leave the layers alone.
"""

from __future__ import annotations

import functools
import logging
import types

import torch
import torch.nn.functional as F
from torch import nn

from rlhf_engine.config import CPU_MATMUL_CHOICES

log = logging.getLogger(__name__)

PACKED_COPY_LIMIT = 2 * 1024**3  # auto packs when the extra copy is at most this many bytes (~500 M fp32 weights)
_BATCH_HINT = 8  # rows oneDNN's layout is tuned for: decoding's; any row count gives the same result


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x Wᵀ + b through oneDNN; ``weight`` packed, plain, or a strided view such as a transpose."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def input_gradient(grad_out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dL/dx = dL/dy W of y = x Wᵀ, as a linear map of dy with the weight Wᵀ: a transposed view, no copy."""
    return onednn_linear(grad_out.contiguous(), weight.t(), None)


class OneDNNWeight:
    """A layer's weight as oneDNN reads it, and what it was made from.

    ``packed``: a reordered copy, made again whenever the weight is another tensor or has been changed in
    place (its version counter); ``.data`` writes bypass that counter, so whoever writes through ``.data``
    calls ``refresh`` (lora_fused does, around PEFT's merge and unmerge). Otherwise the weight itself.
    Not copied with its layer (``deepcopy``): the copy has weights of its own and packs them on first use.
    """

    def __init__(self, packed: bool):
        self.packed = packed
        self._tensor: torch.Tensor | None = None
        self._source: tuple[int, int] | None = None

    def of(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.packed:
            return weight.detach()
        source = (weight.data_ptr(), weight._version)
        if self._source != source:
            self._tensor = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _BATCH_HINT)
            self._source = source
        return self._tensor

    def refresh(self) -> None:
        self._tensor = self._source = None

    def __deepcopy__(self, memo) -> OneDNNWeight:
        return OneDNNWeight(self.packed)


def takes_onednn(layer: nn.Module, x: torch.Tensor) -> bool:
    """The frozen-weight oneDNN path applies to this call: a patched fp32 CPU layer whose weight takes no
    gradient in this pass, and an fp32 CPU input."""
    if getattr(layer, "onednn_weight", None) is None:
        return False
    weight, bias = layer.weight, layer.bias
    grad_wanted = torch.is_grad_enabled() and (weight.requires_grad or (bias is not None and bias.requires_grad))
    return (not grad_wanted and x.dtype == torch.float32 and x.device.type == "cpu"
            and weight.dtype == torch.float32 and weight.device.type == "cpu")


def frozen_product(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x Wᵀ + b of a layer for which ``takes_onednn`` holds, without autograd (callers give the backward)."""
    return onednn_linear(x, layer.onednn_weight.of(layer.weight), layer.bias)


def refresh(layer: nn.Module) -> None:
    """Forget the layer's packed weight (its weight was written through ``.data``); packed again on use."""
    if getattr(layer, "onednn_weight", None) is not None:
        layer.onednn_weight.refresh()


class _FrozenLinear(torch.autograd.Function):
    """y = x Wᵀ + b through oneDNN; backward gives the input's gradient only (W and b are frozen)."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.save_for_backward(layer.weight)
        return frozen_product(layer, x)

    @staticmethod
    def backward(ctx, grad_out):
        (weight,) = ctx.saved_tensors
        return input_gradient(grad_out, weight), None


def _frozen_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Forward of one patched ``nn.Linear``: oneDNN while its weight is frozen, else F.linear."""
    if not takes_onednn(self, x):
        return F.linear(x, self.weight, self.bias)
    if torch.is_grad_enabled() and x.requires_grad:
        return _FrozenLinear.apply(x, self)
    return frozen_product(self, x)


@functools.cache
def _works_here() -> bool:
    """oneDNN's linear ops are in this torch build and agree with F.linear on a small product.

    Its numbers come from a generator of its own: drawing from torch's global one would change every
    seeded initialisation that follows (the LoRA weights), so runs would differ with the mode."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        x, w = torch.randn(3, 16, generator=generator), torch.randn(24, 16, generator=generator)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, _BATCH_HINT)
        return bool(torch.allclose(onednn_linear(x, packed, None), F.linear(x, w), atol=1e-5)
                    and torch.allclose(onednn_linear(x, w, None), F.linear(x, w), atol=1e-5))
    except (RuntimeError, AttributeError):
        return False


def use_onednn_linears(model: nn.Module, mode: str = "auto") -> str:
    """Route the fp32 CPU ``nn.Linear`` layers of ``model`` through oneDNN; returns the mode used.

    Call it once the weights are loaded and on their device. A layer packs its weight at its first call
    through oneDNN, so a model that is loaded and then dropped, or only trained, never pays for a copy.
    Layers are patched in place; calling it again re-packs. Each call then decides for itself
    (``takes_onednn``): a layer being trained or moved to another device takes F.linear.
    """
    if mode not in CPU_MATMUL_CHOICES:
        raise ValueError(f"cpu_matmul must be one of {', '.join(CPU_MATMUL_CHOICES)}, got {mode!r}")
    layers = [m for m in model.modules() if type(m) is nn.Linear
              and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32]
    if mode == "pytorch" or not layers or not _works_here():
        return "pytorch"
    if mode == "auto":
        copy_bytes = sum({id(m.weight): m.weight.nbytes for m in layers}.values())
        mode = "packed" if copy_bytes <= PACKED_COPY_LIMIT else "onednn"
    for layer in layers:
        layer.onednn_weight = OneDNNWeight(packed=mode == "packed")
        layer.forward = types.MethodType(_frozen_forward, layer)
    log.info("fp32 linear layers through oneDNN (%s): %d", mode, len(layers))
    return mode
