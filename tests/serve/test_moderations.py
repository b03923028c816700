"""POST /v1/moderations through the official client, and its errors as OpenAI error objects."""
import openai
import pytest

from lmforge.safety.moderation import moderation_response


def test_moderations_score_each_input_in_openai_shape(server, key):
    """The endpoint serves the shipped moderation model unchanged (its quality is tested in tests/safety)."""
    texts = ["have a lovely day at the beach", "you are a worthless stupid idiot"]
    r = server.client(key).moderations.create(input=texts)
    expected = moderation_response(texts)
    assert r.model == expected["model"] and len(r.results) == 2
    for got, want in zip(r.results, expected["results"]):
        assert got.flagged == want["flagged"]
        assert got.category_scores.harassment == pytest.approx(want["category_scores"]["harassment"])
        assert got.category_scores.hate == pytest.approx(want["category_scores"]["hate"])


def test_moderations_need_a_key_and_valid_input(server, key):
    assert server.http().post("/v1/moderations", json={"input": "hi"}).status_code == 401
    r = server.http(key).post("/v1/moderations", json={"input": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    with pytest.raises(openai.AuthenticationError):
        server.client("lmf-wrong").moderations.create(input="hi")
