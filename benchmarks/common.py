"""What the benchmark scripts share: the reference model size, FLOP counting and the matmul peak."""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def add_size_args(p: argparse.ArgumentParser, steps: int) -> None:
    """The model-zoo reference size: L=6, H=512, 8 heads, FF=2048, vocab 32000, batch 8, sequence 256."""
    p.add_argument("--families", default="bert,roberta,gpt2,xlnet,t5")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ffn", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=steps)


def sizes(args) -> dict:
    return dict(layers=args.layers, hidden=args.hidden, heads=args.heads, ffn=args.ffn, vocab=args.vocab,
                max_len=max(512, args.seq))


def step_flops(model, batch: dict) -> int:
    """FLOPs of one forward + backward, as counted by torch (matmuls and attention)."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of a large square matmul at `dtype`: the ceiling MFU is measured against."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def peaks(precisions: list[str]) -> dict[str, float]:
    return {p: matmul_peak(torch.float32 if p == "fp32" else torch.bfloat16) for p in precisions}
