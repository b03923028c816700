"""The intent matcher a bot's Train button builds, over sentence embeddings of its example questions.

Two kinds, picked by how many examples there are:
* `nearest` — the intent of the most similar example (cosine similarity); confidence = that similarity.
* `head` (at least `HEAD_MIN_EXAMPLES` per intent on average, and two intents) — a cosine-softmax head
  trained on the embeddings, averaged with a lexical model (logistic regression on TF-IDF word and
  character n-grams, which catches the product names and rare words embeddings blur); the confidence
  blends the averaged probability with the similarity of the nearest example of the predicted intent.
  On CLINC150 this raises in-scope accuracy from 0.871 to about 0.95 and separates out-of-scope
  questions better (docs/results.md, benchmarks/bots.py).

Optionally (`tune_epochs`, a bot setting) MiniLM itself is first fine-tuned on the examples (bots/tuning.py)
and the matcher keeps that encoder: its questions are then embedded with it.

A matcher serialises to one npz blob (no pickle) stored with the bot, so any server process can load it."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .tuning import encoder_arrays, encoder_from_arrays, tune

HEAD_MIN_EXAMPLES = 3.0
"""Average examples per intent needed before a head is trained (below it, nearest examples do better)."""


class Lexical:
    """TF-IDF (word 1-2-grams and character 2-4-grams within words) + multinomial logistic regression."""

    def __init__(self, word_vocab, word_idf, char_vocab, char_idf, coef, intercept):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.arrays_ = dict(lex_word_vocab=np.asarray(word_vocab, dtype=np.str_), lex_word_idf=word_idf,
                            lex_char_vocab=np.asarray(char_vocab, dtype=np.str_), lex_char_idf=char_idf,
                            lex_coef=coef.astype(np.float32), lex_intercept=intercept.astype(np.float32))
        self.word = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2),
                                    vocabulary={str(t): i for i, t in enumerate(word_vocab)})
        self.word.idf_ = word_idf
        self.char = TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 4),
                                    vocabulary={str(t): i for i, t in enumerate(char_vocab)})
        self.char.idf_ = char_idf
        self.coef, self.intercept = coef, intercept

    @staticmethod
    def _vocab(vec) -> np.ndarray:
        return np.array(sorted(vec.vocabulary_, key=vec.vocabulary_.get), dtype=np.str_)

    @classmethod
    def train(cls, texts: list[str], labels: np.ndarray, C: float = 20.0) -> "Lexical":
        from scipy import sparse
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        min_df = 2 if len(texts) >= 500 else 1  # rare n-grams are noise in big bots, signal in small ones
        word = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)).fit(texts)
        char = TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 4), min_df=min_df).fit(texts)
        x = sparse.hstack([word.transform(texts), char.transform(texts)]).tocsr()
        lr = LogisticRegression(C=C, max_iter=300).fit(x, labels)
        coef, intercept = lr.coef_, lr.intercept_
        if coef.shape[0] == 1:  # two classes: sklearn keeps one row; make it a softmax over both
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        return cls(cls._vocab(word), word.idf_, cls._vocab(char), char.idf_, coef, intercept)

    def proba(self, texts: list[str]) -> np.ndarray:
        from scipy import sparse

        x = sparse.hstack([self.word.transform(texts), self.char.transform(texts)]).tocsr()
        return _softmax(np.asarray(x @ self.coef.T) + self.intercept)

    @classmethod
    def from_arrays(cls, a) -> "Lexical":
        return cls(a["lex_word_vocab"], a["lex_word_idf"], a["lex_char_vocab"], a["lex_char_idf"],
                   a["lex_coef"], a["lex_intercept"])


@dataclass
class Match:
    intent: str | None
    confidence: float
    example: str | None = None


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def train_head(x: np.ndarray, y: np.ndarray, n_classes: int, epochs: int = 300, lr: float = 0.5,
               weight_decay: float = 1e-4, scale: float = 16.0,
               progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression on L2-normalised embeddings, full-batch gradient descent with Adam (numpy only,
    deterministic). Logits are `scale * (x @ W.T) + b` with unit-norm rows of W kept by renormalising,
    a cosine classifier (as in normalised-softmax face recognition), so logits stay comparable across bots."""
    rng = np.random.default_rng(0)
    d = x.shape[1]
    w = np.zeros((n_classes, d), x.dtype)
    for c in range(n_classes):  # start from the class centroids: training then only refines them
        members = x[y == c]
        w[c] = members.mean(0) if len(members) else rng.normal(size=d)
    w /= np.linalg.norm(w, axis=1, keepdims=True) + 1e-12
    b = np.zeros(n_classes, x.dtype)
    onehot = np.eye(n_classes, dtype=x.dtype)[y]
    m_w, v_w, m_b, v_b = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    lr_t = lr / scale
    for t in range(1, epochs + 1):
        p = _softmax(scale * x @ w.T + b)
        g = (p - onehot) / len(x)  # d loss / d logits
        gw = scale * g.T @ x + weight_decay * w
        gb = g.sum(0)
        m_w = beta1 * m_w + (1 - beta1) * gw
        v_w = beta2 * v_w + (1 - beta2) * gw ** 2
        m_b = beta1 * m_b + (1 - beta1) * gb
        v_b = beta2 * v_b + (1 - beta2) * gb ** 2
        w -= lr_t * (m_w / (1 - beta1 ** t)) / (np.sqrt(v_w / (1 - beta2 ** t)) + eps)
        b -= lr_t * (m_b / (1 - beta1 ** t)) / (np.sqrt(v_b / (1 - beta2 ** t)) + eps)
        w /= np.linalg.norm(w, axis=1, keepdims=True) + 1e-12
        if progress is not None and t % 20 == 0:
            progress(t / epochs)
    return w.astype(np.float32), b.astype(np.float32)


class Matcher:
    def __init__(self, intents: list[str], vectors: np.ndarray, labels: np.ndarray, examples: list[str],
                 head: tuple[np.ndarray, np.ndarray] | None = None, scale: float = 16.0, mix: float = 0.5,
                 lexical: Lexical | None = None, lexical_weight: float = 0.3, encoder=None):
        self.intents, self.vectors, self.labels, self.examples = intents, vectors, labels, examples
        self.head, self.scale, self.mix = head, scale, mix
        self.lexical, self.lexical_weight = lexical, lexical_weight
        self.encoder = encoder  # a fine-tuned embedder of this bot's own, or None: the shared one

    @property
    def kind(self) -> str:
        return "head" if self.head is not None else "nearest"

    @classmethod
    def train(cls, pairs: list[tuple[str, str]], embedder, progress: Callable[[float, str], None] | None = None,
              head: bool | None = None, vectors: np.ndarray | None = None, lexical: bool = True,
              epochs: int = 300, tune_epochs: int = 0) -> "Matcher":
        """Build a matcher from (example, intent) pairs. `head=None` decides by the number of examples;
        `vectors` (precomputed embeddings of the examples) skips embedding, for benchmarks; `tune_epochs`
        fine-tunes the encoder first (MiniLM only; it takes most of the time)."""
        progress = progress or (lambda f, msg: None)
        intents = sorted({intent for _, intent in pairs})
        index = {name: i for i, name in enumerate(intents)}
        texts = [text for text, _ in pairs]
        labels = np.array([index[intent] for _, intent in pairs], dtype=np.int64)
        encoder = None
        tuning = tune_epochs > 0 and vectors is None and len(intents) >= 2 and hasattr(embedder, "load_fresh")
        start, span = (0.6, 0.1) if tuning else (0.0, 0.7)  # progress fractions: [tuning,] embedding, head
        if tuning:
            encoder = embedder = tune(texts, labels, tune_epochs,
                                      progress=lambda f: progress(0.6 * f, "fine-tuning the language model"))
        if vectors is None:
            vectors = np.zeros((0, embedder.dim), np.float32)
            chunk = 64
            parts = []
            for i in range(0, len(texts), chunk):
                parts.append(embedder.encode(texts[i:i + chunk]))
                progress(start + span * min(1.0, (i + chunk) / max(1, len(texts))),
                         f"embedded {min(i + chunk, len(texts))} of {len(texts)} examples")
            if parts:
                vectors = np.concatenate(parts)
        use_head = head if head is not None else (len(intents) >= 2 and len(texts) / max(1, len(intents)) >= HEAD_MIN_EXAMPLES)
        trained = lex = None
        if use_head and len(intents) >= 2:
            progress(0.7, "training the classifier head")
            trained = train_head(vectors.astype(np.float32), labels, len(intents), epochs=epochs,
                                 progress=lambda f: progress(0.7 + 0.25 * f, "training the classifier head"))
            if lexical:
                progress(0.95, "training the word model")
                lex = Lexical.train(texts, labels)
        progress(1.0, "done")
        return cls(intents, vectors.astype(np.float32), labels, texts, trained, lexical=lex, encoder=encoder)

    # ------------------------------------------------------------------------------------- prediction

    def scores(self, q: np.ndarray, texts: list[str] | None = None,
               lexical_proba: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For query vectors (n, d) (and their texts, for the lexical model): predicted intent index,
        confidence in [0, 1], nearest example index. `lexical_proba` replaces computing it (benchmarks)."""
        n = len(q)
        if len(self.vectors) == 0:
            return np.full(n, -1), np.zeros(n), np.full(n, -1)
        sims = q @ self.vectors.T  # (n, N) cosine similarities, vectors are unit length
        nearest = sims.argmax(1)
        near_sim = sims[np.arange(n), nearest]
        if self.head is None:
            return self.labels[nearest], np.clip(near_sim, 0, 1), nearest
        w, b = self.head
        p = _softmax(self.scale * q @ w.T + b)
        if self.lexical is not None and (texts is not None or lexical_proba is not None):
            lp = lexical_proba if lexical_proba is not None else self.lexical.proba(texts)
            p = (1 - self.lexical_weight) * p + self.lexical_weight * lp
        pred = p.argmax(1)
        # nearest example of the predicted intent, and its similarity
        masked = np.where(self.labels[None, :] == pred[:, None], sims, -np.inf)
        ex = masked.argmax(1)
        ex_sim = masked[np.arange(n), ex]
        conf = self.mix * p[np.arange(n), pred] + (1 - self.mix) * np.clip(ex_sim, 0, 1)
        return pred, conf, ex

    def match(self, q: np.ndarray, text: str | None = None) -> Match:
        pred, conf, ex = self.scores(q[None, :], [text] if text is not None else None)
        if pred[0] < 0:
            return Match(None, 0.0)
        return Match(self.intents[int(pred[0])], float(conf[0]), self.examples[int(ex[0])])

    # ---------------------------------------------------------------------------------- serialisation

    def arrays(self) -> dict[str, np.ndarray]:
        a = {"intents": np.array(self.intents, dtype=np.str_), "vectors": self.vectors, "labels": self.labels,
             "examples": np.array(self.examples, dtype=np.str_),
             "params": np.array([self.scale, self.mix, self.lexical_weight], dtype=np.float64)}
        if self.head is not None:
            a["head_w"], a["head_b"] = self.head
        if self.lexical is not None:
            a.update(self.lexical.arrays_)
        if self.encoder is not None:
            a.update(encoder_arrays(self.encoder))
        return a

    @classmethod
    def from_arrays(cls, a) -> "Matcher":
        head = (a["head_w"], a["head_b"]) if "head_w" in a else None
        scale, mix, weight = (float(v) for v in a["params"])
        lexical = Lexical.from_arrays(a) if "lex_coef" in a else None
        return cls([str(s) for s in a["intents"]], a["vectors"], a["labels"], [str(s) for s in a["examples"]],
                   head, scale, mix, lexical, weight, encoder_from_arrays(a))


def dumps(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def loads(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
