"""The knowledge base: documents (plain text or Markdown) split into sentences under their headings,
embedded once at training time, and searched at question time. The answer is extractive, quoted with the
document's name: with a QA reader (a model fine-tuned for extractive QA, `tasks.inference.Predictor`), the
best answer span among the passages around the few most similar sentences; without one (or when it finds
no span), the most similar sentence (with its neighbour when it is short)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

MIN_SIMILARITY = 0.45
"""Below this cosine similarity (MiniLM scale) no sentence is taken as an answer."""
MAX_SENTENCES = 5000
READER_PASSAGES = 3
"""How many of the most similar sentences (each with its neighbours) the reader reads."""

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_MD_NOISE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+|[*_`]{1,3}")


@dataclass
class Passage:
    document: str
    heading: str
    text: str


def split_document(name: str, text: str) -> list[Passage]:
    """Sentences of a document, each with the nearest Markdown heading above it."""
    out, heading, para = [], "", []

    def flush():
        joined = " ".join(para).strip()
        para.clear()
        for sentence in _SENTENCE.split(joined):
            if len(sentence.strip()) > 2:
                out.append(Passage(name, heading, sentence.strip()))

    for line in text.replace("\r\n", "\n").split("\n"):
        stripped = line.strip()
        if stripped.startswith("#"):
            flush()
            heading = stripped.lstrip("#").strip()
        elif not stripped or stripped.startswith(("```", "---", "|")):
            flush()
        else:
            para.append(_MD_NOISE.sub("", stripped))
    flush()
    return out[:MAX_SENTENCES]


@dataclass
class KnowledgeHit:
    document: str
    quote: str
    similarity: float
    span: str | None = None  # the reader's answer, a substring of `quote`


class Reader(Protocol):
    """What the knowledge base needs of a QA model: `Predictor.answer` with lists."""

    def answer(self, question: list[str], context: list[str]) -> list[dict]:
        """One {"text", "score", "start"} per (question, context): the best span and its score."""


class KnowledgeIndex:
    def __init__(self, passages: list[Passage], vectors: np.ndarray):
        self.passages, self.vectors = passages, vectors

    @classmethod
    def build(cls, documents: list[tuple[str, str]], embedder) -> "KnowledgeIndex":
        passages = [p for name, text in documents for p in split_document(name, text)]
        # the heading gives a sentence its topic ("Returns" + "You have 30 days." answers "return window?")
        texts = [f"{p.heading}: {p.text}" if p.heading else p.text for p in passages]
        vectors = embedder.encode(texts) if texts else np.zeros((0, embedder.dim), np.float32)
        return cls(passages, vectors)

    def search(self, query_vec: np.ndarray, min_similarity: float = MIN_SIMILARITY) -> KnowledgeHit | None:
        """The most similar sentence (with its neighbour when short), or None below `min_similarity`."""
        if not self.passages:
            return None
        sims = self.vectors @ query_vec
        best = int(np.argmax(sims))
        if sims[best] < min_similarity:
            return None
        p = self.passages[best]
        quote = p.text
        nxt = self._neighbour(best, 1)
        if len(quote) < 80 and nxt is not None:
            quote = f"{quote} {nxt.text}"
        return KnowledgeHit(p.document, quote, float(sims[best]))

    def answer(self, question: str, query_vec: np.ndarray, reader: Reader | None = None,
               min_similarity: float = MIN_SIMILARITY) -> KnowledgeHit | None:
        """The reader's best span among the passages around the `READER_PASSAGES` most similar sentences,
        quoted with the sentence it lies in; the best sentence when there is no reader or no span."""
        hit = self.search(query_vec, min_similarity)
        if hit is None or reader is None:
            return hit
        sims = self.vectors @ query_vec
        top = [int(i) for i in np.argsort(-sims)[:READER_PASSAGES] if sims[i] >= min_similarity]
        windows = [self._window(i) for i in top]
        answers = reader.answer([question] * len(windows), [" ".join(p.text for p in w) for w in windows])
        k = max(range(len(top)), key=lambda j: answers[j]["score"])
        span = answers[k]["text"].strip()
        if not span:
            return hit
        # quote the sentences of the window that the span overlaps (sentences are joined by one space)
        start, end, offset, quoted = answers[k]["start"], answers[k]["start"] + len(answers[k]["text"]), 0, []
        for p in windows[k]:
            if offset < end and start < offset + len(p.text):
                quoted.append(p.text)
            offset += len(p.text) + 1
        return KnowledgeHit(self.passages[top[k]].document, " ".join(quoted), float(sims[top[k]]), span)

    def _neighbour(self, i: int, step: int) -> Passage | None:
        """The sentence `step` away from sentence i if it is in the same document and section."""
        j = i + step
        if not 0 <= j < len(self.passages):
            return None
        p, q = self.passages[i], self.passages[j]
        return q if (q.document, q.heading) == (p.document, p.heading) else None

    def _window(self, i: int) -> list[Passage]:
        """Sentence i with its neighbours: the reader gets the context a sentence alone may lack."""
        return [p for p in (self._neighbour(i, -1), self.passages[i], self._neighbour(i, 1)) if p is not None]

    # serialisation, as arrays for the matcher's npz
    def arrays(self) -> dict[str, np.ndarray]:
        return {"kb_vectors": self.vectors.astype(np.float32),
                "kb_documents": np.array([p.document for p in self.passages], dtype=np.str_),
                "kb_headings": np.array([p.heading for p in self.passages], dtype=np.str_),
                "kb_texts": np.array([p.text for p in self.passages], dtype=np.str_)}

    @classmethod
    def from_arrays(cls, a) -> "KnowledgeIndex":
        passages = [Passage(str(d), str(h), str(t)) for d, h, t in zip(a["kb_documents"], a["kb_headings"], a["kb_texts"])]
        return cls(passages, a["kb_vectors"])


def format_answer(hit: KnowledgeHit) -> str:
    if hit.span:
        return f'{hit.span} (from "{hit.document}": "{hit.quote}")'
    return f'From "{hit.document}": "{hit.quote}"'
