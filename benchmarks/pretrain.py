"""Throughput of a full pretraining step per family: lmforge's objective + model + AdamW next to `transformers`.

    python benchmarks/pretrain.py                          # the model-zoo reference size, fp32 and bf16
    python benchmarks/pretrain.py --families xlnet --precisions bf16 --steps 3

One step = collate a batch from packed blocks with the family's objective, forward, backward, clip the
gradient, AdamW step — what `lmforge pretrain` does per optimizer step. `transformers` gets the same weights
and the same blocks, with its own collator where it has one (`DataCollatorForLanguageModeling` for MLM and
causal LM, `DataCollatorForPermutationLanguageModeling` for XLNet); it has no span-corruption collator, so
T5 uses ours on both sides. Tokens/s counts input tokens. MFU = FLOPs of the implementation's own step
(torch's FlopCounterMode) / step time / the matmul peak measured in this run at the same precision.

Note: Hugging Face's PLM collator predicts every position's query (target_mapping is T x T, with labels on
~1/6 of them) where XLNet's recipe (and ours) computes the query stream only for the 1/6 that are targets.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer as Backend
from tokenizers import models as tok_models

from common import add_size_args, step_flops
from common import peaks as matmul_peaks
from common import sizes as size_dict
from lmforge.models import load_model
from lmforge.models.presets import hf_config_dict
from lmforge.objectives import Blocks, CausalLM, MaskedLM, PermutationLM, SpanCorruption

HF_CLASSES = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM", "gpt2": "GPT2LMHeadModel",
              "xlnet": "XLNetLMHeadModel", "t5": "T5ForConditionalGeneration"}
# Special ids as each family's tokenizer places them; the rest of the vocabulary are ordinary tokens.
SPECIALS = {
    "bert": dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"),
    "roberta": dict(bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>"),
    "gpt2": dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"),
    "xlnet": dict(unk_token="<unk>", bos_token="<s>", eos_token="</s>", cls_token="<cls>", sep_token="<sep>",
                  pad_token="<pad>", mask_token="<mask>"),
    "t5": dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>"),
}


def hf_tokenizer(family: str, vocab: int):
    """A word-level tokenizer with the family's special tokens first and `vocab` ids in all (for the collators)."""
    specials = list(dict.fromkeys(SPECIALS[family].values()))
    sentinels = [f"<extra_id_{i}>" for i in range(100)] if family == "t5" else []
    words = [f"w{i}" for i in range(vocab - len(specials) - len(sentinels))]
    table = {t: i for i, t in enumerate(specials + words + sentinels[::-1])}
    backend = Backend(tok_models.WordLevel(table, unk_token=SPECIALS[family].get("unk_token", specials[0])))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIALS[family])
    if sentinels:
        tok.add_special_tokens({"additional_special_tokens": sentinels})
    return tok


def blocks(family: str, tok, batch: int, seq: int, gen: np.random.Generator, ours_obj) -> Blocks:
    """Packed blocks as the pipeline serves them: ordinary tokens framed like the family's layout."""
    raw = ours_obj.raw_length(seq) if family == "t5" else seq
    ids = gen.integers(len(set(SPECIALS[family].values())), tok.vocab_size - (100 if family == "t5" else 0),
                       size=(batch, raw))
    if family == "bert":
        ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    elif family == "roberta":
        ids[:, 0], ids[:, -1] = tok.bos_token_id, tok.eos_token_id
    elif family == "xlnet":
        ids[:, -2], ids[:, -1] = tok.sep_token_id, tok.cls_token_id
    return Blocks(ids, np.full(batch, raw), np.arange(batch))


def our_objective(family: str, tok):
    specials = tuple(tok.all_special_ids)
    if family in ("bert", "roberta"):
        return MaskedLM(tok.mask_token_id, tok.vocab_size, specials, dynamic=family == "roberta")
    if family == "gpt2":
        return CausalLM()
    if family == "xlnet":
        return PermutationLM(specials, tok.vocab_size)
    sentinels = tuple(tok.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(100))
    return SpanCorruption(sentinels, tok.eos_token_id, tok.pad_token_id)


def their_collator(family: str, tok, ours):
    if family in ("bert", "roberta"):
        c = transformers.DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.15)
    elif family == "gpt2":
        c = transformers.DataCollatorForLanguageModeling(tok, mlm=False)
    elif family == "xlnet":
        c = transformers.DataCollatorForPermutationLanguageModeling(tok)
    else:
        return lambda b: ours(b, 0)  # transformers has no span-corruption collator

    def collate(b: Blocks):
        batch = c([{"input_ids": row.tolist()} for row in b.input_ids])
        batch.pop("token_type_ids", None)
        return dict(batch)

    return collate


def train_step(model, optimizer, collate, b: Blocks, bf16: bool) -> None:
    batch = collate(b)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def time_steps(model, collate, b: Blocks, bf16: bool, warmup: int, steps: int) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(warmup):
        train_step(model, optimizer, collate, b, bf16)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        train_step(model, optimizer, collate, b, bf16)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_args(p, steps=2)
    args = p.parse_args(argv)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    sizes = size_dict(args)
    precisions = args.precisions.split(",")
    peaks = matmul_peaks(precisions)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads; "
          + ", ".join(f"{p} matmul peak {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()), flush=True)
    print(f"L={args.layers} H={args.hidden} heads={args.heads} FF={args.ffn} vocab={args.vocab} batch={args.batch} "
          f"seq={args.seq}; collate + forward + backward + clip + AdamW, median of {args.steps} after "
          f"{args.warmup} warm-up\n")
    header = ("| family | objective (theirs) | precision | lmforge tok/s | transformers tok/s | ours/theirs "
              "| lmforge MFU | transformers MFU |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for family in args.families.split(","):
        torch.manual_seed(0)
        tok = hf_tokenizer(family, args.vocab)
        hf_config = transformers.AutoConfig.for_model(family, **hf_config_dict(family, **sizes))
        for name in ("pad", "bos", "eos"):
            if getattr(tok, f"{name}_token_id", None) is not None and hasattr(hf_config, f"{name}_token_id"):
                setattr(hf_config, f"{name}_token_id", getattr(tok, f"{name}_token_id"))
        if family == "t5":
            hf_config.decoder_start_token_id = tok.pad_token_id
        theirs = getattr(transformers, HF_CLASSES[family])(hf_config)
        with tempfile.TemporaryDirectory() as d:
            theirs.save_pretrained(d)
            ours = load_model(d)
        objective = our_objective(family, tok)
        b = blocks(family, tok, args.batch, args.seq, np.random.default_rng(0), objective)
        ours_collate = lambda x, o=objective: o(x, 0) | getattr(o, "train_kwargs", {})  # as `lmforge pretrain`
        theirs_collate = their_collator(family, tok, objective)
        their_name = {"bert": "MLM collator", "roberta": "MLM collator", "gpt2": "CLM collator",
                      "xlnet": "PLM collator", "t5": "ours (none in transformers)"}[family]
        flops_ours = step_flops(ours, ours_collate(b))
        flops_theirs = step_flops(theirs, theirs_collate(b))
        tokens = args.batch * args.seq
        for precision in precisions:
            bf16 = precision == "bf16"
            t_ours = time_steps(ours, ours_collate, b, bf16, args.warmup, args.steps)
            t_theirs = time_steps(theirs, theirs_collate, b, bf16, args.warmup, args.steps)
            print(f"| {family} | {their_name} | {precision} | {tokens / t_ours:,.0f} | {tokens / t_theirs:,.0f} | "
                  f"{t_theirs / t_ours:.2f}x | {flops_ours / t_ours / peaks[precision]:.1%} | "
                  f"{flops_theirs / t_theirs / peaks[precision]:.1%} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
