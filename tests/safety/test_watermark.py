"""Green-list watermark: generation on a tiny random GPT-2 is detected, plain text is not, the z-score is the
paper's formula."""
import math

import pytest
import torch

from lmforge.generate import SamplingParams, generate
from lmforge.models.hf_io import model_class
from lmforge.models.presets import TINY, make_config
from lmforge.safety.watermark import (GreenLists, WatermarkConfig, WatermarkProcessor,
                                      detect_ids, detect_text, edit_tokens, p_value, z_score)

V = 128


class WordTokenizer:
    """Id i <-> the word "wi "; id 0 is end-of-sequence."""

    eos_token_id = 0

    def encode(self, text, add_special_tokens=True):
        return [int(w[1:]) for w in text.split()]

    def decode(self, ids):
        return "".join(f"w{i} " for i in ids if i)


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    return model_class("gpt2")(make_config("gpt2", **{**TINY, "vocab": V}), "lm").eval()


CFG = WatermarkConfig(key="test-secret", vocab_size=V, gamma=0.25, delta=4.0)


@torch.no_grad()
def sample(model, n_tokens, processor=None, seed=0, rows=1, prompt=(1, 2, 3)):
    """A plain batched sampling loop (no cache) applying `processor` like the generate pipeline does."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([list(prompt)] * rows)
    for _ in range(n_tokens):
        logits = model(ids[:, -64:]).logits[:, -1].float()  # (B, V)
        logits[:, 0] = float("-inf")  # no end-of-sequence
        if processor is not None:
            logits = processor(ids[:, len(prompt):], logits)
        ids = torch.cat([ids, torch.multinomial(logits.softmax(-1), 1, generator=g)], dim=1)
    out = ids[:, len(prompt):].tolist()
    return out if rows > 1 else out[0]


def test_z_score_formula_by_hand():
    # T = 100 scored tokens, gamma = 0.25: expected 25 green, sd = sqrt(100 * .25 * .75) = 4.3301
    assert z_score(45, 100, 0.25) == pytest.approx(20 / 4.330127, rel=1e-6)
    assert z_score(25, 100, 0.25) == 0.0
    assert p_value(0.0) == pytest.approx(0.5)
    assert p_value(4.0) == pytest.approx(3.167e-5, rel=1e-3)


def test_detector_counts_green_tokens_by_hand():
    green = GreenLists(CFG)
    assert int(green.mask(7).sum()) == 32  # exactly gamma * |V|
    # a sequence built to be all green after each previous token, then one red token at the end
    ids = [5]
    for _ in range(20):
        ids.append(int(green.mask(ids[-1]).nonzero()[0]))
    red = int((~green.mask(ids[-1])).nonzero()[0])
    ids.append(red)
    d = detect_ids(ids, CFG, ignore_repeated=False)
    assert (d.num_tokens_scored, d.num_green) == (21, 20)
    assert d.z_score == pytest.approx((20 - 0.25 * 21) / math.sqrt(21 * 0.25 * 0.75))
    assert d.green_mask == [True] * 20 + [False]


def test_green_list_depends_on_key_and_previous_token():
    a, b = GreenLists(CFG), GreenLists(WatermarkConfig("other", V))
    assert not torch.equal(a.mask(3), a.mask(4))
    assert not torch.equal(a.mask(3), b.mask(3))
    assert torch.equal(a.mask(3), GreenLists(CFG).mask(3))  # deterministic


def test_processor_adds_delta_to_green_logits_only():
    proc = WatermarkProcessor(CFG)
    logits = torch.zeros(2, V)
    out = proc(torch.tensor([[9, 4], [1, 8]]), logits)
    assert torch.equal(out[0] == CFG.delta, proc.green.mask(4))
    assert torch.equal(out[1] == CFG.delta, proc.green.mask(8))
    assert torch.equal(proc(torch.zeros(2, 0, dtype=torch.long), logits), logits)  # nothing to hash yet


def test_watermarked_generations_detected_plain_ones_not(gpt2):
    proc = WatermarkProcessor(CFG)
    for marked, plain in zip(sample(gpt2, 120, proc, seed=0, rows=4), sample(gpt2, 120, None, seed=0, rows=4)):
        m, p = detect_ids(marked, CFG), detect_ids(plain, CFG)
        assert m.z_score > 4 and m.p_value < 1e-4 and m.watermarked, m
        assert p.z_score < 4 and not p.watermarked, p
    # with a different key the watermark is invisible
    assert detect_ids(sample(gpt2, 120, proc, seed=7), WatermarkConfig("wrong", V, 0.25)).z_score < 4


def test_detection_degrades_gracefully_under_edits(gpt2):
    ids = sample(gpt2, 150, WatermarkProcessor(CFG), seed=11)
    zs = [detect_ids(edit_tokens(ids, f, V, seed=1), CFG).z_score for f in (0.0, 0.1, 0.3, 0.6)]
    assert zs[0] > zs[1] > zs[2] > zs[3]
    assert zs[1] > 4  # 10% of tokens replaced: still detected


def test_through_generate_api(gpt2):
    tok = WordTokenizer()
    params = SamplingParams(max_tokens=60, temperature=1.0, seed=3, logit_bias={0: -100},
                            extra_processors=(WatermarkProcessor(CFG),))
    text = generate(gpt2, tok, "w1 w2 w3", params)[0].text
    assert detect_text(text, tok, CFG).z_score > 4
    plain = generate(gpt2, tok, "w1 w2 w3", SamplingParams(max_tokens=60, seed=3, logit_bias={0: -100}))[0].text
    assert detect_text(plain, tok, CFG).z_score < 4


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        detect_ids([5], CFG)
    with pytest.raises(ValueError, match="gamma"):
        WatermarkConfig("k", V, gamma=1.5)
    with pytest.raises(ValueError, match="outside"):
        detect_ids([1, 500], CFG)
