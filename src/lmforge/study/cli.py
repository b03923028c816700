"""`lmforge compare`: parse the options into `StudyArgs` and run (or resume) the study."""
from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..models import ModelError
from .args import DEFAULT_TASKS, StudyArgs

err = Console(stderr=True)
console = Console()

# Options shown in the recorded command when they differ from their defaults (name -> flag).
_FLAGS = ("families", "data_dir", "layers", "hidden", "heads", "ffn", "vocab_size", "block_size", "micro_batch", "lr",
          "finetune_examples", "eval_examples", "finetune_epochs", "finetune_max_steps", "finetune_batch_size",
          "finetune_lr", "max_length", "target_max_length", "samples", "sample_tokens", "heldout_chars", "seed",
          "threads", "device", "precision")


def option_flags(args: StudyArgs) -> list[str]:
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(StudyArgs) if f.name in _FLAGS}
    out = []
    for name in _FLAGS:
        value = getattr(args, name)
        if value != defaults[name]:
            value = ",".join(value) if isinstance(value, list) else value
            out.append(f"--{name.replace('_', '-')} {shlex.quote(str(value))}")
    return out


def compare_cmd(
    budget: Annotated[str, typer.Option(
        help="Pretraining budget: tokens per family (200k, 2M) or seconds for all pretraining (600s, 10m, 1h).")],
    corpus: Annotated[list[Path], typer.Option(help="Pretraining corpus (text or JSONL), the same for every family; "
                                                    "repeatable.")],
    out: Annotated[Path, typer.Option(help="Report folder (report.md, report.html, figures/, work/).")],
    tasks: Annotated[str, typer.Option(help="Comma-separated: sst2, rte, mrpc, squad, summarization, translation, "
                                             "or any registry benchmark.")] = ",".join(DEFAULT_TASKS),
    seeds: Annotated[int, typer.Option(help="Fine-tuning seeds per family and task.")] = 3,
    families: Annotated[str, typer.Option(help="Comma-separated subset of bert,roberta,gpt2,xlnet,t5.")] =
        "bert,roberta,gpt2,xlnet,t5",
    data_dir: Annotated[Path | None, typer.Option(help="The task benchmarks' local copies (default: "
                                                          "$LMFORGE_DATA_DIR, then ../shared/data).")] = None,
    layers: Annotated[int, typer.Option(help="Reference (GPT-2) layers; T5 splits them over its two stacks.")] = 2,
    hidden: Annotated[int, typer.Option(help="Hidden width of every family.")] = 128,
    heads: Annotated[int, typer.Option(help="Attention heads of every family.")] = 4,
    ffn: Annotated[int, typer.Option(help="Reference feed-forward width; other families' are solved to match "
                                          "parameters.")] = 512,
    vocab_size: Annotated[int, typer.Option(help="Vocabulary of each family's tokenizer.")] = 4000,
    block_size: Annotated[int, typer.Option(help="Tokens per pretraining block.")] = 128,
    micro_batch: Annotated[int, typer.Option(help="Blocks per pretraining step.")] = 16,
    lr: Annotated[float, typer.Option(help="Pretraining peak learning rate.")] = 1e-3,
    finetune_examples: Annotated[int, typer.Option(help="Training examples per task.")] = 4000,
    eval_examples: Annotated[int, typer.Option(help="Validation examples scored per task.")] = 200,
    finetune_epochs: Annotated[float, typer.Option(help="Fine-tuning epochs.")] = 3.0,
    finetune_max_steps: Annotated[int | None, typer.Option(help="Cap on fine-tuning steps.")] = None,
    finetune_batch_size: Annotated[int, typer.Option()] = 16,
    finetune_lr: Annotated[float, typer.Option(help="Fine-tuning learning rate, every family.")] = 3e-4,
    max_length: Annotated[int, typer.Option(help="Fine-tuning input tokens.")] = 128,
    target_max_length: Annotated[int, typer.Option(help="Target tokens (text-to-text, prompt modes).")] = 32,
    samples: Annotated[int, typer.Option(help="Generation prompts per family.")] = 20,
    sample_tokens: Annotated[int, typer.Option(help="Tokens generated per prompt.")] = 32,
    heldout_chars: Annotated[int, typer.Option(help="Held-out characters scored for perplexity.")] = 20000,
    seed: Annotated[int, typer.Option(help="Pretraining seed and first fine-tuning seed.")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")] = None,
    precision: Annotated[str, typer.Option(help="Pretraining precision: fp32 or bf16.")] = "fp32",
    progress: Annotated[bool, typer.Option(help="Show the live progress view.")] = True,
    check_against: Annotated[Path | None, typer.Option(
        help="A committed results.json: after the run, compare every table cell with it within the stated "
             "spread and exit 1 if any differ.")] = None,
) -> None:
    """Pretrain the five families on one corpus at matched size and compute, fine-tune and evaluate each on the
    tasks over several seeds, and write a Markdown + HTML report with figures. Re-run to resume."""
    from .runner import read_json, run_study

    reference = None
    if check_against is not None:  # read before the run, which may rewrite that very file
        if not check_against.is_file():
            err.print(f"[bold red]error:[/] --check-against {check_against}: no such file")
            raise typer.Exit(1)
        reference = read_json(check_against)

    try:
        args = StudyArgs(budget=budget, corpus=corpus, out=out, tasks=tasks, seeds=seeds, families=families,
                         data_dir=data_dir, layers=layers, hidden=hidden, heads=heads, ffn=ffn, vocab_size=vocab_size,
                         block_size=block_size, micro_batch=micro_batch, lr=lr, finetune_examples=finetune_examples,
                         eval_examples=eval_examples, finetune_epochs=finetune_epochs,
                         finetune_max_steps=finetune_max_steps, finetune_batch_size=finetune_batch_size,
                         finetune_lr=finetune_lr, max_length=max_length, target_max_length=target_max_length,
                         samples=samples, sample_tokens=sample_tokens, heldout_chars=heldout_chars, seed=seed,
                         threads=threads, device=device, precision=precision, progress=progress)
        command = "lmforge " + " ".join(shlex.quote(a) for a in recorded(sys.argv[1:])) \
            if sys.argv[1:2] == ["compare"] else None
        results = run_study(args, command=command, console=err)
    except (ModelError, ValueError) as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1)
    console.print(f"report: {out / 'report.md'} and {out / 'report.html'} ({len(results['claims'])} claims checked)")
    if reference is not None:
        check(reference, results)


def recorded(argv: list[str]) -> list[str]:
    """The command line the report records: without --check-against, which checks a run but is no part of it."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--check-against="):
            skip = False
        elif a == "--check-against":
            skip = True
        else:
            out.append(a)
    return out


def check(reference: dict, results: dict) -> None:
    """Print every compared cell and the summary; exit 1 when a cell falls outside its spread."""
    from .check import compare_results, summary

    cells = compare_results(reference, results)
    for c in cells:
        console.print(c.line(), markup=False, highlight=False, soft_wrap=True)
    console.print(summary(cells))
    if not all(c.agrees for c in cells):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_cmd)
