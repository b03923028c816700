"""`lmforge pretrain`: parse the options into `Args` and hand them to the loop."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..models import ModelError

err = Console(stderr=True)
console = Console()


def pretrain_cmd(
    family: Annotated[str, typer.Option(help="bert, roberta, gpt2, xlnet or t5.")],
    data: Annotated[list[Path], typer.Option(
        help="Corpus: .txt, .jsonl (a \"text\" field) or a HF dataset folder; repeatable.")],
    out: Annotated[Path, typer.Option(help="Run folder; ends up a Hugging Face model folder.")],
    size: Annotated[str, typer.Option(help="tiny, small or base.")] = "tiny",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 1000,
    block_size: Annotated[int, typer.Option(help="Tokens per block (T5: encoder input length).")] = 128,
    micro_batch: Annotated[int, typer.Option(help="Blocks per forward pass on each process.")] = 16,
    accumulation: Annotated[int, typer.Option(help="Micro-batches per optimizer step on each process.")] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 5e-4,
    warmup_steps: Annotated[Optional[int], typer.Option(help="Warmup steps (default 6% of the steps).")] = None,
    schedule: Annotated[str, typer.Option(help="cosine, linear or constant.")] = "cosine",
    weight_decay: Annotated[float, typer.Option()] = 0.01,
    clip: Annotated[float, typer.Option(help="Gradient norm clipping (0: off).")] = 1.0,
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16 (autocast).")] = "auto",
    tokenizer: Annotated[Optional[Path], typer.Option(
        help="Tokenizer folder (default: train one on the corpus).")] = None,
    vocab_size: Annotated[int, typer.Option(help="Vocabulary of a newly trained tokenizer.")] = 8000,
    init: Annotated[Optional[Path], typer.Option(help="Continue pretraining this model folder.")] = None,
    layers: Annotated[Optional[int], typer.Option(help="Override the size's layer count.")] = None,
    hidden: Annotated[Optional[int], typer.Option(help="Override the size's hidden width.")] = None,
    heads: Annotated[Optional[int], typer.Option(help="Override the size's attention heads.")] = None,
    ffn: Annotated[Optional[int], typer.Option(help="Override the size's feed-forward width.")] = None,
    max_positions: Annotated[Optional[int], typer.Option(help="Learned positions (BERT/RoBERTa/GPT-2).")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Override the family's dropout.")] = None,
    nsp: Annotated[bool, typer.Option(help="BERT: add next-sentence prediction.")] = False,
    static_masking: Annotated[Optional[bool], typer.Option(
        "--static-masking/--dynamic-masking",
        help="MLM masks once per block (BERT default) or anew each epoch (RoBERTa default).")] = None,
    plm_span: Annotated[bool, typer.Option(help="XLNet: predict whole n-grams (span-based order).")] = False,
    val_fraction: Annotated[float, typer.Option(help="Share of tokens held out for validation.")] = 0.05,
    eval_every: Annotated[int, typer.Option()] = 200,
    eval_blocks: Annotated[int, typer.Option(help="Validation blocks per evaluation.")] = 256,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 200,
    log_every: Annotated[int, typer.Option()] = 10,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its checkpoint.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="torch threads per process.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Token cache (default $LMFORGE_HOME/cache/tokens).")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: cuda when available).")] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Pretrain a model with its family's objective (MLM, causal LM, permutation LM, span corruption).

    Run with `torchrun --nproc_per_node N -m lmforge pretrain …` to train data-parallel on N processes.
    """
    from .args import Args
    from .loop import pretrain

    try:
        args = Args(family=family, data=data, out=out, size=size, steps=steps, block_size=block_size,
                    micro_batch=micro_batch, accumulation=accumulation, lr=lr, warmup_steps=warmup_steps,
                    schedule=schedule, weight_decay=weight_decay, clip=clip, precision=precision,
                    tokenizer=tokenizer, vocab_size=vocab_size, init=init, layers=layers, hidden=hidden,
                    heads=heads, ffn=ffn, max_positions=max_positions, dropout=dropout, nsp=nsp,
                    static_masking=static_masking, plm_span=plm_span, val_fraction=val_fraction,
                    eval_every=eval_every, eval_blocks=eval_blocks, save_every=save_every, log_every=log_every,
                    seed=seed, resume=resume, threads=threads, cache_dir=cache_dir, device=device,
                    progress=progress)
        summary = pretrain(args)
    except ModelError as e:  # DataError included: file, line and reason in one sentence
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1)
    if summary.get("stopped"):
        console.print(f"{family}: stopped after step {summary['steps']}; continue with the same command and --resume")
    elif "val_loss" in summary:
        console.print(f"{family}: {summary['steps']} steps, validation loss {summary['val_loss']:.4f} "
                      f"(perplexity {summary['val_ppl']:.2f}); model in {out}")
    else:
        console.print(f"{family}: {summary['steps']} steps; model in {out}")


def register(app: typer.Typer) -> None:
    """Add `pretrain` to the lmforge command."""
    app.command("pretrain")(pretrain_cmd)
