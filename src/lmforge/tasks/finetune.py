"""`lmforge finetune`: any family on any task where the pair makes sense (see formatting.MODES).

Read the task's examples (a benchmark's local copy or the user's file), infer and record the label set,
load the model with the right head, train, save the model + tokenizer + lmforge_task.json, and evaluate.
The optimisation itself is `train_loop`, on the pretraining trainer's optimizer, schedule and step.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models import ModelError
from ..train.checkpoint import CHECKPOINT, check_same_run, load_checkpoint, save_checkpoint, set_rng_state
from ..train.optim import make_optimizer, make_scheduler, optimizer_step
from . import formatting as fm
from . import hub_data
from .evaluate import evaluate
from .inference import Predictor
from .readers import read_task_split, read_user_file, split_names
from .registry import TaskSpec, get_task

log = logging.getLogger(__name__)

_WORD_EMBEDDINGS = {"bert": "embeddings.word", "roberta": "embeddings.word", "gpt2": "transformer.wte",
                    "xlnet": "transformer.word_embedding", "t5": "shared"}
DEFAULT_LR = {"classify": 5e-5, "span": 5e-5, "text2text": 3e-4, "prompt": 5e-5, "causal": 5e-5, "tag": 5e-5}
# (the layer list, what lies below it) per family, for --freeze-layers
_LAYERS = {"bert": ("layers", ("embeddings",)), "roberta": ("layers", ("embeddings",)),
           "xlnet": ("transformer.layer", ("transformer.word_embedding", "transformer.mask_emb")),
           "gpt2": ("transformer.h", ("transformer.wte", "transformer.wpe")), "t5": ("encoder.block", ("shared",))}


@dataclass
class FinetuneArgs:
    model: str
    """A model folder, a packaged model name or a Hub id."""
    task: str
    """A registry task (sst2, ag_news, sms_spam, rte, mrpc, squad, scitldr, multi30k, tinyshakespeare, gutenberg,
    conll2003) or, for your own files, a kind: classification, qa, summarization, translation, generation, ner."""
    out: Path
    """Folder for the fine-tuned model, its tokenizer and lmforge_task.json."""
    train: Path | None = None
    """Your training file (CSV, TSV, JSONL; .txt for generation); default: the task's local copy."""
    validation: Path | None = None
    """Your validation file; default: the task's validation split when it has one."""
    columns: dict[str, str | None] = field(default_factory=dict)
    """Field -> column in your files (text, text_pair, label, question, context, answer, answer_start,
    document, summary, source, target, entities)."""
    data_dir: Path | None = None
    """Where the benchmarks' local copies live (default: $LMFORGE_DATA_DIR, then ../shared/data)."""
    mode: str | None = None
    """Override how the family meets the task (e.g. 'classify' to give T5 a classification head)."""
    epochs: float = 1.0
    max_steps: int | None = None
    """Stop after this many optimiser steps (overrides epochs)."""
    batch_size: int = 16
    lr: float | None = None
    """Peak learning rate; default 5e-5, or 3e-4 for T5 text-to-text."""
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 128
    """Input tokens per example (longer inputs are cut; QA contexts are split into windows)."""
    target_max_length: int = 64
    """Target tokens for text-to-text and prompt modes (also the generation budget when evaluating)."""
    stride: int = 64
    """Overlap, in tokens, between the windows of a long QA context."""
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    freeze_embeddings: bool = False
    """Keep the word embeddings fixed: a faster step on CPU (no gradient for the largest matrix)."""
    freeze_layers: int = 0
    """Keep the embeddings and the lowest N layers fixed (cheaper steps; a fine-tuned model that differs from
    its base only above them, which `lmforge.tasks.delta` can ship as a small difference)."""
    tag_scheme: str = "iob2"
    """ner: the tags the model learns, iob2 (B-, I-) or bioes (B-, I-, E-, S-); any input scheme is converted."""
    seed: int = 0
    evaluate: bool = True
    """Evaluate on the validation split after training."""
    save_every: int = 200
    """Steps between checkpoints (OUT/checkpoint.pt: weights, optimizer, schedule, random state, step); 0: none.
    The checkpoint is deleted once the fine-tuned model is saved."""
    resume: bool = False
    """Continue an interrupted run from OUT/checkpoint.pt; the other arguments must be the same."""

    # Arguments a resumed run may change: they do not touch the training itself.
    RESUMABLE_CHANGES = ("validation", "max_eval_examples", "evaluate", "save_every", "resume")


@dataclass
class FinetuneResult:
    out: Path
    mode: str
    steps: int
    train_examples: int
    train_seconds: float
    final_loss: float
    metrics: dict[str, float] | None
    predictor: Predictor = field(repr=False)


def finetune(args: FinetuneArgs, progress: Callable[[int, int, float], None] | None = None) -> FinetuneResult:
    """Fine-tune, save to `args.out` and (unless args.evaluate is False) score on the validation split.
    `progress(step, total, recent_loss)` is called after every optimiser step."""
    spec = get_task(args.task)
    mode = fm.choose_mode(_family(args.model), spec.kind, args.mode)  # before reading data: fail fast
    resume_from = _checkpoint_to_resume(args)
    train = load_examples(spec, "train", args.train, args.columns, args.data_dir)
    train = _limit(train, args.max_train_examples, args.seed)
    labels = None
    if spec.kind == "ner":
        from .tagging import SCHEMES, tag_names

        if args.tag_scheme not in SCHEMES:
            raise ModelError(f"--tag-scheme must be one of {', '.join(SCHEMES)}, not {args.tag_scheme!r}")
        types = spec.label_names() or infer_types(train)
        if not types:
            raise ModelError("the training data has no entities; a tagger needs at least one entity type")
        if spec.labels is None:
            spec = spec.model_copy(update={"labels": {t: t for t in types}})
        labels = tag_names(types, args.tag_scheme)
    elif spec.kind == "classification":
        labels = spec.label_names() or infer_labels(train)
        if len(labels) < 2:
            raise ModelError(f"the training data has only one label ({labels[0]!r}); a classifier needs two or more")
        if spec.labels is None:  # the user's data: remember the inferred set with the model
            spec = spec.model_copy(update={"labels": {name: name for name in labels}})
    validation = None
    if args.evaluate:
        closed = spec.label_names() if spec.kind == "ner" else labels
        validation = load_validation(spec, args.validation, args.columns, args.data_dir, closed)

    torch.manual_seed(args.seed)  # the new head's initial weights, dropout and anything else random: the seed's
    random.seed(args.seed)
    model, tok = prepare_model(args.model, fm.HEAD[mode], labels)
    predictor = Predictor(model, tok, spec, mode, args.max_length, args.target_max_length, args.stride)

    items, collate = training_items(predictor, train)
    if args.freeze_embeddings:
        model.get_submodule(_WORD_EMBEDDINGS[model.family]).weight.requires_grad_(False)
    if args.freeze_layers:
        freeze_bottom(model, args.freeze_layers)
    t0 = time.perf_counter()
    steps, loss = train_loop(
        model, items, collate, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        lr=args.lr or DEFAULT_LR[mode], weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
        seed=args.seed, progress=progress,
        checkpoints=Checkpoints(Path(args.out), args.save_every, _run_args(args), resume_from),
    )
    seconds = time.perf_counter() - t0
    save(predictor, args.out)
    (Path(args.out) / CHECKPOINT).unlink(missing_ok=True)
    metrics = None
    if validation is not None:
        metrics = evaluate(predictor, _limit(validation, args.max_eval_examples, args.seed)).metrics
    return FinetuneResult(Path(args.out), mode, steps, len(train), seconds, loss, metrics, predictor)


# ------------------------------------------------------------------ data


def load_examples(spec: TaskSpec, split: str, path, columns=None, data_dir=None, labels=None) -> list[dict]:
    """A split from the user's file (or a Hub dataset named hf:REPO[:CONFIG]) when given, else from the task's
    local copy."""
    if path is not None:
        path = hub_data.local_file(path, split)
        return read_user_file(path, spec, columns, labels=labels if spec.labels is None else None)
    if spec.is_user:
        raise ModelError(f"task {spec.name!r} is for your own data: pass --train FILE (CSV, TSV or JSONL)")
    return read_task_split(spec, split, data_dir)


def load_validation(spec, path, columns, data_dir, labels) -> list[dict] | None:
    if path is not None:
        return read_user_file(hub_data.local_file(path, "validation"), spec, columns, labels=labels)
    if spec.is_user:
        return None
    names = split_names(spec)
    split = "validation" if "validation" in names else ("test" if "test" in names else None)
    return read_task_split(spec, split, data_dir) if split else None


def infer_labels(examples: list[dict]) -> list[str]:
    """The label set of the training data, in a stable order (numbers by value, then text)."""
    found = {ex["label"] for ex in examples}

    def key(label: str):
        try:
            return (0, float(label), label)
        except ValueError:
            return (1, 0.0, label)

    return sorted(found, key=key)


def infer_types(examples: list[dict]) -> list[str]:
    """The entity types of tagged training data, most frequent first (ties by name)."""
    from collections import Counter

    counts = Counter(e["type"] for ex in examples for e in ex["entities"])
    return sorted(counts, key=lambda t: (-counts[t], t))


def freeze_bottom(model, n: int) -> None:
    """No gradients for the embeddings and the lowest `n` layers of the backbone."""
    layers_name, below = _LAYERS[model.family]
    layers = model.get_submodule(layers_name)
    if not 0 < n <= len(layers):
        raise ModelError(f"--freeze-layers {n}: the model has {len(layers)} layers")
    for name, p in model.named_parameters():
        if any(name == b or name.startswith(b + ".") for b in below):
            p.requires_grad_(False)
    for layer in list(layers)[:n]:
        layer.requires_grad_(False)


def _limit(examples, n, seed):
    if n is None or n >= len(examples):
        return examples
    rng = random.Random(seed)
    return [examples[i] for i in sorted(rng.sample(range(len(examples)), n))]


# ------------------------------------------------------------------ model


def _family(path) -> str:
    from ..hub import resolve
    from ..models.hf_io import read_config

    return read_config(resolve(path))["model_type"]


def prepare_model(path, head: str, labels: list[str] | None):
    """The checkpoint with the head for `head`; a classification head sized and named by `labels`."""
    from ..hub import load

    model, tok = load(path, task=head)
    if tok is None:
        raise ModelError(f"{path} has no tokenizer files; fine-tuning needs the model's tokenizer")
    if head in ("classification", "token_classification") and labels is not None:
        want = dict(enumerate(labels))
        if model.config.id2label != want:
            model = with_labels(model, want)
    if model.family == "gpt2" and model.config.pad_token_id is None:
        model.config.pad_token_id = tok.eos_token_id  # so a saved classifier pools correctly in transformers too
    return model, tok


def with_labels(model, id2label: dict[int, str]):
    """The same model with a classification head for a new label set: every tensor whose shape still fits is
    kept (the backbone, BERT's pooler, RoBERTa's dense layer); the output projection starts afresh."""
    config = dataclasses.replace(model.config, id2label=id2label)
    new = type(model)(config, model.task).to(next(model.parameters()).dtype)
    target = new.state_dict()
    keep = {k: v for k, v in model.state_dict().items() if k in target and target[k].shape == v.shape}
    fresh = sorted(set(target) - set(keep))
    if any(not k.startswith("head.") for k in fresh):
        raise RuntimeError(f"re-heading {model.family} would reinitialise backbone tensors: {fresh}")
    target.update(keep)
    new.load_state_dict(target)  # strict: every key is filled, kept or fresh
    log.info("new classification head for %d labels: %s", len(id2label), ", ".join(fresh))
    return new.eval()


def training_items(p: Predictor, examples: list[dict]) -> tuple[list, Callable]:
    """Examples -> the items the mode trains on, and the collate function that batches them."""
    tok, mode, spec = p.tokenizer, p.mode, p.task
    if mode == "classify":
        index = {name: i for i, name in p.model.config.id2label.items()}
        items = [{"text": ex["text"], "text_pair": ex.get("text_pair"), "label_id": index[ex["label"]]}
                 for ex in examples]
        return items, fm.ClassifyCollator(tok, p.max_length)
    if mode == "tag":
        from .tagging import features

        index = {name: i for i, name in p.model.config.id2label.items()}
        feats = features(tok, examples, p.max_length, index, p.tag_scheme)
        return feats, fm.TagCollator(tok, fm.with_types(tok))
    if mode == "span":
        feats = fm.span_features(tok, examples, p.max_length, p.stride, train=True)
        if not feats:
            raise ModelError(f"no training window holds its whole answer; raise --max-length (now {p.max_length})")
        return feats, fm.SpanCollator(tok, fm.with_types(tok))
    if mode == "causal":
        items = [b for ex in examples for b in fm.causal_blocks(tok, ex["text"], p.max_length)]
        if not items:
            raise ModelError("the training text is too short to make a single block of two tokens")
        return items, fm.CausalCollator(tok)
    if mode == "text2text":
        items = [fm.text2text_item(tok, spec.text_input(ex), target_of(spec, ex), p.max_length, p.target_max_length)
                 for ex in examples]
        return items, fm.Seq2SeqCollator(tok)
    items = [fm.prompt_item(tok, spec.prompt(ex), target_of(spec, ex), p.max_length, p.target_max_length)
             for ex in examples]
    return items, fm.CausalCollator(tok)


def target_of(spec: TaskSpec, ex: dict) -> str:
    """What a text-to-text or prompt model must write for an example."""
    return {"classification": lambda: ex["label"], "qa": lambda: ex["answers"][0]["text"],
            "summarization": lambda: ex["summary"], "translation": lambda: ex["target"]}[spec.kind]()


def save(p: Predictor, out) -> None:
    out = Path(out)
    p.model.save_pretrained(out)
    p.tokenizer.save_pretrained(out)
    p.save_meta(out)


# ------------------------------------------------------------------ checkpoints


@dataclass
class Checkpoints:
    """Where and how often `train_loop` saves, what a checkpoint records of the run, and the one it resumes from."""
    folder: Path
    every: int
    run_args: dict
    resume_from: dict | None = None


def _run_args(args: FinetuneArgs) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(args).items()
            if k not in FinetuneArgs.RESUMABLE_CHANGES}


def _checkpoint_to_resume(args: FinetuneArgs) -> dict | None:
    """The checkpoint `--resume` continues from, after checking it belongs to this run; without `--resume`, refuse
    to start over a run that was interrupted (its checkpoint would be overwritten)."""
    path = Path(args.out) / CHECKPOINT
    if not args.resume:
        if path.is_file():
            raise ModelError(f"{args.out} holds an interrupted fine-tuning run ({path}); pass --resume to continue "
                             "it, or choose another --out")
        return None
    if not path.is_file():
        raise ModelError(f"nothing to resume: {path} not found (a finished run deletes its checkpoint)")
    try:
        ckpt = load_checkpoint(args.out)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: say which, not a pickle traceback
        raise ModelError(f"could not read the checkpoint {path}: {str(e).splitlines()[0] if str(e) else e!r}") from None
    check_same_run(ckpt["args"], _run_args(args))
    return ckpt


# ------------------------------------------------------------------ the loop


def train_loop(model, items: list, collate: Callable, *, epochs: float, max_steps: int | None, batch_size: int,
               lr: float, weight_decay: float, warmup_ratio: float, seed: int,
               progress: Callable[[int, int, float], None] | None = None, clip: float = 1.0,
               checkpoints: Checkpoints | None = None) -> tuple[int, float]:
    """Shuffled, length-grouped batches through the pretraining trainer's optimizer, schedule (linear warmup
    and decay) and step (lmforge.train.optim). Returns the number of steps and the mean loss of the last 20.
    Not lmforge.train's loop itself: that one is built around packed blocks, objectives, exact replay and
    distributed ranks; a fine-tuning run is minutes long and its batches are examples of different lengths.
    A resumed run replays the batch order up to its checkpoint and restores the random state, so it ends with
    the weights the uninterrupted run would have."""
    total = max_steps or max(1, round(epochs * math.ceil(len(items) / batch_size)))
    # Fused AdamW: on CPU the per-tensor loop would be a fifth of a MiniLM fine-tuning step.
    opt = make_optimizer(model, lr, weight_decay, fused=True)
    sched = make_scheduler(opt, int(total * warmup_ratio), total, schedule="linear")
    params = [p for p in model.parameters() if p.requires_grad]
    device = model.device
    start, recent = 0, deque(maxlen=20)
    ckpt = checkpoints.resume_from if checkpoints else None
    if ckpt:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start = ckpt["step"]
        recent.extend(ckpt["recent"])
        set_rng_state(ckpt["rng"])
        log.info("resumed from step %d of %d", start, total)
    batches = itertools.islice(_batch_stream(items, batch_size, torch.Generator().manual_seed(seed)), start, total)
    model.train()
    for step, idx in enumerate(batches, start + 1):
        batch = collate([items[j] for j in idx])
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        optimizer_step(opt, sched, params, clip)
        recent.append(loss.item())
        if progress is not None:
            progress(step, total, sum(recent) / len(recent))
        if step % 50 == 0:
            log.info("step %d/%d loss %.4f", step, total, sum(recent) / len(recent))
        if checkpoints and checkpoints.every and step % checkpoints.every == 0 and step < total:
            save_checkpoint(checkpoints.folder, model=model, optimizer=opt, scheduler=sched, step=step,
                            position=step, args=checkpoints.run_args, extra={"recent": list(recent)})
    model.eval()
    return total, sum(recent) / max(len(recent), 1)


def _batch_stream(items: list, batch_size: int, g: torch.Generator):
    """Epoch after epoch of `_batches`: the whole run's batch order, which a resumed run replays."""
    if not items:
        raise ModelError("no training examples to fine-tune on")
    while True:
        yield from _batches(items, batch_size, g)


def _batches(items: list, batch_size: int, g: torch.Generator, pool: int = 50) -> list[list[int]]:
    """Shuffled batches of similar length (transformers' `group_by_length`): shuffle, sort each pool of
    `pool` batches by length, cut into batches, shuffle the batches. Less padding, the same data per epoch."""
    order = torch.randperm(len(items), generator=g).tolist()
    size = pool * batch_size
    batches = []
    for start in range(0, len(order), size):
        chunk = sorted(order[start:start + size], key=lambda j: _length(items[j]), reverse=True)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def _length(item) -> int:
    if not isinstance(item, dict):  # SpanFeature, TagFeature
        return len(item.input_ids)
    if "input_ids" in item:
        return len(item["input_ids"])
    return len(item["text"]) + len(item.get("text_pair") or "")  # characters: a proxy before tokenising
