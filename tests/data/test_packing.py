import numpy as np
import pytest

from lmforge.data import Contiguous, FullSentences, Sampler, SentencePairs, split_documents
from lmforge.data.cache import TokenCache


def fake_cache(docs):
    """A TokenCache from documents given as lists of segments (lists of ids)."""
    segs = [s for d in docs for s in d]
    tokens = np.array([t for s in segs for t in s], dtype=np.uint16)
    starts = np.concatenate([[0], np.cumsum([len(s) for s in segs])]).astype(np.int64)
    doc_starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    return TokenCache(None, tokens, starts, doc_starts, {})


def random_docs(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return [[list(rng.integers(10, 100, size=rng.integers(1, 12))) for _ in range(rng.integers(1, 6))]
            for _ in range(n)]


def all_docs(cache):
    return np.stack([cache.documents[:-1], cache.documents[1:]], axis=1)


def test_contiguous_is_the_stream_with_separators_and_framing():
    docs = random_docs()
    cache = fake_cache(docs)
    packed = Contiguous(16, suffix=(4, 3), suffix_types=(0, 2), doc_sep=(2,), pad_id=5).pack(cache, all_docs(cache))
    stream = [t for d in docs for t in [*(x for s in d for x in s), 2]]
    body = [t for row, n in zip(packed.input_ids, packed.lengths) for t in row[: n - 2]]
    assert body == stream
    assert (packed.lengths[:-1] == 16).all()
    last = packed.input_ids[-1]
    n = packed.lengths[-1]
    assert list(last[n - 2 : n]) == [4, 3] and (last[n:] == 5).all()
    assert packed.token_type_ids[0, -1] == 2 and packed.token_type_ids[0, -2] == 0


def test_full_sentences_keep_segments_whole():
    docs = random_docs()
    cache = fake_cache(docs)
    packed = FullSentences(24, prefix=(0,), suffix=(2,), doc_sep=(2,), pad_id=1).pack(cache, all_docs(cache))
    rows = [list(r[1 : n - 1]) for r, n in zip(packed.input_ids, packed.lengths)]
    assert all(r[0] == 0 for r in packed.input_ids)
    joined = [t for r in rows for t in r if t != 2]
    assert joined == [t for d in docs for s in d for t in s]  # nothing lost, order kept
    segments = {tuple(s) for d in docs for s in d}
    for r in rows:  # every block is a run of whole segments and separators
        pieces, cur = [], []
        for t in r:
            if t == 2:
                pieces.append(cur)
                cur = []
            else:
                cur.append(t)
        pieces.append(cur)
        for p in pieces:
            if p:
                i = 0
                while i < len(p):  # greedy match of whole segments
                    match = [s for s in segments if tuple(p[i : i + len(s)]) == s]
                    assert match, (r, p)
                    i += max(len(s) for s in match)


def test_sentence_pairs_are_half_random_and_typed():
    docs = [[list(range(10 + 10 * d + s, 12 + 10 * d + s)) for s in range(6)] for d in range(200)]
    cache = fake_cache(docs)
    packed = SentencePairs(20, cls_id=2, sep_id=3, pad_id=0).pack(cache, all_docs(cache), seed=1)
    assert 0.4 < packed.next_sentence_label.mean() < 0.6
    for ids, n, tt in zip(packed.input_ids, packed.lengths, packed.token_type_ids):
        assert ids[0] == 2 and ids[n - 1] == 3 and (ids[n:] == 0).all()
        seps = np.flatnonzero(ids[:n] == 3)
        assert len(seps) == 2
        assert (tt[: seps[0] + 1] == 0).all() and (tt[seps[0] + 1 : n] == 1).all()
    # Same seed, same pairs (static preprocessing); another seed, other pairs.
    again = SentencePairs(20, cls_id=2, sep_id=3).pack(cache, all_docs(cache), seed=1)
    assert np.array_equal(again.input_ids, packed.input_ids)


def test_split_holds_out_whole_documents():
    docs = random_docs(200)
    cache = fake_cache(docs)
    train, val = split_documents(cache, 0.1, seed=0)
    assert len(train) + len(val) == 200 and not set(map(tuple, train)) & set(map(tuple, val))
    val_tokens = sum(cache.segments[hi] - cache.segments[lo] for lo, hi in val)
    assert 0.1 <= val_tokens / cache.num_tokens < 0.15
    one = fake_cache([[list(range(10, 20)) for _ in range(30)]])
    train, val = split_documents(one, 0.1, seed=0)  # a single document is cut at a segment boundary
    assert train.tolist() == [[0, 27]] and val.tolist() == [[27, 30]]


def test_sampler_shuffles_each_epoch_and_shards_like_accumulation():
    s = Sampler(10, seed=0)
    first, e = s.positions(0, 10)
    second, _ = s.positions(10, 10)
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert not np.array_equal(first, second) and (e == 0).all()
    single = [idx.tolist() for idx, _ in s.micro_batches(3, 2, 4)]
    ranks = [[idx.tolist() for idx, _ in s.micro_batches(3, 2, 2, rank=r, world_size=2)] for r in range(2)]
    assert sorted(single) == sorted(ranks[0] + ranks[1])
    assert ranks[0] == single[0::2] and ranks[1] == single[1::2]


@pytest.mark.parametrize("layout", [Contiguous(3, suffix=(1, 2, 3)), FullSentences(3, prefix=(1,), suffix=(2,))])
def test_block_too_small_for_framing(layout):
    from lmforge.data import DataError

    cache = fake_cache(random_docs(3))
    with pytest.raises(DataError, match="no room"):
        layout.pack(cache, all_docs(cache))
