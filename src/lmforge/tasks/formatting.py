"""How each family meets each kind of task, and examples turned into model inputs.

Modes (the issue's "any family on any task where it makes sense"):

    classify   a head over the encoder: BERT/RoBERTa [CLS], XLNet's last token (<cls>), GPT-2's last real token
    span       start/end logits per token (SQuAD-style extractive QA) for BERT, RoBERTa, XLNet, GPT-2
    text2text  T5 on everything: `sst2 sentence: …` -> `positive`, `question: … context: …` -> the answer
    prompt     GPT-2 reads the input and a cue (`TL;DR:`) and continues with the target; loss on the target only
    causal     GPT-2 language modelling on running text (open generation)
    tag        a tag per word (named entities) for BERT, RoBERTa, XLNet: tagging.py aligns words and pieces
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import ModelError

ENCODERS = ("bert", "roberta", "xlnet")
# (kind, family) -> the modes that make sense, the default first.
MODES: dict[tuple[str, str], tuple[str, ...]] = {}
for _f in (*ENCODERS, "gpt2"):
    MODES["classification", _f] = ("classify",)
    MODES["qa", _f] = ("span",)
for _k in ("classification", "qa", "summarization", "translation"):
    MODES[_k, "t5"] = ("text2text",)
MODES["classification", "t5"] = ("text2text", "classify")  # T5ForSequenceClassification exists too
for _k in ("summarization", "translation"):
    MODES[_k, "gpt2"] = ("prompt",)
MODES["generation", "gpt2"] = ("causal",)
for _f in ENCODERS:
    MODES["ner", _f] = ("tag",)
HEAD = {"classify": "classification", "span": "qa", "text2text": "lm", "prompt": "lm", "causal": "lm",
        "tag": "token_classification"}
VERB = {"classification": "classify text", "qa": "answer questions", "summarization": "summarise",
        "translation": "translate", "generation": "generate text", "ner": "tag named entities"}


def choose_mode(family: str, kind: str, mode: str | None = None) -> str:
    """The mode for a family on a kind of task, or a ModelError saying why the combination does not work."""
    allowed = MODES.get((kind, family))
    if allowed is None:
        if kind == "ner":
            why = (f"lmforge tags named entities with a token-classification head over an encoder (bert, roberta, "
                   f"xlnet); {family} has none")
        elif family in ("bert", "roberta"):
            why = f"{family} is an encoder-only model and cannot {VERB[kind]}; use t5 or gpt2"
        elif family == "xlnet":
            why = (f"lmforge fine-tunes xlnet for classification and qa only; to {VERB[kind]} use t5 or gpt2")
        elif family == "t5":  # generation
            why = "open generation fine-tunes a left-to-right language model on running text; use gpt2 (t5 is text-to-text)"
        else:
            why = f"{family} cannot be fine-tuned to {VERB[kind]}"
        raise ModelError(why)
    if mode is None:
        return allowed[0]
    if mode not in allowed:
        raise ModelError(f"{family} on a {kind} task can use mode {' or '.join(allowed)}, not {mode!r}")
    return mode


# ------------------------------------------------------------------ padding


def pad(rows: list[list[int]], value: int, side: str = "right") -> torch.Tensor:
    T = max(len(r) for r in rows)
    out = [(r + [value] * (T - len(r))) if side == "right" else ([value] * (T - len(r)) + r) for r in rows]
    return torch.tensor(out, dtype=torch.long)


def with_types(tokenizer) -> bool:
    """Whether the family's models take token_type_ids (BERT, XLNet)."""
    from ..tokenizer import TOKEN_TYPES

    return tokenizer.family in TOKEN_TYPES


def pad_id(tokenizer) -> int:
    """GPT-2 has no pad token; its eos pads (masked out), as transformers' recipes do."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


# ------------------------------------------------------------------ classification


@dataclass
class ClassifyCollator:
    tokenizer: object
    max_length: int

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        texts = [it["text"] for it in items]
        pairs = [it["text_pair"] for it in items] if items[0].get("text_pair") is not None else None
        batch = self.tokenizer(texts, pairs, padding=True, truncation=True, max_length=self.max_length)
        if "label_id" in items[0]:
            batch["labels"] = torch.tensor([it["label_id"] for it in items], dtype=torch.long)
        return batch


# ------------------------------------------------------------------ extractive QA


@dataclass
class SpanFeature:
    """One window of (question, context) tokens; `offsets` map context tokens back to characters."""

    example: int
    input_ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int]]
    is_context: list[bool]
    start: int = -1  # answer token span when training
    end: int = -1


def span_features(tokenizer, examples: list[dict], max_length: int, stride: int, train: bool) -> list[SpanFeature]:
    """Question + context windows (the context split with overlap `stride` when too long), as BERT's SQuAD
    recipe does. For training, windows that do not contain the whole answer are dropped.

    A long question leaves less room for the context; the overlap is then cut to half that room, so that each
    window still moves on. A question that leaves no room at all is an error naming the example."""
    features = []
    for i, ex in enumerate(examples):
        windows = tokenizer.encode_windows(ex["question"], ex["context"], max_length=max_length,
                                           stride=min(stride, context_room(tokenizer, ex, max_length) // 2))
        for w in windows:
            is_ctx = [s == 1 for s in w.sequence_ids]
            f = SpanFeature(i, w.ids, w.type_ids, w.offsets, is_ctx)
            if train:
                ans = ex["answers"][0]
                s, e = ans["start"], ans["start"] + len(ans["text"])
                ctx = [j for j, c in enumerate(is_ctx) if c]
                if not ctx or f.offsets[ctx[0]][0] > s or f.offsets[ctx[-1]][1] < e:
                    continue
                f.start = next(j for j in ctx if f.offsets[j][1] > s)
                f.end = max(j for j in ctx if f.offsets[j][0] < e)
            features.append(f)
    return features


def context_room(tokenizer, ex: dict, max_length: int) -> int:
    """Tokens a window has for the context once the question and the special tokens are in."""
    question = len(tokenizer.encode(ex["question"], add_special_tokens=False))
    room = max_length - tokenizer.num_special_tokens(pair=True) - question
    if room < 1:
        where = f"{ex['where']}: " if "where" in ex else ""
        raise ModelError(f"{where}the question takes {question} tokens, which leaves no room for the context in "
                         f"--max-length {max_length}; raise --max-length")
    return room


@dataclass
class SpanCollator:
    tokenizer: object
    with_types: bool

    def __call__(self, feats: list[SpanFeature]) -> dict[str, torch.Tensor]:
        # Right padding for every family: the span head scores each position, and pads are masked.
        batch = {"input_ids": pad([f.input_ids for f in feats], pad_id(self.tokenizer)),
                 "attention_mask": pad([[1] * len(f.input_ids) for f in feats], 0)}
        if self.with_types:
            batch["token_type_ids"] = pad([f.type_ids for f in feats], 0)
        if feats[0].start >= 0:
            batch["labels"] = torch.tensor([[f.start, f.end] for f in feats], dtype=torch.long)
        return batch


def best_span(logits: torch.Tensor, feature: SpanFeature, max_answer_tokens: int = 30) -> tuple[float, int, int]:
    """The best (score, start token, end token) inside the context with start <= end < start + max length."""
    T = len(feature.input_ids)
    start, end = logits[:T, 0].float(), logits[:T, 1].float()
    ok = torch.tensor(feature.is_context)
    scores = start[:, None] + end[None, :]  # (T, T): start i, end j
    i = torch.arange(T)
    valid = ok[:, None] & ok[None, :] & (i[None, :] >= i[:, None]) & (i[None, :] < i[:, None] + max_answer_tokens)
    scores = scores.masked_fill(~valid, float("-inf"))
    flat = int(scores.argmax())
    return float(scores.view(-1)[flat]), flat // T, flat % T


# ------------------------------------------------------------------ tagging


@dataclass
class TagCollator:
    """Word-piece features (tagging.TagFeature) -> a batch; right padding for every family (each position is
    scored and pads are masked), labels -100 on the padding."""

    tokenizer: object
    with_types: bool

    def __call__(self, feats) -> dict[str, torch.Tensor]:
        batch = {"input_ids": pad([f.input_ids for f in feats], pad_id(self.tokenizer)),
                 "attention_mask": pad([[1] * len(f.input_ids) for f in feats], 0)}
        if self.with_types:
            batch["token_type_ids"] = pad([f.type_ids for f in feats], 0)
        if feats[0].labels is not None:
            batch["labels"] = pad([f.labels for f in feats], -100)
        return batch


# ------------------------------------------------------------------ text-to-text and prompts


def truncate(ids: list[int], limit: int, keep_tail: int = 1) -> list[int]:
    """Cut the middle of a too-long sequence, keeping its last `keep_tail` tokens (eos, or GPT-2's cue)."""
    if len(ids) <= limit:
        return ids
    return ids[: limit - keep_tail] + ids[len(ids) - keep_tail:]


@dataclass
class Seq2SeqCollator:
    """T5: encoder inputs and target ids (pads in the targets become -100, so they carry no loss)."""

    tokenizer: object

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        p = pad_id(self.tokenizer)
        ids = [it["input_ids"] for it in items]
        batch = {"input_ids": pad(ids, p), "attention_mask": pad([[1] * len(r) for r in ids], 0)}
        if "target_ids" in items[0]:
            batch["labels"] = pad([it["target_ids"] for it in items], -100)
        return batch


@dataclass
class CausalCollator:
    """GPT-2: prompt + target (+ eos) in one row; labels are -100 over the prompt and the padding."""

    tokenizer: object

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        rows = [it["input_ids"] for it in items]
        labels = [it.get("labels", it["input_ids"]) for it in items]
        return {"input_ids": pad(rows, pad_id(self.tokenizer)), "attention_mask": pad([[1] * len(r) for r in rows], 0),
                "labels": pad(labels, -100)}


def text2text_item(tokenizer, source: str, target: str | None, max_length: int, target_max_length: int) -> dict:
    item = {"input_ids": truncate(tokenizer.encode(source), max_length)}
    if target is not None:
        item["target_ids"] = truncate(tokenizer.encode(target), target_max_length)
    return item


def prompt_item(tokenizer, prompt: str, target: str | None, max_length: int, target_max_length: int,
                cue_tokens: int = 8) -> dict:
    """GPT-2 rows: the prompt (its middle cut when too long, keeping the cue) then ` target<eos>`."""
    target_ids = [] if target is None else tokenizer.encode(" " + target)[: target_max_length - 1] + [tokenizer.eos_token_id]
    prompt_ids = truncate(tokenizer.encode(prompt), max(8, max_length - len(target_ids)), keep_tail=cue_tokens)
    item = {"input_ids": prompt_ids + target_ids, "prompt_ids": prompt_ids}
    if target is not None:
        item["labels"] = [-100] * len(prompt_ids) + target_ids
    return item


def causal_blocks(tokenizer, text: str, block: int) -> list[dict]:
    """Running text as consecutive blocks of `block` tokens (the last partial block kept if it has 2+)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    blocks = [ids[i:i + block] for i in range(0, len(ids), block)]
    return [{"input_ids": b} for b in blocks if len(b) > 1]
