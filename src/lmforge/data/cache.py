"""The token cache: a corpus tokenized once into a flat memory-mapped array.

    <cache_dir>/<corpus key>-<family>-<tokenizer key>/
        tokens.bin     every segment's ids, back to back (uint16 when the vocabulary fits, else uint32)
        segments.npy   (S + 1,) int64: where each segment starts in tokens.bin
        documents.npy  (D + 1,) int64: where each document starts, in segments
        meta.json      sources (path, size, mtime), tokenizer digest, counts

The corpus key covers each source's path, size and modification time; the tokenizer key covers the whole
tokenizer (its `tokenizer.json` and family). A rerun with both unchanged reuses the folder; a changed
tokenizer of the same family builds a new one and removes the stale one (caches of other families' tokenizers
over the same corpus stay). The folder is written under a temporary name and
renamed when complete, so a failed or interrupted build leaves nothing behind that could be mistaken for a cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corpus import DataError, expand_sources, read_documents

log = logging.getLogger(__name__)
VERSION = 1
BATCH_SEGMENTS = 20_000  # segments per tokenizer call (encode_batch runs them in parallel)
BYTE_LEVEL = ("gpt2", "roberta")  # tokenizers that keep whitespace: segments keep their newline


@dataclass
class TokenCache:
    folder: Path
    tokens: np.ndarray  # (N,) memmap
    segments: np.ndarray  # (S + 1,) segment starts
    documents: np.ndarray  # (D + 1,) document starts, in segments
    meta: dict

    @property
    def num_tokens(self) -> int:
        return int(len(self.tokens))

    @property
    def num_documents(self) -> int:
        return len(self.documents) - 1

    def document_segments(self, doc: int) -> tuple[int, int]:
        return int(self.documents[doc]), int(self.documents[doc + 1])


def tokenizer_digest(tokenizer) -> str:
    h = hashlib.sha256(tokenizer.family.encode())
    h.update(tokenizer.backend.to_str().encode())
    return h.hexdigest()


def corpus_digest(sources: list[Path]) -> str:
    entries = []
    for p in sources:
        size, mtime = (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else _dir_stat(p)
        entries.append([str(p.resolve()), size, mtime])
    return hashlib.sha256(json.dumps([VERSION, entries]).encode()).hexdigest()


def _dir_stat(p: Path) -> tuple[int, int]:
    files = [f.stat() for f in sorted(p.rglob("*")) if f.is_file()]
    return sum(s.st_size for s in files), max((s.st_mtime_ns for s in files), default=0)


def open_cache(folder: Path) -> TokenCache:
    meta = json.loads((folder / "meta.json").read_text())
    tokens = np.memmap(folder / "tokens.bin", dtype=meta["dtype"], mode="r", shape=(meta["num_tokens"],))
    return TokenCache(folder, tokens, np.load(folder / "segments.npy"), np.load(folder / "documents.npy"), meta)


def build_cache(paths, tokenizer, cache_dir) -> TokenCache:
    """Tokenize `paths` with `tokenizer` into `cache_dir` (or reuse the cache already there)."""
    sources = expand_sources(paths)
    cache_dir = Path(cache_dir)
    corpus_key, tok_key = corpus_digest(sources)[:16], tokenizer_digest(tokenizer)[:16]
    folder = cache_dir / f"{corpus_key}-{tokenizer.family}-{tok_key}"
    if (folder / "meta.json").is_file():
        log.info("reusing token cache %s", folder)
        return open_cache(folder)

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".building-"))
    try:
        _write(tmp, sources, tokenizer, tok_key)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process (a sibling rank) finished first: use theirs
            if not (folder / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in cache_dir.glob(f"{corpus_key}-{tokenizer.family}-*"):
        if stale != folder:
            log.info("tokenizer changed: removing the stale token cache %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
    return open_cache(folder)


def _write(folder: Path, sources: list[Path], tokenizer, tok_key: str) -> None:
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    suffix = "\n" if tokenizer.family in BYTE_LEVEL else ""
    seg_lengths: list[np.ndarray] = []
    doc_starts = [0]
    pending: list[str] = []
    num_segments = 0

    with open(folder / "tokens.bin", "wb") as out:
        def flush():
            if pending:
                enc = tokenizer.backend.encode_batch([s + suffix for s in pending], add_special_tokens=False)
                lengths = np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(enc))
                ids = np.fromiter((i for e in enc for i in e.ids), dtype=dtype, count=int(lengths.sum()))
                out.write(ids.tobytes())
                seg_lengths.append(lengths)
                pending.clear()

        for path in sources:
            for doc in read_documents(path):
                pending.extend(doc)
                num_segments += len(doc)
                doc_starts.append(num_segments)
                if len(pending) >= BATCH_SEGMENTS:
                    flush()
        flush()

    lengths = np.concatenate(seg_lengths) if seg_lengths else np.zeros(0, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        names = ", ".join(str(p) for p in sources)
        raise DataError(f"{names}: the corpus is empty (no text to train on)")
    segments = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=segments[1:])
    np.save(folder / "segments.npy", segments)
    np.save(folder / "documents.npy", np.asarray(doc_starts, dtype=np.int64))
    meta = {
        "version": VERSION, "dtype": np.dtype(dtype).name, "num_tokens": total, "num_segments": len(lengths),
        "num_documents": len(doc_starts) - 1, "tokenizer": tok_key, "family": tokenizer.family,
        "sources": [{"path": str(p.resolve()), "bytes": p.stat().st_size if p.is_file() else None} for p in sources],
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
