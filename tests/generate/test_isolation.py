"""One request never harms its batch-mates: numerically hostile settings are made safe (vLLM's floors), and a
request whose scores still turn non-finite, or whose processor raises, ends alone with an error."""
import pytest
import torch

from lmforge.generate import Batcher, SamplingParams
from lmforge.generate.sampling import TEMPERATURE_FLOOR, SamplingError

from .test_batch import run
from .test_sampling import TOK, lively, tiny

OTHERS = [("a", "the cat", SamplingParams(max_tokens=8, temperature=0, frequency_penalty=2)),
          ("b", "hello", SamplingParams(max_tokens=8, temperature=1.0, top_p=0.9, seed=5)),
          ("c", "xyz.", SamplingParams(max_tokens=6, temperature=0.7, seed=1, n=2))]


def alone(model) -> dict:
    return {rid: run(Batcher(model, TOK), {0: [(rid, prompt, params)]})[rid] for rid, prompt, params in OTHERS}


def outputs(batcher: Batcher, extra: list) -> tuple[dict, dict]:
    """Run OTHERS together with `extra`; returns (tokens per request, error per request)."""
    tokens, errors = {}, {}
    for rid, prompt, params in OTHERS + extra:
        batcher.add(rid, TOK.encode(prompt), params)
        tokens[rid] = [[] for _ in range(params.n)]
    while batcher.has_work:
        for out in batcher.step():
            if out.error:
                errors[out.request_id] = out.error
            for i, d in enumerate(out.deltas):
                tokens[out.request_id][i] += d.token_ids
    return tokens, errors


def test_tiny_temperature_and_top_p_are_made_safe():
    p = SamplingParams(temperature=1e-38, top_p=1e-46)
    assert p.temperature == 0 and p.top_p > 0
    assert SamplingParams(temperature=TEMPERATURE_FLOOR).temperature == TEMPERATURE_FLOOR
    with pytest.raises(SamplingError) as e:
        SamplingParams(top_p=0)
    assert e.value.param == "top_p"


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_a_poison_request_leaves_its_batch_mates_unchanged(family):
    model = lively(tiny(family))
    want = alone(model)
    poison = [("p1", "be quick", SamplingParams(max_tokens=8, temperature=1e-38, top_p=1e-46)),
              ("p2", "q", SamplingParams(max_tokens=8, temperature=1e-4, top_p=1e-30, seed=1))]
    tokens, errors = outputs(Batcher(model, TOK), poison)
    assert not errors
    assert {k: tokens[k] for k in want} == want
    assert all(len(t[0]) >= 1 for t in (tokens["p1"], tokens["p2"]))


class NaNProcessor:
    def __call__(self, generated, logits):
        return logits * float("nan")


class Raises:
    def __call__(self, generated, logits):
        raise RuntimeError("a buggy processor")


@pytest.mark.parametrize("processor", [NaNProcessor(), Raises()])
def test_a_request_that_still_fails_ends_alone_with_an_error(processor):
    model = lively(tiny("gpt2"))
    want = alone(model)
    bad = [("bad", "the", SamplingParams(max_tokens=8, temperature=0.5, extra_processors=(processor,)))]
    tokens, errors = outputs(Batcher(model, TOK), bad)
    assert set(errors) == {"bad"} and "generation failed" in errors["bad"]
    assert tokens["bad"] == [[]]
    assert {k: tokens[k] for k in want} == want


def test_non_finite_model_logits_fail_only_their_row():
    model = lively(tiny("gpt2"))
    want = alone(model)
    batcher = Batcher(model, TOK)
    real = batcher.runner.prefill

    def prefill(prompts, repeats):  # the poisoned prompt's row comes out of the model as NaN
        part, logits = real(prompts, repeats)
        rows = torch.repeat_interleave(torch.arange(len(prompts)), repeats)
        poisoned = torch.tensor([prompts[i] == TOK.encode("zzz") for i in rows.tolist()])
        return part, logits.masked_fill(poisoned[:, None], float("nan"))

    batcher.runner.prefill = prefill
    tokens, errors = outputs(batcher, [("nan", "zzz", SamplingParams(max_tokens=4, temperature=0))])
    assert set(errors) == {"nan"}
    assert {k: tokens[k] for k in want} == want
