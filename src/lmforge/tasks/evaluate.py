"""`lmforge eval`: a model's standard metric on a task's split, with the predictions kept for inspection."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..evaluation.metrics import compute, perplexity
from ..models import ModelError
from . import formatting as fm
from .inference import TASK_FILE, Predictor
from .registry import get_task

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    task: str
    split: str
    examples: int
    metrics: dict[str, float]
    seconds: float
    predictions: list[dict] = field(default_factory=list, repr=False)

    def to_json(self, model: str | None = None) -> dict:
        d = asdict(self)
        d.pop("predictions")
        return {"model": model, **d}


def evaluate(p: Predictor, examples: list[dict], split: str = "validation") -> EvalResult:
    """Predict every example and score the predictions with the task's metrics."""
    if not examples:
        raise ModelError(f"the {split} split has no examples to evaluate")
    spec = p.task
    t0 = time.perf_counter()
    if p.mode == "causal":
        return _perplexity(p, examples, split, t0)
    if "perplexity" in spec.metrics:
        raise ModelError(f"{spec.name} is scored by perplexity, which needs a gpt2 language model")
    preds = p.predict(examples)
    if spec.kind == "ner":
        return _entities(p, examples, preds, split, t0)
    if spec.kind == "classification":
        got, refs = [x["label"] for x in preds], [ex["label"] for ex in examples]
    elif spec.kind == "qa":
        got, refs = [x["text"] for x in preds], [[a["text"] for a in ex["answers"]] for ex in examples]
    else:
        got, refs = [x["text"] for x in preds], [ex["references"] for ex in examples]
    metrics = compute(spec.metrics, got, refs, positive=spec.positive_label)
    records = []
    for ex, pred, ref in zip(examples, preds, refs):
        shown = {k: v for k, v in ex.items() if k not in ("answers", "references", "label", "summary", "target")}
        records.append({**shown, "prediction": pred.get("label", pred.get("text")), "reference": ref,
                        **({"score": pred["score"]} if pred.get("score") is not None else {})})
    return EvalResult(spec.name, split, len(examples), metrics, time.perf_counter() - t0, records)


def _entities(p: Predictor, examples, preds, split, t0) -> EvalResult:
    """Entity-level P/R/F1 by seqeval (strict) in the model's scheme; both sides converted to it."""
    from ..evaluation.metrics import entity_scores
    from .tagging import convert

    scheme = p.tag_scheme
    got = [convert(x["tags"], scheme) for x in preds]
    refs = [convert(ex["tags"], scheme) for ex in examples]
    metrics = entity_scores(got, refs, scheme)
    records = [{"text": ex["text"], "where": ex.get("where"), "prediction": x["entities"],
                "reference": ex["entities"]} for ex, x in zip(examples, preds)]
    return EvalResult(p.task.name, split, len(examples), metrics, time.perf_counter() - t0, records)


@torch.no_grad()
def _perplexity(p: Predictor, examples, split, t0) -> EvalResult:
    blocks = [b for ex in examples for b in fm.causal_blocks(p.tokenizer, ex["text"], p.max_length)]
    if not blocks:
        raise ModelError(f"the {split} text is too short to score")
    collate = fm.CausalCollator(p.tokenizer)
    total, count = 0.0, 0
    p.model.eval()
    for i in range(0, len(blocks), p.batch_size):
        batch = collate(blocks[i:i + p.batch_size])
        n = int((batch["labels"][:, 1:] != -100).sum())  # GPT-2 shifts: token t predicts t+1
        loss = p.model(**{k: v.to(p.model.device) for k, v in batch.items()}).loss
        total, count = total + float(loss) * n, count + n
    metrics = {"perplexity": perplexity(total, count), "loss": total / count, "tokens": count}
    return EvalResult(p.task.name, split, len(blocks), metrics, time.perf_counter() - t0)


def open_predictor(model: str, task: str | None = None, mode: str | None = None, **options) -> Predictor:
    """A Predictor for evaluation: a fine-tuned folder (with lmforge_task.json) as it was trained, or any
    checkpoint for a named task (its head must fit, e.g. a GPT-2 LM for perplexity, a classifier whose
    id2label names are the task's labels)."""
    from ..hub import load, resolve
    from ..models.hf_io import read_config

    folder = resolve(model)
    if (Path(folder) / TASK_FILE).is_file():
        p = Predictor.load(folder, **options)
        if task is not None:
            asked = get_task(task)
            if asked.kind != p.task.kind:
                raise ModelError(f"{model} was fine-tuned for {p.task.kind} ({p.task.name}); it cannot be "
                                 f"evaluated on {asked.name}, a {asked.kind} task")
            if not asked.is_user:  # score on the named benchmark, with the model's own labels and formats
                if asked.kind == "classification" and set(asked.label_names()) != set(p.task.label_names()):
                    raise ModelError(f"{model} predicts {', '.join(p.task.label_names())} but {asked.name} has "
                                     f"labels {', '.join(asked.label_names())}")
                p.task = p.task.model_copy(update={"name": asked.name, "data": asked.data, "fields": asked.fields,
                                                    "metrics": asked.metrics, "positive_label": asked.positive_label})
        return p
    if task is None:
        raise ModelError(f"{model} has no {TASK_FILE} (it was not fine-tuned by lmforge); pass --task")
    spec = get_task(task)
    family = read_config(folder)["model_type"]
    mode = fm.choose_mode(family, spec.kind, mode)
    m, tok = load(folder, task=fm.HEAD[mode])
    if tok is None:
        raise ModelError(f"{model} has no tokenizer files, so it cannot read text")
    if mode == "classify":
        names = [m.config.id2label[i] for i in sorted(m.config.id2label)]
        if spec.labels is not None and set(names) != set(spec.label_names()):
            raise ModelError(f"{model} has labels {', '.join(names)} but {spec.name} needs "
                             f"{', '.join(spec.label_names())}; fine-tune it with `lmforge finetune` first")
    return Predictor(m, tok, spec, mode, **options)


def write_outputs(result: EvalResult, model: str, output: Path | None, predictions: Path | None) -> None:
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result.to_json(model), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if predictions is not None:
        predictions.parent.mkdir(parents=True, exist_ok=True)
        with open(predictions, "w", encoding="utf-8") as f:
            for rec in result.predictions:
                f.write(json.dumps(rec, ensure_ascii=False, default=_jsonable) + "\n")


def _jsonable(x):
    if isinstance(x, float) and math.isinf(x):
        return None
    return str(x)
