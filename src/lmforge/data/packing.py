"""Token cache -> train/validation split -> fixed-length blocks -> batches for each rank.

Layouts (what a block looks like, chosen by the objective):

    Contiguous     documents joined by `doc_sep`, cut every `length - framing` tokens, each cut framed by
                   `prefix`/`suffix`   GPT-2: doc <eos> doc <eos> …; XLNet: … <sep> <cls>; T5: raw spans
    FullSentences  whole segments packed greedily, `doc_sep` between documents, framed, padded (RoBERTa's
                   FULL-SENTENCES, Liu et al. 2019 §4.2; a segment longer than a block is split)
    SentencePairs  [CLS] A [SEP] B [SEP] with B the continuation of A or, half the time, from another
                   document (BERT's next-sentence prediction, `create_instances_from_document`)

Blocks are int32 arrays with their real lengths; the last, partial block of a split is padded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..objectives.base import Blocks, example_rng
from .cache import TokenCache
from .corpus import DataError


@dataclass
class Packed:
    """All blocks of one split."""

    input_ids: np.ndarray  # (N, L) int32
    lengths: np.ndarray  # (N,) int32
    token_type_ids: np.ndarray | None = None  # (N, L) int8
    next_sentence_label: np.ndarray | None = None  # (N,) int8: 0 = B follows A, 1 = B is random

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def block_size(self) -> int:
        return self.input_ids.shape[1]

    def batch(self, index: np.ndarray) -> Blocks:
        index = np.asarray(index)
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Blocks(self.input_ids[index].astype(np.int64), self.lengths[index], index,
                      pick(self.token_type_ids), pick(self.next_sentence_label))

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())


# ------------------------------------------------------------------ the split

def split_documents(cache: TokenCache, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) documents as (n, 2) arrays of segment ranges.

    Validation takes whole documents, drawn at random, until it holds `val_fraction` of the tokens. A corpus
    of a single document is cut at the segment boundary nearest to that fraction of its end instead.
    """
    docs = np.stack([cache.documents[:-1], cache.documents[1:]], axis=1)
    if val_fraction <= 0:
        return docs, docs[:0]
    seg_tokens = np.diff(cache.segments)
    goal = val_fraction * cache.num_tokens
    if len(docs) == 1:
        cum = np.cumsum(seg_tokens[::-1])
        n_val = int(np.searchsorted(cum, goal)) + 1
        n_seg = len(seg_tokens)
        if n_seg < 2:
            raise DataError("the corpus is a single line; it cannot be split into training and validation data "
                            "(add text, or pass a validation fraction of 0)")
        n_val = min(max(n_val, 1), n_seg - 1)
        return np.array([[0, n_seg - n_val]]), np.array([[n_seg - n_val, n_seg]])
    doc_tokens = np.add.reduceat(seg_tokens, docs[:, 0]) if len(seg_tokens) else np.zeros(len(docs))
    order = example_rng(seed, 0xDA7A).permutation(len(docs))
    n_val = int(np.searchsorted(np.cumsum(doc_tokens[order]), goal)) + 1
    n_val = min(max(n_val, 1), len(docs) - 1)
    is_val = np.zeros(len(docs), dtype=bool)
    is_val[order[:n_val]] = True
    return docs[~is_val], docs[is_val]


def _segment_ranges(cache: TokenCache, docs: np.ndarray):
    """For each document, the (start, end) token range of each of its segments."""
    for lo, hi in docs:
        yield cache.segments[lo:hi], cache.segments[lo + 1 : hi + 1]


# ---------------------------------------------------------------- the layouts

@dataclass(frozen=True)
class Contiguous:
    length: int
    prefix: tuple[int, ...] = ()
    suffix: tuple[int, ...] = ()
    suffix_types: tuple[int, ...] | None = None  # token types of the suffix (XLNet: <sep> 0, <cls> 2); content 0
    doc_sep: tuple[int, ...] = ()
    pad_id: int = 0

    def pack(self, cache: TokenCache, docs: np.ndarray, seed: int = 0) -> Packed:
        sep = np.asarray(self.doc_sep, dtype=np.int64)
        parts = []
        for lo, hi in docs:
            parts.append(cache.tokens[cache.segments[lo] : cache.segments[hi]])
            if len(sep):
                parts.append(sep)
        stream = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
        room = self.length - len(self.prefix) - len(self.suffix)
        if room < 1:
            raise DataError(f"block size {self.length} leaves no room for text after the special tokens")
        n = -(-len(stream) // room)
        body = np.full((n, room), -1, dtype=np.int32)
        body.reshape(-1)[: len(stream)] = stream
        body_len = np.full(n, room, dtype=np.int32)
        if n and len(stream) % room:
            body_len[-1] = len(stream) % room
        return _frame(body, body_len, self.prefix, self.suffix, self.pad_id, self.suffix_types)


@dataclass(frozen=True)
class FullSentences:
    length: int
    prefix: tuple[int, ...] = ()
    suffix: tuple[int, ...] = ()
    doc_sep: tuple[int, ...] = ()
    pad_id: int = 0

    def pack(self, cache: TokenCache, docs: np.ndarray, seed: int = 0) -> Packed:
        room = self.length - len(self.prefix) - len(self.suffix)
        if room < 2:
            raise DataError(f"block size {self.length} leaves no room for text after the special tokens")
        blocks: list[list[np.ndarray]] = []
        cur: list[np.ndarray] = []
        used = 0
        sep = np.asarray(self.doc_sep, dtype=np.int32)
        tokens = cache.tokens
        for starts, ends in _segment_ranges(cache, docs):
            for s, e in zip(starts.tolist(), ends.tolist()):
                while e > s:  # a segment longer than the room is split across blocks
                    take = min(e - s, room)
                    if used + take > room:
                        blocks.append(cur)
                        cur, used = [], 0
                    cur.append(tokens[s : s + take])
                    used += take
                    s += take
            if len(sep) and used:
                if used + len(sep) > room:
                    blocks.append(cur)
                    cur, used = [], 0
                else:
                    cur.append(sep)
                    used += len(sep)
        if cur:
            blocks.append(cur)
        body_len = np.array([sum(len(p) for p in b) for b in blocks], dtype=np.int32)
        body = np.full((len(blocks), room), -1, dtype=np.int32)
        for i, b in enumerate(blocks):
            body[i, : body_len[i]] = np.concatenate(b)
        return _frame(body, body_len, self.prefix, self.suffix, self.pad_id)


@dataclass(frozen=True)
class SentencePairs:
    length: int
    cls_id: int
    sep_id: int
    pad_id: int = 0
    short_seq_prob: float = 0.1  # BERT: sometimes a shorter block, so fine-tuning lengths are seen too

    def pack(self, cache: TokenCache, docs: np.ndarray, seed: int = 0) -> Packed:
        """BERT's `create_instances_from_document` over every document, with a rng keyed on `seed` (static)."""
        rng = example_rng(seed, 0x05B)
        max_tokens = self.length - 3
        if max_tokens < 2:
            raise DataError(f"block size {self.length} is too small for sentence pairs")
        tokens = cache.tokens
        doc_segs = [list(zip(s.tolist(), e.tolist())) for s, e in _segment_ranges(cache, docs)]
        rows, types, labels = [], [], []
        for d, segs in enumerate(doc_segs):
            target = max_tokens if rng.random() >= self.short_seq_prob else int(rng.integers(2, max_tokens + 1))
            chunk: list[tuple[int, int]] = []
            size = 0
            i = 0
            while i < len(segs):
                chunk.append(segs[i])
                size += segs[i][1] - segs[i][0]
                if i == len(segs) - 1 or size >= target:
                    a_end = 1 if len(chunk) == 1 else int(rng.integers(1, len(chunk)))
                    a = np.concatenate([tokens[s:e] for s, e in chunk[:a_end]])
                    if len(chunk) == 1 or rng.random() < 0.5:
                        is_random = 1
                        other = d
                        if len(doc_segs) > 1:
                            while other == d:
                                other = int(rng.integers(len(doc_segs)))
                        osegs = doc_segs[other]
                        start = int(rng.integers(len(osegs)))
                        b_parts, b_size = [], 0
                        for s, e in osegs[start:]:
                            b_parts.append(tokens[s:e])
                            b_size += e - s
                            if b_size >= target - len(a):
                                break
                        b = np.concatenate(b_parts)
                        i -= len(chunk) - a_end  # the unused segments go back (BERT does the same)
                    else:
                        is_random = 0
                        b = np.concatenate([tokens[s:e] for s, e in chunk[a_end:]])
                    a, b = _truncate_pair(a, b, max_tokens, rng)
                    if len(a) and len(b):
                        rows.append(np.concatenate([[self.cls_id], a, [self.sep_id], b, [self.sep_id]]))
                        types.append(np.concatenate([np.zeros(len(a) + 2, np.int8), np.ones(len(b) + 1, np.int8)]))
                        labels.append(is_random)
                    chunk, size = [], 0
                    target = max_tokens if rng.random() >= self.short_seq_prob else int(rng.integers(2, max_tokens + 1))
                i += 1
        lengths = np.array([len(r) for r in rows], dtype=np.int32)
        ids = np.full((len(rows), self.length), self.pad_id, dtype=np.int32)
        tt = np.zeros((len(rows), self.length), dtype=np.int8)
        for k, (r, t) in enumerate(zip(rows, types)):
            ids[k, : len(r)] = r
            tt[k, : len(t)] = t
        return Packed(ids, lengths, tt, np.asarray(labels, dtype=np.int8))


def _truncate_pair(a: np.ndarray, b: np.ndarray, max_tokens: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """BERT's `truncate_seq_pair`: trim the longer side, from the front or the back at random."""
    while len(a) + len(b) > max_tokens:
        if len(a) > len(b):
            a = a[1:] if rng.random() < 0.5 else a[:-1]
        else:
            b = b[1:] if rng.random() < 0.5 else b[:-1]
    return a, b


def _frame(body: np.ndarray, body_len: np.ndarray, prefix, suffix, pad_id: int, suffix_types=None) -> Packed:
    """prefix + body[:len] + suffix, then padding."""
    n, room = body.shape
    L = room + len(prefix) + len(suffix)
    ids = np.full((n, L), pad_id, dtype=np.int32)
    ids[:, : len(prefix)] = prefix
    cols = np.arange(room)[None, :]
    inside = cols < body_len[:, None]
    ids[:, len(prefix) : len(prefix) + room] = np.where(inside, body, pad_id)
    lengths = body_len + len(prefix) + len(suffix)
    types = np.zeros((n, L), dtype=np.int8) if suffix_types is not None else None
    for k, tok in enumerate(suffix):  # the suffix follows each block's real text
        pos = body_len + len(prefix) + k
        ids[np.arange(n), pos] = tok
        if types is not None:
            types[np.arange(n), pos] = suffix_types[k]
    return Packed(ids, lengths.astype(np.int32), types)


# ------------------------------------------------------------- serving batches

@dataclass(frozen=True)
class Sampler:
    """The global stream of block indices: a fresh shuffle of the split each epoch, keyed on (seed, epoch).

    Position p of the stream is block `perm(epoch = p // N)[p % N]`. A step of the whole job consumes
    `micro_batch * accumulation * world_size` consecutive positions; micro-batch j of the step goes to rank
    j % world_size, so N ranks together see exactly the micro-batches one process sees with N times the
    accumulation.
    """

    num_blocks: int
    seed: int = 0
    shuffle: bool = True

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_blocks)
        return example_rng(self.seed, 0x5A3, epoch).permutation(self.num_blocks)

    def positions(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(block indices, epochs) of stream positions start .. start + count - 1."""
        pos = np.arange(start, start + count)
        epochs = pos // self.num_blocks
        out = np.empty(count, dtype=np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self.epoch_order(int(e))[pos[sel] % self.num_blocks]
        return out, epochs

    def micro_batches(self, step: int, micro_batch: int, accumulation: int, rank: int = 0, world_size: int = 1):
        """[(block indices, epochs)] of this rank's micro-batches for optimizer step `step` (0-based)."""
        per_step = micro_batch * accumulation * world_size
        index, epochs = self.positions(step * per_step, per_step)
        out = []
        for j in range(rank, accumulation * world_size, world_size):
            sl = slice(j * micro_batch, (j + 1) * micro_batch)
            out.append((index[sl], epochs[sl]))
        return out
