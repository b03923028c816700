"""Beam search through the API (lmforge's `num_beams` extension): the library's answer, and clear 400s."""
import json

import pytest

from lmforge.generate import SamplingParams, generate
from lmforge.serve import Settings, create_app
from lmforge.serve.served import serve_model

from .conftest import CORPUS, Server, build, free_port
from .test_errors import COMPLETION, error

BEAMS = dict(num_beams=4, n=2, length_penalty=0.5, early_stopping=True)


def test_completion_with_beams_equals_library_and_streams_once(server, key):
    served = server.app_state.models["tiny-t5"]
    expected = generate(served.model, served.tokenizer, "the cat sat", SamplingParams(max_tokens=8, **BEAMS))
    client = server.client(key)
    r = client.completions.create(model="tiny-t5", prompt="the cat sat", max_tokens=8, extra_body=BEAMS)
    assert [c.text for c in r.choices] == [c.text for c in expected]
    assert [c.finish_reason for c in r.choices] == [c.finish_reason for c in expected]
    assert r.usage.completion_tokens == sum(len(c.token_ids) for c in expected)
    chunks = list(client.completions.create(model="tiny-t5", prompt="the cat sat", max_tokens=8, stream=True,
                                            extra_body=BEAMS))
    assert sorted((c.index, c.text) for chunk in chunks for c in chunk.choices) == \
        [(i, c.text) for i, c in enumerate(expected)]


def test_chat_with_beams_on_gpt2(server, key):
    r = server.client(key).chat.completions.create(model="tiny-gpt2", messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=6, extra_body={"num_beams": 3})
    assert len(r.choices) == 1 and r.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("body, param", [
    ({"num_beams": 2, "n": 3}, "n"),
    ({"num_beams": 2, "top_p": 0.5}, "top_p"),
    ({"num_beams": 2, "logprobs": 1}, "logprobs"),
    ({"num_beams": 17}, "num_beams"),
    ({"num_beams": 2, "early_stopping": "sometimes"}, "early_stopping"),
])
def test_conflicting_beam_settings_are_400(server, key, body, param):
    with server.http(key) as http:
        error(http.post("/v1/completions", json={**COMPLETION, "model": "tiny-t5", **body}), 400, param)


def test_beams_for_an_unsupported_model_are_400(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    settings = Settings(home=tmp_path / "home", port=free_port())
    with Server(create_app(settings, [serve_model(*build("xlnet", corpus), "tiny-xlnet")]), settings) as s:
        key = s.key("t")
        with s.http(key) as http:
            body = {**COMPLETION, "model": "tiny-xlnet", "max_tokens": 4}
            e = error(http.post("/v1/completions", json={**body, "num_beams": 2}), 400, "num_beams",
                      "unsupported_parameter")
            assert "xlnet" in e["message"]
            ok = http.post("/v1/completions", json=body)  # and it still serves plain decoding
            assert ok.status_code == 200 and json.loads(ok.text)["choices"][0]["finish_reason"]
