"""Int8 weights for CPU inference: every `nn.Linear` of a model becomes an `Int8Linear` that keeps its weight
as int8 (one scale per output row) and multiplies with torch's dynamic-quantization kernel (fbgemm/oneDNN:
each activation row is quantized to uint8 on the fly, the product accumulated in int32).

Why this kernel: measured on this machine (torch 2.13, one thread; docs/performance.md), a 576x3072
projection takes 58 µs for one row against float32's 276 µs, and 134 µs against 779 µs for 16 rows, while
torch's weight-only kernels (`aten._weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`) are ten and twenty
times *slower* than float32 here. No int4 kernel that is fast on this CPU ships with torch, so there is no int4
setting (`quantize(model, "int4")` says so).

Outlier features (LLM.int8(), Dettmers et al. 2022, section 3): a few input channels of some layers carry
values a hundred times the others' (SmolLM2's MLP down-projections reach 57 where the median is 0.6). One
such channel sets the scale of the whole activation row, and the rest lose their precision: plain int8 kept
only 62% of SmolLM2's greedy chat tokens equal to float32's (KL 0.61 nats). So `quantize` first runs the model
on a short calibration text (`data/calibration.txt`), and the input channels of a layer that reach `OUTLIER`
times that layer's median magnitude are multiplied in float32, apart from the int8 product. At 2x the median
(7% of the channels in float), 91% of the tokens agree (KL 0.03 nats) and held-out perplexity rises 10%
(18.8 -> 20.7) instead of 20% at 4x; docs/performance.md has the figures. (The paper's absolute threshold, 6.0, does not carry over:
after SmolLM2's final norm every channel of the LM head's input exceeds it, and a float head costs more than
all the other layers together.)

Per-row weight scales and no activation range reduction (`reduce_range=False`: the CPU has VNNI, whose int8
dot products do not saturate) halve the error of torch's default per-tensor recipe on random weights.

A tied LM head gets an int8 copy; the embedding it shares stays float for the lookup.

torch 2.13 marks its quantized tensor types deprecated (pytorch/pytorch#184982) but ships and supports these
kernels; the warning is silenced here because the project pins that version.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .base import ModelError

MODES = ("none", "int8")
OUTLIER = 2.0  # times the layer's median input magnitude (benchmarks/chat.py measures the effect)
MAX_OUTLIER_FRACTION = 0.5  # beyond this the float part costs more than int8 saves: the layer stays float
CALIBRATION = Path(__file__).parent / "data" / "calibration.txt"


class Int8Linear(nn.Module):
    """`y = x W^T + b` with W held as per-row int8 (prepacked for the CPU kernel) and x quantized per row;
    the input channels listed in `outliers` are multiplied in float32 instead, apart from the rest."""

    def __init__(self, linear: nn.Linear, outliers: torch.Tensor | None = None):
        super().__init__()
        w = linear.weight.detach().float().cpu()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.outliers = outliers if outliers is not None and len(outliers) else None
        if self.outliers is not None:
            keep = torch.ones(self.in_features, dtype=torch.bool)
            keep[self.outliers] = False
            self.register_buffer("inlier_mask", keep, persistent=False)
            self.register_buffer("outlier_weight_t", w[:, self.outliers].t().contiguous(), persistent=False)
            w = w * keep  # those columns are in the float part
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).double()  # symmetric, one scale per output row
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(w, scales, torch.zeros_like(scales, dtype=torch.long), 0,
                                                 torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).float()
        if self.outliers is None:
            y = torch.ops.quantized.linear_dynamic(rows, self._packed, False)
        else:  # int8 for the ordinary channels, float32 for the few large ones (their scale would drown the rest)
            y = torch.ops.quantized.linear_dynamic(rows * self.inlier_mask, self._packed, False)
            y = torch.addmm(y, rows.index_select(1, self.outliers), self.outlier_weight_t)
        return y.view(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        float_part = f", {len(self.outliers)} outlier channels in float32" if self.outliers is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-row{float_part}"


@torch.no_grad()
def input_magnitudes(model: nn.Module, calibration_ids: list[int]) -> dict[str, torch.Tensor]:
    """Each Linear's largest absolute input per channel over one forward pass of `calibration_ids`."""
    amax: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(module, inputs, output):
            x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0).float().cpu()
            amax[name] = torch.maximum(amax[name], x) if name in amax else x
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        ids = torch.tensor([calibration_ids], device=next(model.parameters()).device)
        kwargs = {"decoder_input_ids": ids} if getattr(model, "family", None) == "t5" else {}
        model(ids, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return amax


def quantize(model: nn.Module, mode: str, calibration_ids: list[int] | None = None) -> nn.Module:
    """Swap the model's Linear layers for int8 ones in place (mode "int8"), or leave it ("none").

    `calibration_ids`: tokens of ordinary text (e.g. `calibration_text()` encoded) to find outlier channels
    with; None quantizes every channel. For inference only: the int8 layers have no gradients and are not
    saved by `save_pretrained`."""
    if mode not in MODES:
        why = " (torch has no int4 kernel that is faster than float32 on a CPU)" if mode == "int4" else ""
        raise ModelError(f"unknown quantization {mode!r}{why}; choose one of {', '.join(MODES)}")
    if mode == "none":
        return model
    if next(model.parameters()).device.type != "cpu":
        raise ModelError("int8 quantization runs on the CPU; serve GPU models with --quantize none")
    model.eval()
    amax = input_magnitudes(model, calibration_ids) if calibration_ids else {}
    for name, linear in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]:
        outliers = (amax[name] >= OUTLIER * amax[name].median()).nonzero().squeeze(1) if name in amax else None
        if outliers is not None and len(outliers) > MAX_OUTLIER_FRACTION * linear.in_features:
            continue  # mostly large inputs: int8 would gain little here and lose much
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, Int8Linear(linear, outliers))
    model.quantization = mode
    return model


def calibration_text() -> str:
    """A page of ordinary text (prose, questions, numbers, code) written for this purpose."""
    return CALIBRATION.read_text(encoding="utf-8")
