"""Verbatim copying: an n-gram index over a training corpus and the longest stretch of a generated text that
appears word for word in it.

Words are `\\w+` runs, lower-cased (punctuation, spacing and case changes do not hide a copy). The index
holds a 64-bit rolling hash of every n-word window of the corpus, sorted, with its position (numpy arrays:
16 bytes per corpus word). A check hashes the text's windows, looks them up with a binary search, confirms
each hit word by word (hash collisions cannot create a false copy) and extends it both ways, so the reported
overlap is exact and can be longer than n. Overlaps of fewer than n words are not seen.

The default flag threshold, 32 words, is about 50 GPT-2 tokens: the length Carlini et al. (2021, 2023) use
for "extractable" memorisation.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

_WORD = re.compile(r"\w+")
_P = np.uint64(1099511628211)  # FNV prime as the polynomial base
MAX_HITS_PER_WINDOW = 64  # a window that occurs more often in the corpus is boilerplate; check 64 of them


def words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Lower-cased words and their character spans in `text`."""
    ms = list(_WORD.finditer(text))
    return [m.group().lower() for m in ms], [m.span() for m in ms]


def _window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """(len - n + 1,) uint64 hash of each n-word window."""
    if len(ids) < n:
        return np.zeros(0, dtype=np.uint64)
    x = ids.astype(np.uint64) + np.uint64(1)
    h = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * _P + x[k: len(x) - n + 1 + k]
    return h


@dataclass
class Overlap:
    """The longest verbatim overlap: its length in words, the span in the checked text, and where it is in the
    corpus (document index and character span)."""

    words: int
    text_span: tuple[int, int]
    text: str
    doc: int
    doc_name: str
    doc_span: tuple[int, int]


@dataclass
class CopyReport:
    longest: Overlap | None
    flagged: bool
    threshold: int
    copied_fraction: float  # share of the text's words inside some n-word window found in the corpus
    num_words: int

    def to_dict(self) -> dict:
        d = {"flagged": self.flagged, "threshold_words": self.threshold, "num_words": self.num_words,
             "copied_fraction": round(self.copied_fraction, 4), "longest_overlap_words": 0}
        if self.longest:
            o = self.longest
            d.update(longest_overlap_words=o.words, overlap_text=o.text, text_span=list(o.text_span),
                     source=o.doc_name, source_span=list(o.doc_span))
        return d


class CopyIndex:
    """`CopyIndex.build(docs, n=8)`, `.check(text)`, `.save(folder)` / `CopyIndex.load(folder)`."""

    def __init__(self, n: int, vocab: dict[str, int], ids: np.ndarray, starts: np.ndarray, char_spans: np.ndarray,
                 doc_names: list[str], hashes: np.ndarray, positions: np.ndarray):
        self.n, self.vocab, self.ids = n, vocab, ids
        self.starts = starts  # (D + 1,) first word of each document in `ids`
        self.char_spans = char_spans  # (W, 2) character span of each corpus word within its document
        self.doc_names = doc_names
        self.hashes, self.positions = hashes, positions  # sorted window hashes and their word positions

    @classmethod
    def build(cls, docs: Iterable[tuple[str, str]] | Iterable[str], n: int = 8,
              progress: Callable[[int], None] | None = None) -> "CopyIndex":
        """Index documents given as texts or (name, text) pairs. Windows never cross a document boundary."""
        if n < 2:
            raise ValueError("n must be at least 2")
        vocab: dict[str, int] = {}
        all_ids, spans, starts, names, hashes, positions = [], [], [0], [], [], []
        for i, doc in enumerate(docs):
            name, text = doc if isinstance(doc, tuple) else (f"doc{i}", doc)
            ws, sp = words(text)
            ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in ws), dtype=np.int32, count=len(ws))
            h = _window_hashes(ids, n)
            hashes.append(h)
            positions.append(np.arange(len(h), dtype=np.int64) + starts[-1])
            all_ids.append(ids)
            spans.append(np.asarray(sp, dtype=np.int64).reshape(-1, 2))
            starts.append(starts[-1] + len(ids))
            names.append(name)
            if progress:
                progress(len(text))
        h = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
        pos = np.concatenate(positions) if positions else np.zeros(0, np.int64)
        order = np.argsort(h, kind="stable")
        return cls(n, vocab, np.concatenate(all_ids) if all_ids else np.zeros(0, np.int32),
                   np.asarray(starts, np.int64), np.concatenate(spans) if spans else np.zeros((0, 2), np.int64),
                   names, h[order], pos[order])

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], n: int = 8, progress=None) -> "CopyIndex":
        return cls.build(((str(p), Path(p).read_text(encoding="utf-8", errors="replace")) for p in paths), n, progress)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "copy_index.npz", ids=self.ids, starts=self.starts, char_spans=self.char_spans,
                 hashes=self.hashes, positions=self.positions)
        meta = {"n": self.n, "doc_names": self.doc_names, "vocab": list(self.vocab)}
        (folder / "copy_index.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "CopyIndex":
        folder = Path(folder)
        if not (folder / "copy_index.npz").is_file() or not (folder / "copy_index.json").is_file():
            raise ValueError(f"{folder} holds no copy index (copy_index.npz + copy_index.json)")
        meta = json.loads((folder / "copy_index.json").read_text(encoding="utf-8"))
        with np.load(folder / "copy_index.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        vocab = {w: i for i, w in enumerate(meta["vocab"])}
        return cls(meta["n"], vocab, arrays["ids"], arrays["starts"], arrays["char_spans"], meta["doc_names"],
                   arrays["hashes"], arrays["positions"])

    def _doc_of(self, pos: int) -> int:
        return int(np.searchsorted(self.starts, pos, side="right") - 1)

    def check(self, text: str, threshold: int = 32) -> CopyReport:
        """The longest verbatim overlap of `text` with the corpus, flagged when it has >= `threshold` words."""
        ws, sp = words(text)
        # words unseen in the corpus get -1, so they never match
        ids = np.fromiter((self.vocab.get(w, -1) for w in ws), dtype=np.int64, count=len(ws))
        n = self.n
        covered = np.zeros(len(ws), dtype=bool)
        best: tuple[int, int, int] | None = None  # (length, text start, corpus start)
        if len(ws) >= n and len(self.hashes):
            h = _window_hashes(np.where(ids < 0, np.iinfo(np.int32).max, ids), n)
            lo = np.searchsorted(self.hashes, h, side="left")
            hi = np.searchsorted(self.hashes, h, side="right")
            done: dict[int, int] = {}  # corpus offset (j - i) -> text end already explored
            for i in np.nonzero(hi > lo)[0]:
                i = int(i)
                for j in self.positions[lo[i]: min(hi[i], lo[i] + MAX_HITS_PER_WINDOW)]:
                    j = int(j)
                    if done.get(j - i, -1) > i:
                        continue
                    d = self._doc_of(j)
                    d_lo, d_hi = int(self.starts[d]), int(self.starts[d + 1])
                    if not np.array_equal(self.ids[j: j + n], ids[i: i + n]):  # a hash collision
                        continue
                    a, b = i, i + n  # extend within the text and the document
                    while a > 0 and j - (i - a) - 1 >= d_lo and self.ids[j - (i - a) - 1] == ids[a - 1]:
                        a -= 1
                    while b < len(ids) and j + (b - i) < d_hi and self.ids[j + (b - i)] == ids[b]:
                        b += 1
                    done[j - i] = b
                    covered[a:b] = True
                    if best is None or b - a > best[0]:
                        best = (b - a, a, j - (i - a))
        longest = None
        if best:
            length, a, j = best
            d = self._doc_of(j)
            t0, t1 = sp[a][0], sp[a + length - 1][1]
            longest = Overlap(length, (t0, t1), text[t0:t1], d, self.doc_names[d],
                              (int(self.char_spans[j][0]), int(self.char_spans[j + length - 1][1])))
        return CopyReport(longest, bool(longest and longest.words >= threshold), threshold,
                          float(covered.mean()) if len(ws) else 0.0, len(ws))
