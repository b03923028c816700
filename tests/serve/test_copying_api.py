"""The verbatim-copy check as response metadata: `check_copying: true` adds each choice's longest overlap with
the server's corpus index (LMFORGE_COPY_INDEX); without it responses keep OpenAI's shape."""
import pytest

from lmforge.safety.copying import CopyIndex, words
from lmforge.serve import Settings, create_app
from lmforge.serve.served import load_served

from .conftest import Server, free_port


@pytest.fixture(scope="module")
def copy_server(tmp_path_factory):
    """The bundled demo GPT-2: trained, so its greedy text is words that an index can hold."""
    home = tmp_path_factory.mktemp("copy")
    settings = Settings(home=home, port=free_port(), copy_index=home / "index", copy_threshold=6)
    with Server(create_app(settings, [load_served("demo-gpt2")]), settings) as s:
        yield s


def test_a_completion_found_in_the_corpus_is_flagged_with_its_source(copy_server):
    key = copy_server.key("copy")
    client = copy_server.client(key)
    ask = dict(model="demo-gpt2", prompt="The king said", max_tokens=24, temperature=0,
               logit_bias={"0": -100})  # no early end-of-text
    text = client.completions.create(**ask).choices[0].text
    n_words = len(words(text)[0])
    assert n_words >= 6, text  # enough words to overlap
    # The corpus holds that exact text (greedy decoding repeats it) between unrelated words.
    docs = [("unrelated.txt", "nothing here resembles it at all"), ("books.txt", f"zebra quartz {text} vortex")]
    CopyIndex.build(docs, n=4).save(copy_server.settings.copy_index)

    raw = copy_server.http(key).post("/v1/completions", json=ask).json()
    assert "copying" not in raw["choices"][0]  # not asked: OpenAI's shape
    checked = copy_server.http(key).post("/v1/completions", json={**ask, "check_copying": True}).json()
    report = checked["choices"][0]["copying"]
    assert checked["choices"][0]["text"] == text
    assert report["flagged"] and report["source"] == "books.txt"
    assert report["longest_overlap_words"] == n_words and report["copied_fraction"] == 1.0

    chat = client.chat.completions.create(model="demo-gpt2", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=8, temperature=0, extra_body={"check_copying": True})
    assert chat.choices[0].model_extra["copying"]["threshold_words"] == 6


def test_copy_check_errors_name_the_parameter(copy_server, server, key):
    ask = dict(model="tiny-gpt2", prompt="the cat", max_tokens=4, check_copying=True)
    r = server.http(key).post("/v1/completions", json=ask)  # the shared server has no index configured
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "copy_check_unavailable" and r.json()["error"]["param"] == "check_copying"
    r = copy_server.http(copy_server.key("copy-stream")).post(
        "/v1/completions", json={**ask, "model": "demo-gpt2", "stream": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "check_copying"
