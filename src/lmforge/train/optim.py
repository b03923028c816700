"""AdamW with weight-decay groups, and the learning-rate schedule: linear warmup, then cosine or linear decay."""
from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay the weight matrices; never biases, norm weights or other vectors (BERT/GPT-2 practice).

    Embedding matrices are decayed like every other matrix, as in BERT's and Hugging Face's recipes.
    Tied parameters appear once (named_parameters dedups them).
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8,
                   fused: bool | None = None):
    """AdamW over `param_groups`. `fused=True`: one kernel for all tensors (on CPU too, since torch 2.4), several
    times faster than the per-tensor loop where the optimizer is a large share of a small step (fine-tuning)."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=fused)


def optimizer_step(optimizer, scheduler, parameters, clip: float) -> float | None:
    """Clip the gradient's global norm (when clip > 0), step the optimizer and the schedule, clear the
    gradients; returns the norm before clipping (None when not clipped)."""
    norm = torch.nn.utils.clip_grad_norm_(parameters, clip).item() if clip > 0 else None
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def lr_factor(step: int, warmup: int, total: int, schedule: str = "cosine", min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        decay = 1.0 - progress
    elif schedule == "constant":
        decay = 1.0
    else:
        raise ValueError(f"unknown schedule {schedule!r}; use cosine, linear or constant")
    return min_ratio + (1.0 - min_ratio) * decay


def make_scheduler(optimizer, warmup: int, total: int, schedule: str = "cosine", min_ratio: float = 0.0):
    lr_factor(warmup, warmup, total, schedule, min_ratio)  # validate the schedule name now
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total, schedule, min_ratio))
