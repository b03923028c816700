"""Training-step throughput of each family, lmforge next to `transformers`, in one run.

    python benchmarks/models.py                       # the issue's size: L=6, H=512, 8 heads, FF=2048, vocab 32000
    python benchmarks/models.py --families gpt2 --steps 2 --precisions bf16

One step is forward + backward + AdamW on the family's pretraining head: BERT/RoBERTa masked LM (15% of
positions labelled), GPT-2 causal LM, XLNet permutation LM (two-stream, 1/6 of positions predicted),
T5 span-corruption shape (encoder 256 tokens, decoder 64). Both implementations get the same weights
(ours is loaded from the `transformers` checkpoint) and the same batch. Tokens/s counts input tokens.
Our BERT/RoBERTa step computes the MLM output layer only at the labelled positions, as `lmforge pretrain`
does (same loss and gradients; transformers computes it at every position). Model-FLOPs utilisation (MFU) =
FLOPs of each implementation's own step (counted by torch's FlopCounterMode) / step time / the matmul peak
measured here at the same precision.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
import transformers

from common import add_size_args, step_flops
from common import peaks as matmul_peaks
from common import sizes as size_dict
from lmforge.models import load_model
from lmforge.models.presets import hf_config_dict
from lmforge.objectives import MaskedLM

HF_CLASSES = {
    "bert": "BertForMaskedLM",
    "roberta": "RobertaForMaskedLM",
    "gpt2": "GPT2LMHeadModel",
    "xlnet": "XLNetLMHeadModel",
    "t5": "T5ForConditionalGeneration",
}


# What `lmforge pretrain` passes to the forward (objectives' `train_kwargs`): MLM logits only where labelled.
TRAIN_KWARGS = {"bert": MaskedLM.train_kwargs, "roberta": MaskedLM.train_kwargs}


def make_batch(family: str, batch: int, seq: int, vocab: int, gen: torch.Generator) -> dict:
    ids = torch.randint(10, vocab, (batch, seq), generator=gen)
    if family in ("bert", "roberta"):
        labels = torch.where(torch.rand(batch, seq, generator=gen) < 0.15, ids, -100)
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    if family == "gpt2":
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
    if family == "xlnet":
        # Partial prediction (XLNet §2.3, K=6): the last seq/6 tokens of a random order are targets.
        n_pred = seq // 6
        perm_mask = torch.zeros(batch, seq, seq)
        target_mapping = torch.zeros(batch, n_pred, seq)
        labels = torch.empty(batch, n_pred, dtype=torch.long)
        for b in range(batch):
            order = torch.randperm(seq, generator=gen)
            rank = torch.empty(seq, dtype=torch.long)
            rank[order] = torch.arange(seq)
            perm_mask[b] = (rank[None, :] >= rank[:, None]).float()  # i must not see j unless j comes first
            targets = order[-n_pred:]
            target_mapping[b, torch.arange(n_pred), targets] = 1.0
            labels[b] = ids[b, targets]
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids), perm_mask=perm_mask,
                    target_mapping=target_mapping, labels=labels)
    if family == "t5":
        labels = torch.randint(10, vocab, (batch, seq // 4), generator=gen)
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    raise ValueError(family)


def train_step(model, optimizer, batch: dict, bf16: bool) -> None:
    optimizer.zero_grad(set_to_none=True)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()


def time_pair(runs: list[tuple], bf16: bool, warmup: int, steps: int) -> list[float]:
    """Median seconds per step of each (model, batch); steps alternate between the models so that load from
    elsewhere on the machine falls on both alike."""
    optimizers = []
    for model, batch in runs:
        model.train()
        optimizers.append(torch.optim.AdamW(model.parameters(), lr=1e-4))
        for _ in range(warmup):
            train_step(model, optimizers[-1], batch, bf16)
    times = [[] for _ in runs]
    for _ in range(steps):
        for (model, batch), optimizer, t in zip(runs, optimizers, times):
            t0 = time.perf_counter()
            train_step(model, optimizer, batch, bf16)
            t.append(time.perf_counter() - t0)
    return [sorted(t)[len(t) // 2] for t in times]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_args(p, steps=3)
    args = p.parse_args(argv)
    transformers.logging.set_verbosity_error()
    sizes = size_dict(args)
    precisions = args.precisions.split(",")
    peaks = matmul_peaks(precisions)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads; "
          + ", ".join(f"{p} matmul peak {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()), flush=True)
    print(f"L={args.layers} H={args.hidden} heads={args.heads} FF={args.ffn} vocab={args.vocab} "
          f"batch={args.batch} seq={args.seq}, median of {args.steps} steps after {args.warmup} warm-up\n")
    header = "| family | precision | lmforge tok/s | transformers tok/s | ours/theirs | lmforge MFU | transformers MFU |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for family in args.families.split(","):
        torch.manual_seed(0)
        hf_config = transformers.AutoConfig.for_model(family, **hf_config_dict(family, **sizes))
        theirs = getattr(transformers, HF_CLASSES[family])(hf_config)
        with tempfile.TemporaryDirectory() as d:
            theirs.save_pretrained(d)
            ours = load_model(d)
        batch = make_batch(family, args.batch, args.seq, args.vocab, torch.Generator().manual_seed(0))
        runs = [(ours, batch | TRAIN_KWARGS.get(family, {})), (theirs, batch)]
        flops = [step_flops(model, b) for model, b in runs]
        tokens = args.batch * args.seq
        for precision in precisions:
            bf16 = precision == "bf16"
            t_ours, t_theirs = time_pair(runs, bf16, args.warmup, args.steps)
            mfu = lambda f, t: f"{f / t / peaks[precision]:.1%}"
            print(f"| {family} | {precision} | {tokens / t_ours:,.0f} | {tokens / t_theirs:,.0f} | "
                  f"{t_theirs / t_ours:.2f}x | {mfu(flops[0], t_ours)} | {mfu(flops[1], t_theirs)} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
