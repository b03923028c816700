"""Tokenizer.encode_windows: offsets and overflow windows for extractive QA."""
import itertools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

import lmforge

CONTEXT = "The café was opened by Ann Lee in 1901, and it closed in 1955 after a long winter."
QUESTION = "who opened the café?"


@pytest.fixture(scope="module", params=["demo-bert", "demo-roberta", "demo-gpt2", "demo-xlnet", "demo-t5",
                                        "all-MiniLM-L6-v2"])
def tok(request):
    return lmforge.load_tokenizer(request.param)


def test_one_window_maps_context_tokens_back_to_characters(tok):
    (w,) = tok.encode_windows(QUESTION, CONTEXT, max_length=256)
    assert len(w.ids) == len(w.type_ids) == len(w.offsets) == len(w.sequence_ids)
    assert w.ids == tok(QUESTION, CONTEXT, padding=False, return_tensors=None)["input_ids"][0]
    ctx = [(a, b) for (a, b), s in zip(w.offsets, w.sequence_ids) if s == 1]
    # The context's tokens cover it in order (sentencepiece offsets included; byte-level BPE splits é in two
    # tokens with the same offsets).
    pieces = "".join(CONTEXT[a:b] for a, b in dict.fromkeys(ctx)).replace(" ", "")
    assert pieces == CONTEXT.replace(" ", "")
    assert all(a < b for a, b in ctx) and ctx == sorted(ctx)
    assert sum(s == 0 for s in w.sequence_ids) == len(tok.encode(QUESTION, add_special_tokens=False))


def test_long_context_becomes_overlapping_windows(tok):
    windows = tok.encode_windows(QUESTION, CONTEXT, max_length=24, stride=3)
    assert len(windows) > 1 and all(len(w.ids) <= 24 for w in windows)
    question = len(tok.encode(QUESTION, add_special_tokens=False))
    spans = [[o for o, s in zip(w.offsets, w.sequence_ids) if s == 1] for w in windows]
    for w in windows:  # the question whole in every window
        assert sum(s == 0 for s in w.sequence_ids) == question
    for before, after in itertools.pairwise(spans):  # each window repeats the previous one's last 3 context tokens
        assert after[:3] == before[-3:]
    assert spans[0][0][0] == 0 and spans[-1][-1][1] == len(CONTEXT)  # nothing of the context lost


def test_stride_too_large_is_a_clear_error_not_a_crash(tok):
    question = len(tok.encode(QUESTION, add_special_tokens=False))
    room = 24 - tok.num_special_tokens(pair=True) - question
    with pytest.raises(ValueError, match=f"stride {room} must be .* smaller than the {room} tokens"):
        tok.encode_windows(QUESTION, CONTEXT, max_length=24, stride=room)
    assert len(tok.encode_windows(QUESTION, CONTEXT, max_length=24, stride=room - 1)) > 1
    with pytest.raises(ValueError, match="leaving no room for the second"):
        tok.encode_windows(QUESTION * 5, CONTEXT, max_length=24)


def test_single_text_windows(tok):
    windows = tok.encode_windows(CONTEXT, max_length=10, stride=2)
    assert len(windows) > 1 and all(len(w.ids) <= 10 for w in windows)
    assert {s for w in windows for s in w.sequence_ids} <= {0, None}
