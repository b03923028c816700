"""Int8 weights for CPU inference: every `nn.Linear` of a model becomes an `Int8Linear` that keeps its weight
as int8 (one scale per output row) and multiplies with torch's dynamic-quantization kernel (fbgemm/oneDNN:
the activation row is quantized on the fly, the product accumulated in int32).

Why this kernel: measured on this machine (torch 2.13, one thread; benchmarks/chat.py, docs/performance.md), a
576x3072 projection takes 58 µs for one row against float32's 276 µs, and 134 µs against 779 µs for 16 rows,
while torch's weight-only kernels (`aten._weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`) are ten and
twenty times *slower* than float32 here. No int4 kernel that is fast on this CPU ships with torch, so there
is no int4 setting (`quantize(model, "int4")` says so).

Per-row scales and no activation range reduction (`reduce_range=False`: the CPU has VNNI, whose int8 dot
products do not saturate) halve the error of torch's default per-tensor recipe: relative output error 1.0%
instead of 1.6% on random weights. Quality on real text is reported as perplexity in docs/performance.md.

A tied LM head gets an int8 copy; the embedding it shares stays float for the lookup.

torch 2.13 marks its quantized tensor types deprecated (pytorch/pytorch#184982) but ships and supports these
kernels; the warning is silenced here because the project pins that version.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .base import ModelError

MODES = ("none", "int8")


class Int8Linear(nn.Module):
    """`y = x W^T + b` with W held as per-row int8 (prepacked for the CPU kernel) and x quantized per call."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float().cpu()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).double()  # symmetric, one scale per output row
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(w, scales, torch.zeros_like(scales, dtype=torch.long), 0,
                                                 torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float(), self._packed, False)
        return y.view(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-row"


def quantize(model: nn.Module, mode: str) -> nn.Module:
    """Swap the model's Linear layers for int8 ones in place (mode "int8"), or leave it ("none").

    For inference only: the int8 layers have no gradients and are not saved by `save_pretrained`."""
    if mode not in MODES:
        why = " (torch has no int4 kernel that is faster than float32 on a CPU)" if mode == "int4" else ""
        raise ModelError(f"unknown quantization {mode!r}{why}; choose one of {', '.join(MODES)}")
    if mode == "none":
        return model
    if next(model.parameters()).device.type != "cpu":
        raise ModelError("int8 quantization runs on the CPU; serve GPU models with --quantize none")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
    model.quantization = mode
    return model.eval()
