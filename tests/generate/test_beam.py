"""Beam search equals transformers' `generate(num_beams=k, do_sample=False)` on the same random weights."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers

from lmforge.generate import Batcher, SamplingParams, generate
from lmforge.models import ModelError, load_model

from .test_batch import run
from .test_sampling import lively, tiny

transformers.logging.set_verbosity_error()
EOS = 1
T5_SIZES = dict(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=2, num_heads=4,
                decoder_start_token_id=0, eos_token_id=EOS, pad_token_id=0)
GPT2_SIZES = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, eos_token_id=EOS, bos_token_id=EOS)
LLAMA_SIZES = dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=64, eos_token_id=EOS, bos_token_id=EOS)
PROMPTS = [[5, 17, 33, 2, 40, 8], [12, 3], [60, 61, 62, 63, 64, 65, 66, 67, 68]]
# (num_beams, length_penalty, early_stopping): the default, a long-favouring and a short-favouring penalty,
# each stopping rule
SETTINGS = [(3, 1.0, False), (4, 2.0, True), (4, -0.5, "never"), (2, 0.5, "never"), (5, 1.0, True)]


class IdTokenizer:
    eos_token_id = EOS

    def encode(self, text):
        return [int(t) for t in text.split()]

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


TOK = IdTokenizer()


# Added to the end-of-sequence log-probability on both sides (here and as transformers' `sequence_bias`), so
# that some beams end early: the random models rarely choose it by themselves.
EOS_BIAS = {"t5": 2.5, "gpt2": 5.0, "llama": 3.0}


def build(family, folder):
    torch.manual_seed(0)
    if family == "t5":
        hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**T5_SIZES))
    elif family == "llama":
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA_SIZES))
    else:
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2_SIZES))
    lively(hf).eval().save_pretrained(folder)
    return hf, load_model(folder).eval()


@pytest.fixture(scope="module", params=["t5", "gpt2", "llama"])
def pair(request, tmp_path_factory):
    return request.param, *build(request.param, tmp_path_factory.mktemp(request.param))


def hf_beams(hf, family, prompt, k, length_penalty, early_stopping, n=1):
    ids = torch.tensor([prompt])
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), num_beams=k, do_sample=False, max_new_tokens=10,
                      length_penalty=length_penalty, early_stopping=early_stopping, num_return_sequences=n,
                      pad_token_id=0, eos_token_id=EOS, sequence_bias={(EOS,): EOS_BIAS[family]})
    start = 1 if hf.config.is_encoder_decoder else len(prompt)
    return unpad([row[start:].tolist() for row in out])


def ours(model, family, prompt, **settings):
    params = SamplingParams(max_tokens=10, logit_bias={EOS: EOS_BIAS[family]}, **settings)
    return generate(model, TOK, " ".join(map(str, prompt)), params)


def unpad(rows: list[list[int]]) -> list[list[int]]:
    """HF pads shorter returned beams after their end-of-sequence token."""
    return [r[: r.index(EOS) + 1] if EOS in r else r for r in rows]


@pytest.mark.parametrize("k, length_penalty, early_stopping", SETTINGS)
def test_beam_search_equals_transformers(pair, k, length_penalty, early_stopping):
    family, hf, model = pair
    for prompt in PROMPTS:
        got = ours(model, family, prompt, num_beams=k, length_penalty=length_penalty, early_stopping=early_stopping,
                   n=2)
        assert [c.token_ids for c in got] == hf_beams(hf, family, prompt, k, length_penalty, early_stopping, n=2)
        for c in got:
            assert c.finish_reason == ("stop" if c.token_ids[-1] == EOS else "length")
            assert c.text == TOK.decode([t for t in c.token_ids if t != EOS])


def test_the_cases_cover_both_endings_and_differ_from_greedy(pair):
    """The comparison above means something: some best beams end with EOS, some at max_tokens, and beam search
    finds something other than greedy decoding."""
    family, hf, _ = pair
    ends, differs = set(), False
    for prompt in PROMPTS:
        greedy = hf_beams(hf, family, prompt, 1, 1.0, False)[0]
        for k, lp, es in SETTINGS:
            best = hf_beams(hf, family, prompt, k, lp, es)[0]
            ends.add(best[-1] == EOS)
            differs |= best != greedy
    assert ends == {True, False} and differs


def test_one_beam_is_greedy(pair):
    family, hf, model = pair
    for prompt in PROMPTS:
        [beam1] = ours(model, family, prompt, num_beams=1, temperature=0)
        assert beam1.token_ids == hf_beams(hf, family, prompt, 1, 1.0, False)[0]


def test_beams_in_company_of_other_requests(pair):
    """A beam request reorders only its own rows: requests around it get their own tokens, and it gets its own."""
    family, _, model = pair
    beam = SamplingParams(max_tokens=8, num_beams=4, n=2, logit_bias={EOS: EOS_BIAS[family]})
    greedy = lambda k: SamplingParams(max_tokens=k, temperature=0)
    alone = run(Batcher(model, TOK), {0: [("b", "5 17 33", beam)]})["b"]
    g_alone = run(Batcher(model, TOK), {0: [("g", "12 3", greedy(6))]})["g"]
    company = run(Batcher(model, TOK), {0: [("g", "12 3", greedy(6))], 1: [("b", "5 17 33", beam)],
                                       2: [("h", "60 61", greedy(9))]})
    assert company["b"] == alone and company["g"] == g_alone


def test_beam_search_is_refused_where_unsupported():
    with pytest.raises(ModelError, match="beam search is not supported for xlnet"):
        generate(tiny("xlnet"), TOK, "3 4", SamplingParams(num_beams=2))
    for bad in (dict(n=3), dict(logprobs=1), dict(top_p=0.5), dict(top_k=4)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(num_beams=2, **bad)
