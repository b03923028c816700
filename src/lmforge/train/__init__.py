"""Pretraining: typed arguments, the loop, AdamW and its schedule, atomic checkpoints, torch.distributed."""
from .args import SIZES, Args
from .loop import evaluate, prepare, pretrain

__all__ = ["SIZES", "Args", "evaluate", "prepare", "pretrain"]
