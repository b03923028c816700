"""The pretraining loop: data, model and objective from `Args`, then steps, evaluations and checkpoints.

Exactness, by construction: every random choice is a function of (seed, step, position) — the data order
(`Sampler`), each block's mask or order (the objectives), and dropout (the torch generator is reseeded
from (seed, step, global micro-batch) before each forward). A resumed run therefore replays bit for bit, and
N ranks (micro-batch j of a step on rank j % N) compute the same gradients as one process with N times
the accumulation, up to the order of the floating-point sums.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import tokenizer as tok_mod
from ..data import DataError, Packed, Sampler, build_cache, expand_sources, read_documents, split_documents
from ..models import ModelError
from ..models.hf_io import load_model
from . import distributed
from .args import Args
from .checkpoint import check_same_run, load_checkpoint, save_checkpoint, set_rng_state
from .recipes import make_layout, make_objective, max_positions, new_model

log = logging.getLogger(__name__)
METRICS = "metrics.jsonl"
_FAST_BF16: dict[str, bool] = {}


@dataclass
class Prepared:
    """Everything a run needs before its first step (built without writing into the run folder)."""

    tokenizer: object
    tokenizer_is_new: bool
    model: torch.nn.Module
    objective: object
    train: Packed
    val: Packed
    cache_folder: Path


# ------------------------------------------------------------------ helpers

def default_cache_dir() -> Path:
    return Path(os.environ.get("LMFORGE_HOME", Path.home() / ".lmforge")) / "cache" / "tokens"


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls beat float32 here: CUDA with bf16 support, or a CPU where a quick probe says so."""
    key = str(device)
    if key not in _FAST_BF16:
        if device.type == "cuda":
            _FAST_BF16[key] = torch.cuda.is_bf16_supported()
        else:
            _FAST_BF16[key] = _probe_bf16_speedup() > 1.3
    return _FAST_BF16[key]


def _probe_bf16_speedup(n: int = 512, reps: int = 8) -> float:
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        times[dtype] = time.perf_counter() - t0
    return times[torch.float32] / times[torch.bfloat16]


def use_bf16(args: Args, device: torch.device) -> bool:
    return args.precision == "bf16" or (args.precision == "auto" and fast_bf16(device))


def autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def micro_seed(seed: int, step: int, micro: int) -> int:
    """The torch seed (dropout) of global micro-batch `micro` of step `step`."""
    return int(np.random.SeedSequence([seed, 0x7041, step, micro]).generate_state(1)[0])


# ------------------------------------------------------------------ set-up

def check_corpus(args: Args) -> list[Path]:
    """Read every source once, so bad input stops the run before anything is trained or written."""
    sources = expand_sources(args.data)
    for path in sources:
        for _ in read_documents(path):
            pass
    return sources


def load_or_train_tokenizer(args: Args, sources: list[Path], d: distributed.Dist):
    for folder in (args.tokenizer, args.init, args.out if args.resume else None):
        if folder is not None and tok_mod.has_tokenizer_files(folder):
            return tok_mod.Tokenizer.from_pretrained(folder), False
        if folder is not None and folder in (args.tokenizer, args.init):
            raise ModelError(f"{folder} holds no tokenizer files; pass the model's tokenizer with --tokenizer")
    # A new vocabulary: rank 0 trains it, the others receive the same one.
    text = None
    if d.is_main:
        log.info("training a %s tokenizer (%d tokens) on %d files", args.family, args.vocab_size, len(sources))
        with tempfile.TemporaryDirectory() as tmp:
            # The segments as the pipeline reads them (JSONL text fields, no BOM), one per line.
            corpus = Path(tmp) / "corpus.txt"
            with open(corpus, "w", encoding="utf-8") as f:
                for path in sources:
                    for doc in read_documents(path):
                        f.write("\n".join(doc) + "\n")
            tok = tok_mod.train_tokenizer(args.family, [str(corpus)], args.vocab_size)
        text = (tok.backend.to_str(), tok.special_tokens, tok.additional_special_tokens, tok.options)
    text = distributed.broadcast_object(d, text)
    backend = tok_mod.Backend.from_str(text[0])
    return tok_mod.Tokenizer(backend, args.family, text[1], text[2], text[3]), True


def prepare(args: Args, d: distributed.Dist | None = None) -> Prepared:
    d = d or distributed.Dist()
    sources = check_corpus(args)
    tokenizer, is_new = load_or_train_tokenizer(args, sources, d)
    objective = make_objective(args, tokenizer)
    torch.manual_seed(args.seed)
    if args.init is not None:
        model = load_model(args.init, task=objective.task)
        if model.config.vocab_size < tokenizer.vocab_size:
            raise ModelError(f"{args.init}: the model has {model.config.vocab_size} tokens but the tokenizer "
                             f"{tokenizer.vocab_size}")
    else:
        model = new_model(args, tokenizer, objective.task)
    positions = max_positions(model.config)
    if positions is not None and args.block_size > positions:
        raise ModelError(f"block size {args.block_size} is larger than the {positions} positions of the "
                         f"{args.family} model; use --block-size {positions} or less (or --max-positions)")
    layout = make_layout(args, tokenizer, objective)

    cache_dir = args.cache_dir or default_cache_dir()
    if d.is_main:
        cache = build_cache(sources, tokenizer, cache_dir)
    distributed.barrier(d)
    if not d.is_main:
        cache = build_cache(sources, tokenizer, cache_dir)  # now a cache hit
    train_docs, val_docs = split_documents(cache, args.val_fraction, args.seed)
    train = layout.pack(cache, train_docs, args.seed)
    val = layout.pack(cache, val_docs, args.seed + 1)
    if len(train) == 0:
        raise DataError(f"{', '.join(map(str, args.data))}: the corpus gives no training blocks")
    if args.val_fraction > 0 and len(val) == 0:
        raise DataError(f"{', '.join(map(str, args.data))}: the corpus is too small to hold out validation blocks")
    return Prepared(tokenizer, is_new, model, objective, train, val, cache.folder)


# ------------------------------------------------------------------ evaluation

@torch.no_grad()
def evaluate(model, val: Packed, objective, args: Args, d: distributed.Dist, bf16: bool) -> dict:
    """Validation loss (per predicted token), perplexity and accuracy of the predicted tokens."""
    was_training = model.training
    model.eval()
    n = min(len(val), args.eval_blocks)
    mine = np.arange(n)[d.rank :: d.world_size]
    loss_sum = correct = count = 0.0
    for start in range(0, len(mine), args.micro_batch):
        batch = objective(val.batch(mine[start : start + args.micro_batch]), 0)  # fixed masks: comparable evals
        batch = {k: v.to(d.device) for k, v in batch.items()}
        batch.pop("next_sentence_label", None)
        labels = batch["labels"]  # kept in the batch: T5 builds its decoder inputs from them
        with autocast(d.device, bf16):
            logits = model(**batch).logits
        if getattr(objective, "shift_labels", False):
            logits, labels = logits[:, :-1], labels[:, 1:]
        keep = labels != -100
        logits, labels = logits[keep].float(), labels[keep]
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(-1) == labels).sum().item()
        count += labels.numel()
    loss_sum, correct, count = distributed.all_reduce_sum(d, [loss_sum, correct, count])
    model.train(was_training)
    loss = loss_sum / max(count, 1)
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "val_accuracy": correct / max(count, 1),
            "val_tokens": int(count)}


# ------------------------------------------------------------------ the run

def pretrain(args: Args) -> dict:
    """Run (or resume) a pretraining job; returns the final metrics. The run folder ends up a Hugging Face
    model folder (config.json, model.safetensors, tokenizer, README.md card) that `lmforge.load` reads."""
    d = distributed.init(args.device)
    try:
        return _pretrain(args, d)
    finally:
        distributed.shutdown(d)


def _pretrain(args: Args, d: distributed.Dist) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out
    ckpt = load_checkpoint(out) if args.resume else None
    if args.resume and ckpt is None:
        log.warning("no checkpoint in %s: starting from step 0", out)
    if ckpt is not None:
        check_same_run(ckpt["args"], args.to_dict(), Args.RESUMABLE_CHANGES)
    elif (out / "checkpoint.pt").exists():
        raise ModelError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    p = prepare(args, d)  # all validation happens here, before the run folder is touched
    model = p.model.to(d.device)
    bf16 = use_bf16(args, d.device)
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if p.tokenizer_is_new:
            p.tokenizer.save_pretrained(out)
    optimizer_model = model
    from .optim import make_optimizer, make_scheduler, optimizer_step

    optimizer = make_optimizer(model, args.lr, args.weight_decay, betas=args.betas)
    scheduler = make_scheduler(optimizer, args.warmup, args.steps, args.schedule, args.min_lr_ratio)
    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        start = ckpt["step"]
        if d.is_main:
            _truncate_metrics(out / METRICS, start)
        log.info("resumed from %s at step %d", out / "checkpoint.pt", start)
    elif d.is_main:
        (out / METRICS).unlink(missing_ok=True)
    if d.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model)
    distributed.barrier(d)

    sampler = Sampler(len(p.train), seed=args.seed)
    per_step = args.micro_batch * args.accumulation * d.world_size
    metrics_file = open(out / METRICS, "a") if d.is_main else None
    log_line = lambda rec: metrics_file and (metrics_file.write(json.dumps(rec) + "\n"), metrics_file.flush())  # noqa: E731
    stop = {"now": False}
    old_handler = None
    if d.is_main and _main_thread():  # SIGTERM: finish the step, checkpoint, stop
        old_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    from tqdm import tqdm

    bar = tqdm(total=args.steps, initial=start, disable=not (args.progress and d.is_main), unit="step",
               dynamic_ncols=True)
    window_loss, window_tokens, window_steps, t_window = 0.0, 0, 0, time.perf_counter()
    last_eval: dict = {}
    step = start
    model.train()
    if start == 0 and len(p.val):  # the starting point of the validation curve
        last_eval = {"step": 0, **evaluate(model, p.val, p.objective, args, d, bf16)}
        log_line(last_eval)
    train_kwargs = getattr(p.objective, "train_kwargs", {})
    try:
        for step in range(start, args.steps):
            micro = sampler.micro_batches(step, args.micro_batch, args.accumulation, d.rank, d.world_size)
            step_loss = 0.0
            for j, (index, epochs) in enumerate(micro):
                batch = p.objective(p.train.batch(index), epochs)
                batch = {k: v.to(d.device) for k, v in batch.items()}
                window_tokens += int(batch["attention_mask"].sum())
                torch.manual_seed(micro_seed(args.seed, step, j * d.world_size + d.rank))
                sync = d.enabled and j < len(micro) - 1
                with (model.no_sync() if sync else contextlib.nullcontext()):
                    with autocast(d.device, bf16):
                        loss = model(**batch, **train_kwargs).loss
                    (loss / args.accumulation).backward()
                step_loss += loss.item() / args.accumulation
            lr = optimizer.param_groups[0]["lr"]
            grad_norm = optimizer_step(optimizer, scheduler, optimizer_model.parameters(), args.clip)
            window_loss += step_loss
            window_steps += 1
            done = step + 1

            if done % args.log_every == 0 or done == args.steps:
                loss_sum, tokens = distributed.all_reduce_sum(d, [window_loss, window_tokens])
                elapsed = time.perf_counter() - t_window
                rec = {"step": done, "loss": loss_sum / (window_steps * d.world_size), "lr": lr,
                       "grad_norm": grad_norm, "tokens": int(tokens), "tokens_per_s": tokens / max(elapsed, 1e-9),
                       "blocks_seen": done * per_step}
                log_line(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{rec['tokens_per_s']:,.0f}", refresh=False)
                window_loss, window_tokens, window_steps, t_window = 0.0, 0, 0, time.perf_counter()
            if len(p.val) and (done % args.eval_every == 0 or done == args.steps):
                last_eval = {"step": done, **evaluate(model, p.val, p.objective, args, d, bf16)}
                log_line(last_eval)
                if d.is_main and args.progress:
                    bar.write(f"step {done}: val loss {last_eval['val_loss']:.4f}, ppl {last_eval['val_ppl']:.2f}, "
                              f"accuracy {last_eval['val_accuracy']:.3f}")
            if d.is_main and (done % args.save_every == 0 or done == args.steps or stop["now"]):
                _save(out, model, optimizer, scheduler, done, per_step, args)
            bar.update(1)
            if stop["now"]:
                log.warning("stopped by SIGTERM after step %d; --resume continues from there", done)
                break
    except KeyboardInterrupt:
        if d.is_main and step > start:
            log.warning("interrupted: the last checkpoint holds step %d; --resume continues from it",
                        load_checkpoint(out)["step"])
        raise
    finally:
        bar.close()
        if metrics_file:
            metrics_file.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)

    summary = {"family": args.family, "steps": step + 1 if args.steps > start else start, **last_eval,
               "stopped": stop["now"]}
    if d.is_main and not stop["now"]:
        _finish(out, _unwrap(model), p, args, summary)
    distributed.barrier(d)
    return summary


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _save(out, model, optimizer, scheduler, done, per_step, args):
    save_checkpoint(out, model=_unwrap(model), optimizer=optimizer, scheduler=scheduler, step=done,
                    position=done * per_step, args=args.to_dict())


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records the killed run wrote after its last checkpoint (they will be written again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if rec.get("step", 0) <= step:
            keep.append(line)
    path.write_text("".join(k + "\n" for k in keep))


# ------------------------------------------------------------------ the end of a run

def _finish(out: Path, model, p: Prepared, args: Args, summary: dict) -> None:
    model.save_pretrained(out)
    p.tokenizer.save_pretrained(out)
    records = [json.loads(line) for line in (out / METRICS).read_text().splitlines() if line.strip()]
    plot_losses(records, out / "loss.png", title=f"{args.family} pretraining")
    write_card(out, model, p, args, summary, records)


def plot_losses(records: list[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per predicted token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


OBJECTIVE_NAMES = {
    "bert": "masked LM (15%, 80/10/10, static masks)",
    "roberta": "masked LM (15%, 80/10/10, dynamic masks, full-sentence packing, no NSP)",
    "gpt2": "causal LM",
    "xlnet": "permutation LM (partial prediction K={k}, two-stream attention)",
    "t5": "span corruption (noise density {nd}, mean span {ms})",
}


def write_card(out: Path, model, p: Prepared, args: Args, summary: dict, records: list[dict]) -> None:
    objective = OBJECTIVE_NAMES[args.family].format(k=args.plm_k, nd=args.noise_density,
                                                    ms=args.mean_noise_span_length)
    if args.family == "bert" and args.nsp:
        objective += " + next-sentence prediction"
    if args.family == "roberta" and args.static_masking:
        objective = objective.replace("dynamic", "static")
    if args.family == "bert" and args.static_masking is False:
        objective = objective.replace("static", "dynamic")
    tokens = sum(r.get("tokens", 0) for r in records)
    sources = ", ".join(Path(s).name for s in args.data)
    layers, hidden, heads, ffn = args.dims
    val = (f"{summary['val_loss']:.4f} (perplexity {summary['val_ppl']:.2f}, accuracy of predicted tokens "
           f"{summary['val_accuracy']:.3f})" if "val_loss" in summary else "not measured")
    lines = [
        f"# {args.family} pretrained with lmforge",
        "",
        f"- **objective**: {objective}",
        f"- **data**: {sources}" + (f" — {args.extra['data_note']}" if "data_note" in args.extra else ""),
        f"- **model**: {model.num_parameters():,} parameters ({layers} layers, hidden {hidden}, {heads} heads, "
        f"feed-forward {ffn}), vocabulary {p.tokenizer.vocab_size:,}",
        f"- **training**: {summary.get('steps', args.steps)} steps of {args.micro_batch * args.accumulation} blocks of "
        f"{args.block_size} tokens, lr {args.lr} ({args.schedule}, {args.warmup} warmup), {tokens:,} tokens seen",
        f"- **validation loss**: {val}",
        "",
        "Written by `lmforge pretrain`; `metrics.jsonl` and `loss.png` hold the curves.",
    ]
    if "card_note" in args.extra:
        lines += ["", args.extra["card_note"]]
    (out / "README.md").write_text("\n".join(lines) + "\n")
