import numpy as np
import pytest

from lmforge.objectives import Blocks, SpanCorruption, compute_input_and_target_lengths, random_spans_noise_mask

SENTINELS = tuple(range(999, 899, -1))  # <extra_id_0> is the largest id, as in T5
EOS, PAD = 1, 0


def t5(**kw):
    return SpanCorruption(sentinel_ids=SENTINELS, eos_token_id=EOS, pad_token_id=PAD, **kw)


def reconstruct(inputs, targets):
    """Splice each sentinel's span from the targets back into the input."""
    spans, cur = {}, None
    for t in targets[:-1]:
        if t in SENTINELS:
            cur = t
            spans[cur] = []
        else:
            spans[cur].append(t)
    out = []
    for t in inputs[:-1]:
        out.extend(spans[t] if t in SENTINELS else [t])
    return out


def test_lengths_match_t5():
    assert compute_input_and_target_lengths(512) == (568, 114)  # T5 / run_t5_mlm_flax.py
    # 141 raw tokens: 21 noise in 7 spans -> 141 - 21 + 7 + 1 = 128 inputs, 21 + 7 + 1 = 29 targets
    assert compute_input_and_target_lengths(128) == (141, 29)


@pytest.mark.parametrize("inputs_length", [32, 64, 128, 512])
def test_packed_blocks_fit_exactly_and_reconstruct(inputs_length):
    obj = t5()
    raw = obj.raw_length(inputs_length)
    _, target_length = compute_input_and_target_lengths(inputs_length)
    rng = np.random.default_rng(inputs_length)
    ids = rng.integers(10, 800, size=(50, raw))
    out = obj(Blocks(ids, np.full(50, raw), np.arange(50)), 0)
    assert out["input_ids"].shape == (50, inputs_length)  # no padding, no overflow
    assert out["labels"].shape == (50, target_length)
    assert (out["attention_mask"] == 1).all() and (out["labels"] != -100).all()
    for b in range(50):
        x, y = out["input_ids"][b].tolist(), out["labels"][b].tolist()
        assert x[-1] == EOS and y[-1] == EOS
        assert reconstruct(x, y) == ids[b].tolist()
        sent_in = [t for t in x if t in SENTINELS]
        assert sent_in == list(SENTINELS[: len(sent_in)])  # <extra_id_0>, <extra_id_1>, … in order
        assert [t for t in y if t in SENTINELS] == sent_in


def test_hand_worked_example():
    obj = t5()
    tokens = np.array([10, 11, 12, 13, 14, 15, 16])
    noise = np.array([0, 1, 1, 0, 1, 1, 0], dtype=bool)
    from lmforge.objectives.span_corruption import splice

    s = np.asarray(SENTINELS)
    assert splice(tokens, noise, s).tolist() == [10, 999, 13, 998, 16]
    assert obj.sentinel_ids[0] == 999


def test_noise_statistics():
    rng = np.random.default_rng(0)
    lengths, starts = [], []
    for _ in range(2000):
        m = random_spans_noise_mask(200, rng)
        assert m.sum() == 30 and not m[0]  # exactly 15% noise; the first span is kept
        edges = np.flatnonzero(np.diff(np.concatenate([[0], m.astype(int), [0]])))
        spans = edges[1::2] - edges[::2]
        assert len(spans) == 10  # round(30 / 3) spans
        lengths.extend(spans)
        starts.extend(edges[::2])
    assert abs(np.mean(lengths) - 3.0) < 1e-9
    assert np.std(lengths) > 1.0  # random lengths, not all 3
    # Spans start anywhere (T5's last span always ends the block, so starts pile up near the end only).
    hist = np.bincount(starts, minlength=200)[1:170]
    assert hist.min() > 0.6 * hist.mean() and hist.max() < 1.5 * hist.mean()


def test_short_last_block_and_dynamic_noise():
    obj = t5()
    ids = np.zeros((2, 40), dtype=np.int64)
    ids[0] = np.arange(10, 50)
    ids[1, :20] = np.arange(10, 30)
    blocks = Blocks(ids, np.array([40, 20]), np.arange(2))
    out = obj(blocks, 0)
    row = out["input_ids"][1][out["attention_mask"][1] == 1].tolist()
    labels = [t for t in out["labels"][1].tolist() if t != -100]
    assert reconstruct(row, labels) == list(range(10, 30))
    assert not np.array_equal(out["input_ids"].numpy(), obj(blocks, 1)["input_ids"].numpy())
