"""Inference helpers for fine-tuned models, the ones the server and studio call:

    p = Predictor.load("out/sst2-bert")
    p.classify(["a gripping film", "dull"])        -> [{"label": "positive", "score": 0.97}, …]
    p.answer("Who wrote it?", "It was written by Ann.") -> {"text": "Ann", "score": …, "start": 18}
    p.summarize([...]); p.translate([...])
    p.tag("Ann Lee flew to Paris.")  -> [{"type": "PER", "start": 0, "end": 7, "text": "Ann Lee", "score": …}, …]

Everything runs in batches of `batch_size`: encoder heads in one forward pass per batch, text-to-text (T5)
and prompt (GPT-2) outputs decoded greedily together by `lmforge.generate.Batcher`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models import ModelError
from . import formatting as fm
from .registry import TaskSpec

TASK_FILE = "lmforge_task.json"  # written next to config.json by `finetune`


@dataclass
class Predictor:
    model: object
    tokenizer: object
    task: TaskSpec
    mode: str
    max_length: int = 256
    target_max_length: int = 64
    stride: int = 64
    batch_size: int = 32

    def __post_init__(self):
        # Never feed more tokens than the model has positions for (BERT/RoBERTa/GPT-2; XLNet and T5 are relative).
        c = self.model.config
        positions = getattr(c, "n_positions", None) or getattr(c, "max_position_embeddings", None)
        if positions:
            positions -= 2 if self.model.family == "roberta" else 0  # RoBERTa's positions start after padding_idx
            self.max_length = min(self.max_length, positions)

    @classmethod
    def load(cls, path, **overrides) -> Predictor:
        """A fine-tuned folder: the model, its tokenizer and the task it was trained for (lmforge_task.json)."""
        from ..hub import load, resolve

        folder = resolve(path)
        meta_path = Path(folder) / TASK_FILE
        if not meta_path.is_file():
            raise ModelError(f"{folder} has no {TASK_FILE}; it was not written by `lmforge finetune`, so pass --task")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        model, tok = load(folder)
        if tok is None:
            raise ModelError(f"{folder} has no tokenizer files, so it cannot read text")
        task = TaskSpec(**meta["task"])
        opts = {k: meta[k] for k in ("max_length", "target_max_length", "stride") if k in meta}
        return cls(model, tok, task, meta["mode"], **{**opts, **overrides})

    def save_meta(self, folder) -> None:
        meta = {"task": self.task.model_dump(mode="json"), "mode": self.mode, "max_length": self.max_length,
                "target_max_length": self.target_max_length, "stride": self.stride}
        (Path(folder) / TASK_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    # ------------------------------------------------------------ the helpers

    def classify(self, texts, text_pairs=None) -> list[dict]:
        """One {"label", "score"} per text (score: the softmax probability; None for text-to-text)."""
        self._need("classification")
        texts, pairs = _as_list(texts), None if text_pairs is None else _as_list(text_pairs)
        examples = [{"text": t, "text_pair": None if pairs is None else pairs[i]} for i, t in enumerate(texts)]
        return self.predict(examples)

    def answer(self, question, context):
        """The answer span (extractive models) or generated answer (T5): {"text", "score", "start"}.
        Takes one question and context, or two lists of the same length."""
        self._need("qa")
        single = isinstance(question, str)
        qs, cs = _as_list(question), _as_list(context)
        if len(qs) != len(cs):
            raise ValueError(f"{len(qs)} questions but {len(cs)} contexts")
        out = self.predict([{"question": q, "context": c} for q, c in zip(qs, cs)])
        return out[0] if single else out

    @property
    def tag_scheme(self) -> str:
        """ner: the scheme of the model's tags (iob2 or bioes), read from its label names."""
        from .tagging import scheme_of

        return scheme_of(self.model.config.id2label.values())

    def tag(self, texts):
        """Named entities of raw text with character offsets: one list of {"type", "start", "end", "text",
        "score"} per text (score: the lowest word-tag probability inside the entity). Takes a text or a list."""
        from .tagging import words_of

        self._need("ner")
        single = isinstance(texts, str)
        examples = [{"text": t, "offsets": words_of(t)} for t in _as_list(texts)]
        out = [p["entities"] for p in self.predict(examples)]
        return out[0] if single else out

    def summarize(self, texts):
        self._need("summarization")
        single = isinstance(texts, str)
        out = [p["text"] for p in self.predict([{"document": t} for t in _as_list(texts)])]
        return out[0] if single else out

    def translate(self, texts):
        self._need("translation")
        single = isinstance(texts, str)
        out = [p["text"] for p in self.predict([{"source": t} for t in _as_list(texts)])]
        return out[0] if single else out

    # ------------------------------------------------------------ by mode

    @torch.no_grad()
    def predict(self, examples: list[dict]) -> list[dict]:
        """Predictions for examples of the task's kind: {"label", "score"} or {"text", …}."""
        self.model.eval()
        if self.mode == "classify":
            return self._classify(examples)
        if self.mode == "span":
            return self._span(examples)
        if self.mode == "tag":
            return self._tag(examples)
        if self.mode in ("text2text", "prompt"):
            texts = self._generate(examples)
            if self.task.kind == "classification":
                return [{"label": t, "score": None} for t in texts]
            return [{"text": t} for t in texts]
        raise ModelError(f"mode {self.mode!r} makes no predictions; evaluate it by perplexity")

    def _classify(self, examples):
        collate = fm.ClassifyCollator(self.tokenizer, self.max_length)
        id2label = self.model.config.id2label
        # Batches of similar length (longest first), so that each is padded little; answers in input order.
        order = sorted(range(len(examples)), key=lambda i: -_chars(examples[i]))
        out = [None] * len(examples)
        for i in range(0, len(order), self.batch_size):
            chunk = order[i:i + self.batch_size]
            batch = collate([examples[j] for j in chunk])
            best = self.model(**_to(batch, self.model.device)).logits.float().softmax(-1).max(-1)
            for j, p, k in zip(chunk, best.values, best.indices):
                out[j] = {"label": id2label[int(k)], "score": float(p)}
        return out

    def _span(self, examples):
        feats = fm.span_features(self.tokenizer, examples, self.max_length, self.stride, train=False)
        collate = fm.SpanCollator(self.tokenizer, fm.with_types(self.tokenizer))
        best: dict[int, tuple[float, int, int]] = {}
        for i in range(0, len(feats), self.batch_size):
            chunk = feats[i:i + self.batch_size]
            logits = self.model(**_to(collate(chunk), self.model.device)).logits.cpu()  # (B, T, 2)
            for f, lg in zip(chunk, logits):
                score, s, e = fm.best_span(lg, f)
                if f.example not in best or score > best[f.example][0]:
                    best[f.example] = (score, f.offsets[s][0], f.offsets[e][1])
        out = []
        for i, ex in enumerate(examples):
            score, a, b = best.get(i, (float("-inf"), 0, 0))
            # Byte-level BPE (GPT-2, RoBERTa) counts a word's leading space into its token's offsets.
            span = ex["context"][a:b]
            out.append({"text": span.strip(), "score": score, "start": a + len(span) - len(span.lstrip())})
        return out

    def _tag(self, examples):
        """{"tags" (IOB2, one per word), "entities"} per example ({"text", "offsets"} of its words)."""
        from . import tagging

        feats = tagging.features(self.tokenizer, examples, self.max_length)
        collate = fm.TagCollator(self.tokenizer, fm.with_types(self.tokenizer))
        order = sorted(range(len(feats)), key=lambda i: -len(feats[i].input_ids))
        per_example: dict[int, list] = {}
        id2label = self.model.config.id2label
        for i in range(0, len(order), self.batch_size):
            chunk = [feats[j] for j in order[i:i + self.batch_size]]
            logits = self.model(**_to(collate(chunk), self.model.device)).logits.cpu()  # (B, T, C)
            for f, lg in zip(chunk, logits):
                per_example.setdefault(f.example, []).append((f, lg[:len(f.input_ids)]))
        out = []
        for i, ex in enumerate(examples):
            tags, scores = tagging.decode(per_example.get(i, []), len(ex["offsets"]), id2label)
            tags = tagging.convert(tags, "iob2")  # lenient decoding: every sequence valid
            out.append({"tags": tags, "entities": tagging.entities(ex["text"], ex["offsets"], tags, scores)})
        return out

    def _generate(self, examples: list[dict]) -> list[str]:
        """Greedy outputs for many inputs at once through lmforge.generate's Batcher (T5: the input;
        GPT-2: the prompt, stopping at the end of the line)."""
        from ..generate import Batcher, SamplingParams, context_length

        tok, out = self.tokenizer, []
        if self.mode == "text2text":
            prompts = [fm.text2text_item(tok, self.task.text_input(ex), None, self.max_length, 0)["input_ids"]
                       for ex in examples]
            stop = []
        else:  # the prompt and its continuation must fit GPT-2's positions
            limit = min(self.max_length, context_length(self.model) - self.target_max_length)
            prompts = [fm.prompt_item(tok, self.task.prompt(ex), None, limit, 0)["input_ids"] for ex in examples]
            stop = ["\n"]
        params = SamplingParams(max_tokens=self.target_max_length, temperature=0, stop=stop)
        for i in range(0, len(prompts), self.batch_size):
            batcher = Batcher(self.model, tok)
            chunk = prompts[i:i + self.batch_size]
            for j, ids in enumerate(chunk):
                batcher.add(str(j), ids, params)
            texts = [""] * len(chunk)
            while batcher.has_work:
                for step in batcher.step():
                    texts[int(step.request_id)] += step.deltas[0].text
            out += [t.strip() for t in texts]
        return out

    def _need(self, kind: str) -> None:
        if self.task.kind != kind:
            raise ModelError(f"this model was fine-tuned for {self.task.kind} ({self.task.name}), not {kind}")


def _chars(example: dict) -> int:
    return len(example["text"]) + len(example.get("text_pair") or "")


def _as_list(x) -> list[str]:
    return [x] if isinstance(x, str) else list(x)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}
