"""Incremental decoding gives exactly the text of decoding everything at once, at a cost linear in the length."""
import random

import pytest

import lmforge
from lmforge.generate import SamplingParams, generate
from lmforge.generate.stop import IncrementalDecoder

from .test_sampling import TOK, tiny

TEXTS = ["café naïve 日本語 😀 hello, world.", "Grüße aus Köln — ½ € ≠ $", "def f(x):\n    return x ** 2  # ✓",
         "emoji 👩‍👩‍👧 and ZWJ", "   leading spaces and trailing   "]


class Counting:
    """A tokenizer wrapper that counts how many ids it was asked to decode in all."""

    def __init__(self, tokenizer):
        self.tokenizer, self.decoded = tokenizer, 0
        self.eos_token_id = tokenizer.eos_token_id

    def decode(self, ids, **kw):
        self.decoded += len(ids)
        return self.tokenizer.decode(ids, **kw)


@pytest.fixture(scope="module", params=["demo-gpt2", "demo-t5", "demo-xlnet"])
def tokenizer(request):
    return lmforge.load_tokenizer(request.param)


def pieces(tokenizer, ids):
    d = IncrementalDecoder(tokenizer)
    out = [d.push(t) for t in ids]
    return out + [d.flush()]


def test_incremental_text_equals_full_decode(tokenizer):
    rng = random.Random(0)
    for _ in range(20):
        texts = rng.choices(TEXTS, k=4)
        ids = [t for text in texts for t in tokenizer.encode(text, add_special_tokens=False)]
        out = pieces(tokenizer, ids)
        assert "".join(out) == tokenizer.decode(ids)
        assert not any("\ufffd" in p for p in out)  # a character cut between tokens is held until complete


def test_random_tokens_still_add_up(tokenizer):
    """Arbitrary ids (invalid byte sequences included) lose nothing and gain nothing."""
    rng = random.Random(1)
    for _ in range(10):
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(60)]
        assert "".join(pieces(tokenizer, ids)) == tokenizer.decode(ids)


def test_decoding_work_is_linear_in_length():
    tok = Counting(lmforge.load_tokenizer("demo-gpt2"))
    ids = tok.tokenizer.encode(" ".join(TEXTS * 20), add_special_tokens=False)
    assert len(ids) > 500
    pieces(tok, ids)
    assert tok.decoded < 6 * len(ids)  # decoding everything every step would be len(ids)**2 / 2


def test_generation_decodes_incrementally():
    """The batcher decodes windows, not the whole completion, and still returns the full text."""
    tok = Counting(TOK)
    tok.encode = TOK.encode
    params = SamplingParams(max_tokens=60, temperature=0, logit_bias={0: -100}, stop=["zzzz"])
    [choice] = generate(tiny("gpt2"), tok, "a", params)
    assert len(choice.token_ids) == 60 and choice.text == TOK.decode(choice.token_ids)
    assert tok.decoded < 6 * 60  # all at every step: 1830
