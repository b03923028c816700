"""The `lmforge` command line: one table of commands, each a thin typed wrapper over the library."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .hub import CHAT_MODEL
from .models import ModelError

app = typer.Typer(help="lmforge: BERT, RoBERTa, GPT-2, XLNet and T5 on your own machine.", no_args_is_help=True)
tokenizer_app = typer.Typer(help="Train and inspect tokenizers.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")
console = Console()
err = Console(stderr=True)

ModelArg = Annotated[str, typer.Argument(help="A model folder, a packaged model name (all-MiniLM-L6-v2) or a Hub id.")]


def _fail(e: Exception) -> None:
    """One clear sentence on stderr and exit code 1: users never see a traceback for bad input."""
    err.print(f"[bold red]error:[/] {e}", soft_wrap=True)
    raise typer.Exit(1)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def info(model: ModelArg) -> None:
    """Show a model's family, task, size and configuration."""
    from . import load_model

    try:
        m = load_model(model)
    except ModelError as e:
        _fail(e)
    table = Table(title=f"{model}", show_header=False)
    table.add_row("family", m.family)
    table.add_row("task", f"{m.task} ({m.architectures[m.task]})")
    table.add_row("parameters", f"{m.num_parameters():,}")
    for key, value in m.config.to_hf().items():
        if not isinstance(value, dict):
            table.add_row(key, str(value))
    console.print(table)


@app.command()
def embed(
    texts: Annotated[list[str], typer.Argument(help="Sentences to embed.")],
    model: Annotated[str, typer.Option(help="An encoder model.")] = "all-MiniLM-L6-v2",
) -> None:
    """Embed sentences (mean-pooled, normalised) and print their cosine similarities."""
    from . import load

    try:
        m, tok = load(model, task="base")
        if tok is None:
            raise ModelError(f"{model} has no tokenizer files, so it cannot embed text")
    except ModelError as e:
        _fail(e)
    batch = tok(texts, padding=True, truncation=True, max_length=512)
    vectors = m.embed(batch["input_ids"], batch["attention_mask"])
    sims = vectors @ vectors.T
    table = Table(title=f"cosine similarity ({m.family}, {vectors.shape[1]} dimensions)")
    table.add_column("")
    for i in range(len(texts)):
        table.add_column(str(i))
    for i, text in enumerate(texts):
        table.add_row(f"{i}: {text[:40]}", *(f"{s:.3f}" for s in sims[i].tolist()))
    console.print(table)


@app.command()
def convert(
    model: ModelArg,
    out: Annotated[Path, typer.Argument(help="Folder to write config.json + model.safetensors (+ tokenizer).")],
    task: Annotated[Optional[str], typer.Option(help="Re-head the model: base, lm, classification, qa, …")] = None,
) -> None:
    """Load a checkpoint (strictly) and write it back as config.json + safetensors; a .gguf file becomes an
    ordinary Hugging Face folder (dequantized to float32, tokenizer and chat template included)."""
    from . import load
    from .hub import resolve
    from .models import gguf

    try:
        if (file := gguf.gguf_in(resolve(model))) is not None:
            if task not in (None, "lm"):
                raise ModelError(f"{file} is a causal LM; convert writes it as one, so drop --task {task}")
            config, n = gguf.convert(file, out)
            console.print(f"wrote {config['model_type']} ({config['architectures'][0]}, {n:,} parameters) to {out}")
            return
        m, tok = load(model, task=task)
    except ModelError as e:
        _fail(e)
    m.save_pretrained(out)
    if tok is not None:
        tok.save_pretrained(out)
    console.print(f"wrote {m.family} ({m.task}, {m.num_parameters():,} parameters) to {out}")


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="A message for a chat model, or the text to continue (T5: the input, e.g. 'summarize: ...').")],
    model: Annotated[str, typer.Option(help="A generative model (Llama, GPT-2, XLNet or T5 family): name, folder or .gguf file.")] = CHAT_MODEL,
    chat: Annotated[Optional[bool], typer.Option("--chat/--raw", help="Send the prompt as a user message through the model's chat template, or continue it as raw text. Default: chat when the model has its own template.")] = None,
    system: Annotated[Optional[str], typer.Option(help="A system message (chat only).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 = greedy; higher = more random.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    stop: Annotated[Optional[list[str]], typer.Option(help="Stop when this text appears (repeatable).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Makes sampling reproducible.")] = None,
    quantize: Annotated[str, typer.Option(help="Weights: int8, none, or auto (int8 for GPT-2 decoders on the CPU).")] = "auto",
) -> None:
    """Generate text from a prompt, streamed to the terminal (through the generation service: the local key's
    filter policy, usage and the audit log in LMFORGE_HOME, as for the API)."""
    from .generate import SamplingParams
    from .serve import local
    from .serve.engine import single_threaded_main
    from .serve.errors import APIError
    from .serve.served import load_served

    single_threaded_main()  # the engine's thread decodes, with all cores (serve/engine.py)
    try:
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop or [], seed=seed)
        with console.status(f"loading {model}…"):
            served = load_served(model, quantization=quantize)
        if served.kind != "generate":
            raise ModelError(f"{model} is an embedding model and cannot generate text; try lmforge embed")
        if chat if chat is not None else served.card.chat_template:
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
            prompt = served.chat_template.render(messages)
            params.stop += served.chat_template.stop
        finish = local.generate(served, prompt, params,
                                lambda text: console.print(text, end="", highlight=False, markup=False))
    except (ModelError, ValueError) as e:
        _fail(e)
    except APIError as e:
        _fail(ValueError(e.message))
    console.print(f"\n[dim]({finish})[/]")


@app.command()
def pull(
    repo_id: Annotated[str, typer.Argument(help="A Hugging Face Hub model id, e.g. HuggingFaceTB/SmolLM2-360M-Instruct.")],
    file: Annotated[Optional[str], typer.Option("--file", help="Download only this file of the repo, e.g. a .gguf quantization.")] = None,
) -> None:
    """Download a model from the Hugging Face Hub into LMFORGE_HOME/models, servable by its id afterwards."""
    from .hub import pull as download

    try:
        path = download(repo_id, file)
    except ModelError as e:
        _fail(e)
    console.print(f"pulled {repo_id} into {path}")
    console.print(f"    serve it: lmforge serve --model {repo_id}" + (f" (or --model {path})" if file else ""))


@tokenizer_app.command("train")
def tokenizer_train(
    files: Annotated[list[Path], typer.Argument(help="Plain-text corpus files.", exists=True, dir_okay=False)],
    family: Annotated[str, typer.Option(help="bert, roberta, gpt2, xlnet or t5: picks the algorithm and special tokens.")],
    vocab_size: Annotated[int, typer.Option(help="Target vocabulary size.")] = 8000,
    out: Annotated[Path, typer.Option(help="Folder to save the tokenizer in.")] = Path("tokenizer"),
) -> None:
    """Train a new tokenizer of a family's kind on a corpus."""
    from .tokenizer import train_tokenizer

    try:
        tok = train_tokenizer(family, [str(f) for f in files], vocab_size=vocab_size)
    except (ModelError, ValueError) as e:
        _fail(e)
    tok.save_pretrained(out)
    console.print(f"trained a {family} tokenizer with {tok.vocab_size:,} tokens; saved to {out}")


@app.command()
def demo() -> None:
    """A tour of the model zoo: real MiniLM embeddings, and every family round-tripped through safetensors."""
    from .demo import run_demo

    run_demo(console)


from .tasks.cli import register as _register_tasks  # noqa: E402  (finetune, eval)

_register_tasks(app)

from .train.cli import register as _register_pretrain  # noqa: E402  (pretrain)

_register_pretrain(app)

from .safety.cli import register as _register_safety  # noqa: E402  (data scrub|index, detect, audit bias|log)

_register_safety(app)

from .study.cli import register as _register_study  # noqa: E402  (compare)

_register_study(app)


from .serve.commands import keys_app, serve, usage  # noqa: E402  (the API server's commands)

app.command()(serve)
app.command()(usage)
app.add_typer(keys_app, name="keys")

if __name__ == "__main__":
    app()
