"""The knowledge base: documents (plain text or Markdown) split into sentences under their headings,
embedded once at training time, and searched at question time. The answer is extractive: the best
sentence (with its neighbour when it is short), quoted with the document's name."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

MIN_SIMILARITY = 0.45
"""Below this cosine similarity (MiniLM scale) no sentence is taken as an answer."""
MAX_SENTENCES = 5000

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
        if not self.passages:
            return None
        sims = self.vectors @ query_vec
        best = int(np.argmax(sims))
        if sims[best] < min_similarity:
            return None
        p = self.passages[best]
        quote = p.text
        nxt = self.passages[best + 1] if best + 1 < len(self.passages) else None
        if len(quote) < 80 and nxt is not None and nxt.document == p.document and nxt.heading == p.heading:
            quote = f"{quote} {nxt.text}"
        return KnowledgeHit(p.document, quote, float(sims[best]))

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
    return f'From "{hit.document}": "{hit.quote}"'
