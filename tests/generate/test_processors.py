import math

import pytest
import torch

from lmforge.generate import LogitBias, Penalties, SamplingParams, StopMatcher, TopK, TopP

LOGITS = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))


def kept(logits):
    return torch.isfinite(logits)[0].tolist()


@pytest.mark.parametrize("p, expected", [
    (0.5, [True, False, False, False]),   # 0.5 alone reaches 0.5
    (0.6, [True, True, False, False]),    # needs 0.5 + 0.3
    (0.81, [True, True, True, False]),
    (1.0, [True, True, True, True]),
    (0.01, [True, False, False, False]),  # the top token always stays
])
def test_top_p_keeps_smallest_nucleus(p, expected):
    assert kept(TopP(p)(None, LOGITS)) == expected


def test_top_p_respects_original_order_when_unsorted():
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]]))
    assert kept(TopP(0.6)(None, logits)) == [False, True, False, True]


def test_top_k():
    assert kept(TopK(2)(None, LOGITS)) == [True, True, False, False]


def test_penalties_follow_openai_formula():
    logits = torch.zeros(1, 4)
    generated = torch.tensor([[2, 2, 1]])
    out = Penalties(presence=0.5, frequency=0.25)(generated, logits)
    # token 2 seen twice: -0.25*2 - 0.5; token 1 once: -0.25 - 0.5; others untouched
    assert out.tolist() == [[0.0, -0.75, -1.0, 0.0]]


def test_logit_bias_adds_per_token():
    out = LogitBias({3: 100.0, 0: -100.0})(None, torch.zeros(2, 4))
    assert out.tolist() == [[-100.0, 0.0, 0.0, 100.0]] * 2


def test_pipeline_order_and_greedy_has_no_temperature():
    params = SamplingParams(temperature=0.5, top_p=0.9, top_k=3, presence_penalty=0.1)
    assert [type(p).__name__ for p in params.pipeline()] == ["Penalties", "Temperature", "TopK", "TopP"]
    assert SamplingParams(temperature=0).pipeline() == []


@pytest.mark.parametrize("field, value", [("temperature", 3), ("top_p", 0), ("n", 0), ("max_tokens", 0),
                                          ("presence_penalty", -3), ("logprobs", 21), ("stop", ["a"] * 9)])
def test_bad_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_stop_matcher_finds_earliest_and_holds_back_prefixes():
    m = StopMatcher(["\n\n", "END"])
    assert m.find("abc END x\n\n") == 4
    assert m.find("nothing") is None
    assert m.safe_prefix("hello E") == "hello "     # "E" may start "END"
    assert m.safe_prefix("hello EN") == "hello "
    assert m.safe_prefix("hello\n") == "hello"      # "\n" may start "\n\n"
    assert m.safe_prefix("hello") == "hello"
