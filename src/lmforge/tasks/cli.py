"""`lmforge finetune` and `lmforge eval`: parse, delegate to tasks.finetune / tasks.evaluate, print with rich."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..models import ModelError

console = Console()
err = Console(stderr=True)

Opt = typer.Option
Model = Annotated[str, Opt("--model", help="A model folder, a packaged model name or a Hub id.")]
DataDir = Annotated[Optional[Path], Opt(help="Where the benchmarks' local copies live ($LMFORGE_DATA_DIR, ../shared/data).")]
TextCol = Annotated[Optional[str], Opt(help="Column with the text (the document for summarization, the source for translation).")]
PairCol = Annotated[Optional[str], Opt(help="Column with the second text of a pair (NLI, paraphrase).")]
LabelCol = Annotated[Optional[str], Opt(help="Column with the label (classification).")]
QuestionCol = Annotated[Optional[str], Opt(help="Column with the question (qa).")]
ContextCol = Annotated[Optional[str], Opt(help="Column with the context passage (qa).")]
AnswerCol = Annotated[Optional[str], Opt(help="Column with the answer, which must occur in the context (qa).")]
AnswerStartCol = Annotated[Optional[str], Opt(help="Column with the answer's character offset (qa, optional).")]
TargetCol = Annotated[Optional[str], Opt(help="Column with the summary or the translation.")]
EntitiesCol = Annotated[Optional[str], Opt(help="JSONL field with the entity spans (ner): [{start, end, label}].")]
MaxLen = Annotated[int, Opt(help="Input tokens per example (longer inputs are cut; QA contexts become windows).")]
Threads = Annotated[Optional[int], Opt(help="CPU threads for torch (default: torch's choice).")]


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(1)


def _columns(task: str, text, pair, label, question, context, answer, answer_start, target, entities=None) -> dict:
    from .registry import get_task

    kind = get_task(task).kind
    text_field = {"summarization": "document", "translation": "source"}.get(kind, "text")
    target_field = "summary" if kind == "summarization" else "target"
    cols = {text_field: text, "text_pair": pair, "label": label, "question": question, "context": context,
            "answer": answer, "answer_start": answer_start, target_field: target, "entities": entities}
    return {k: v for k, v in cols.items() if v is not None}


def finetune_cmd(
    model: Model,
    task: Annotated[str, Opt(help="A benchmark (sst2, ag_news, sms_spam, rte, mrpc, squad, scitldr, multi30k, "
                                  "tinyshakespeare, gutenberg, conll2003) or, with --train, classification / qa / "
                                  "summarization / translation / generation / ner.")],
    out: Annotated[Path, Opt(help="Folder for the fine-tuned model.")],
    train: Annotated[Optional[Path], Opt(help="Your training file: CSV, TSV or JSONL (.txt for generation), or a "
                                              "Hugging Face dataset: hf:OWNER/NAME, hf:OWNER/NAME:CONFIG, "
                                              "hf:OWNER/NAME:CONFIG@SPLIT.")] = None,
    validation: Annotated[Optional[Path], Opt(help="Your validation file (same columns), or hf:OWNER/NAME[:CONFIG] "
                                                   "(its validation split).")] = None,
    text_column: TextCol = None,
    text_pair_column: PairCol = None,
    label_column: LabelCol = None,
    question_column: QuestionCol = None,
    context_column: ContextCol = None,
    answer_column: AnswerCol = None,
    answer_start_column: AnswerStartCol = None,
    target_column: TargetCol = None,
    entities_column: EntitiesCol = None,
    data_dir: DataDir = None,
    mode: Annotated[Optional[str], Opt(help="classify, span, text2text, prompt, causal or tag (default: the "
                                            "family's).")] = None,
    epochs: Annotated[float, Opt(help="Passes over the training data.")] = 1.0,
    max_steps: Annotated[Optional[int], Opt(help="Stop after this many steps (overrides --epochs).")] = None,
    batch_size: Annotated[int, Opt(help="Examples per step.")] = 16,
    lr: Annotated[Optional[float], Opt(help="Peak learning rate (default 5e-5; 3e-4 for T5).")] = None,
    max_length: MaxLen = 128,
    target_max_length: Annotated[int, Opt(help="Target tokens (text-to-text and prompt modes).")] = 64,
    max_train_examples: Annotated[Optional[int], Opt(help="Use a random subset of the training data.")] = None,
    max_eval_examples: Annotated[Optional[int], Opt(help="Evaluate on a random subset.")] = None,
    freeze_embeddings: Annotated[bool, Opt(help="Keep the word embeddings fixed (a faster step on CPU).")] = False,
    freeze_layers: Annotated[int, Opt(help="Keep the embeddings and the lowest N layers fixed.")] = 0,
    tag_scheme: Annotated[str, Opt(help="ner: the tags the model learns, iob2 or bioes.")] = "iob2",
    seed: Annotated[int, Opt(help="Random seed.")] = 0,
    evaluate: Annotated[bool, Opt("--eval/--no-eval", help="Evaluate on the validation split afterwards.")] = True,
    save_every: Annotated[int, Opt(help="Steps between checkpoints in OUT/checkpoint.pt (0: none); deleted when "
                                        "the run finishes.")] = 200,
    resume: Annotated[bool, Opt(help="Continue an interrupted run from OUT/checkpoint.pt (same options).")] = False,
    threads: Threads = None,
) -> None:
    """Fine-tune a model on a task: a public benchmark's local copy, or your own CSV / TSV / JSONL."""
    import torch

    from .finetune import FinetuneArgs, finetune

    if threads:
        torch.set_num_threads(threads)
    try:
        columns = _columns(task, text_column, text_pair_column, label_column, question_column, context_column,
                           answer_column, answer_start_column, target_column, entities_column)
        args = FinetuneArgs(model=model, task=task, out=out, train=train, validation=validation, columns=columns,
                            data_dir=data_dir, mode=mode, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                            lr=lr, max_length=max_length, target_max_length=target_max_length,
                            max_train_examples=max_train_examples, max_eval_examples=max_eval_examples, seed=seed,
                            freeze_embeddings=freeze_embeddings, freeze_layers=freeze_layers,
                            tag_scheme=tag_scheme, evaluate=evaluate, save_every=save_every, resume=resume)
        with Progress(TextColumn("fine-tuning"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                      TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            job = bar.add_task("train", total=None, loss=float("nan"))

            def progress(step, total, loss):
                bar.update(job, completed=step, total=total, loss=loss)
                if not console.is_terminal and (step % 50 == 0 or step == total):  # logs and pipes: a line now and then
                    console.print(f"step {step}/{total} loss {loss:.4f}")

            result = finetune(args, progress)
    except ModelError as e:
        _fail(e)
    except KeyboardInterrupt:
        ckpt = Path(out) / "checkpoint.pt"
        _fail(f"interrupted; {ckpt} holds the last checkpoint: add --resume to continue from it" if ckpt.is_file()
              else "interrupted before the first checkpoint (--save-every steps)")
    console.print(f"fine-tuned {result.predictor.model.family} ({result.mode}) on {result.train_examples:,} "
                  f"examples: {result.steps:,} steps in {result.train_seconds:.1f} s, final loss "
                  f"{result.final_loss:.4f}; saved to {result.out}")
    if result.metrics:
        console.print(_table(f"{task} validation", result.metrics))
        path = Path(out) / "eval_results.json"
        path.write_text(json.dumps({"task": task, "split": "validation", "metrics": result.metrics,
                                    "train_seconds": result.train_seconds, "steps": result.steps}, indent=2) + "\n")


def eval_cmd(
    model: Model,
    task: Annotated[Optional[str], Opt(help="The task (default: the one the model was fine-tuned for).")] = None,
    split: Annotated[str, Opt(help="The benchmark split: validation, test, train.")] = "validation",
    data: Annotated[Optional[Path], Opt(help="Your own evaluation file (CSV, TSV, JSONL) or hf:OWNER/NAME[:CONFIG] "
                                             "(the --split split) instead of a benchmark split.")] = None,
    text_column: TextCol = None,
    text_pair_column: PairCol = None,
    label_column: LabelCol = None,
    question_column: QuestionCol = None,
    context_column: ContextCol = None,
    answer_column: AnswerCol = None,
    answer_start_column: AnswerStartCol = None,
    target_column: TargetCol = None,
    entities_column: EntitiesCol = None,
    data_dir: DataDir = None,
    max_examples: Annotated[Optional[int], Opt(help="Evaluate on a random subset of this many examples.")] = None,
    max_length: Annotated[Optional[int], Opt(help="Input tokens (default: as fine-tuned, else 256).")] = None,
    batch_size: Annotated[int, Opt(help="Examples per forward pass.")] = 32,
    output: Annotated[Optional[Path], Opt(help="Write the metrics as JSON here (default: eval-TASK-SPLIT.json).")] = None,
    predictions: Annotated[Optional[Path], Opt(help="Save every prediction with its input and reference (JSONL).")] = None,
    threads: Threads = None,
) -> None:
    """Score a model on a task's split with the task's standard metrics; print a table and write JSON."""
    import torch

    from .evaluate import evaluate, open_predictor, write_outputs
    from .finetune import _limit, load_examples

    if threads:
        torch.set_num_threads(threads)
    try:
        options = {"batch_size": batch_size, **({"max_length": max_length} if max_length else {})}
        p = open_predictor(model, task, **options)
        spec = p.task
        labels = p.task.label_names()
        if data is not None:
            columns = _columns(spec.name, text_column, text_pair_column, label_column, question_column,
                               context_column, answer_column, answer_start_column, target_column, entities_column)
            from .hub_data import local_file
            from .readers import read_user_file

            examples = read_user_file(local_file(data, split), spec, columns, labels=labels)
            split = data.name
        elif spec.is_user:
            raise ModelError(f"{model} was fine-tuned on your own {spec.kind} data; pass --data FILE to evaluate it")
        else:
            examples = load_examples(spec, split, None, None, data_dir)
        result = evaluate(p, _limit(examples, max_examples, 0), split)
    except ModelError as e:
        _fail(e)
    console.print(_table(f"{model} on {spec.name} ({split}, {result.examples:,} examples, {result.seconds:.1f} s)",
                         result.metrics))
    output = output or Path(f"eval-{spec.name}-{Path(split).stem}.json")
    write_outputs(result, model, output, predictions)
    console.print(f"metrics written to {output}" + (f"; predictions to {predictions}" if predictions else ""))


def _table(title: str, metrics: dict[str, float]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:,}" if isinstance(value, int) else f"{value:.4f}")
    return table


def register(app: typer.Typer) -> None:
    """Add `finetune` and `eval` to the lmforge command."""
    app.command("finetune")(finetune_cmd)
    app.command("eval")(eval_cmd)
