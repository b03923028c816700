"""The API driven by the official `openai` client, end to end over HTTP."""
import json

import httpx
import numpy as np
import pytest


def test_models_and_health(server, key):
    ids = [m.id for m in server.client(key).models.list().data]
    assert ids == ["tiny-gpt2", "tiny-t5", "tiny-bert"]
    assert server.client(key).models.retrieve("tiny-t5").id == "tiny-t5"
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["models"] == sorted(ids) and health["components"]["database"]["status"] == "ok"


def test_models_carry_their_card(server, key):
    """Each model says what it is, how big, how much context and in what precision it is served."""
    cards = {m["id"]: m for m in httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
             .json()["data"]}
    gpt2 = cards["tiny-gpt2"]
    assert gpt2["max_model_len"] == 64
    meta = gpt2["metadata"]
    assert meta["family"] == "gpt2" and meta["kind"] == "generate" and meta["quantization"] == "none"
    assert meta["parameters"] == server.app_state.models["tiny-gpt2"].model.num_parameters()
    assert meta["description"] == "A gpt2 model (tiny-gpt2)." and meta["demo"] is False
    assert cards["tiny-bert"]["metadata"]["kind"] == "embed"
    assert server.client(key).models.retrieve("tiny-t5").model_extra["metadata"]["family"] == "t5"


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-t5"])
def test_completion_usage_counts_token_ids(server, key, model):
    client = server.client(key)
    r = client.completions.create(model=model, prompt="the cat sat", max_tokens=7, temperature=0)
    served = server.app_state.models[model]
    assert r.object == "text_completion" and r.model == model
    [choice] = r.choices
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == len(served.tokenizer.encode("the cat sat"))
    assert 1 <= r.usage.completion_tokens <= 7
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 7


def test_greedy_completion_matches_library_generate(server, key):
    from lmforge.generate import SamplingParams, generate

    served = server.app_state.models["tiny-gpt2"]
    [expected] = generate(served.model, served.tokenizer, "a dog ran", SamplingParams(max_tokens=10, temperature=0))
    r = server.client(key).completions.create(model="tiny-gpt2", prompt="a dog ran", max_tokens=10, temperature=0)
    assert r.choices[0].text == expected.text
    assert r.usage.completion_tokens == len(expected.token_ids)


def test_n_choices_seed_reproducibility(server, key):
    client = server.client(key)
    kw = dict(model="tiny-gpt2", prompt="the sun", max_tokens=12, n=3, temperature=1.0, logit_bias={0: -100})
    a = client.completions.create(seed=11, **kw)
    b = client.completions.create(seed=11, **kw)
    c = client.completions.create(seed=12, **kw)
    assert [x.index for x in a.choices] == [0, 1, 2]
    assert [x.text for x in a.choices] == [x.text for x in b.choices]
    assert [x.text for x in a.choices] != [x.text for x in c.choices]
    assert a.usage.completion_tokens == 36  # eos is banned: 3 choices x 12 tokens


def test_stop_sequence_is_cut(server, key):
    client = server.client(key)
    kw = dict(model="tiny-gpt2", prompt="the", max_tokens=20, temperature=0, logit_bias={0: -100})
    full = client.completions.create(**kw).choices[0].text
    stop = full[4:7]
    r = client.completions.create(stop=[stop], **kw)
    assert r.choices[0].text == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_logprobs(server, key):
    r = server.client(key).completions.create(model="tiny-gpt2", prompt="the cat", max_tokens=4, temperature=0,
                                              logprobs=3, logit_bias={0: -100})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 3 and chosen <= 0
        assert chosen == pytest.approx(max(top.values()), abs=1e-5)  # greedy picks the most likely token
    assert "".join(lp.tokens) == r.choices[0].text


def test_streaming_completion_adds_up_and_ends_with_done(server, key):
    client = server.client(key)
    kw = dict(model="tiny-gpt2", prompt="the cat", max_tokens=10, temperature=0)
    whole = client.completions.create(**kw).choices[0].text
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].usage.completion_tokens >= 1 and chunks[-1].choices == []
    with server.http(key) as http:
        raw = http.post("/v1/completions", json={**kw, "stream": True}).text
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-t5"])
def test_chat_completion_and_stream(server, key, model):
    client = server.client(key)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    served = server.app_state.models[model]
    assert r.usage.prompt_tokens == len(served.tokenizer.encode(served.chat_template.render(messages)))
    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == r.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_chat_n_logprobs_and_stop(server, key):
    client = server.client(key)
    r = client.chat.completions.create(model="tiny-gpt2", messages=[{"role": "user", "content": "the cat"}],
                                       max_tokens=6, n=2, seed=5, temperature=0.8, logprobs=True, top_logprobs=2,
                                       stop=["zzz"])
    assert len(r.choices) == 2
    for c in r.choices:
        entries = c.logprobs.content
        assert entries and all(len(e.top_logprobs) == 2 for e in entries)
        assert "".join(e.token for e in entries).startswith(c.message.content)


def test_embeddings_float_and_base64(server, key):
    client = server.client(key)
    r = client.embeddings.create(model="tiny-bert", input=["the cat sat", "a dog ran"])  # client asks for base64
    assert len(r.data) == 2 and len(r.data[0].embedding) == 64
    assert np.linalg.norm(r.data[0].embedding) == pytest.approx(1.0, abs=1e-4)
    f = client.embeddings.create(model="tiny-bert", input="the cat sat", encoding_format="float")
    assert f.data[0].embedding == pytest.approx(r.data[0].embedding, abs=1e-6)
    served = server.app_state.models["tiny-bert"]
    assert f.usage.prompt_tokens == len(served.tokenizer.encode("the cat sat"))


def test_metrics_expose_requests_tokens_latency_batch_queue(server, key):
    server.client(key).completions.create(model="tiny-gpt2", prompt="the", max_tokens=2)
    text = httpx.get(server.url + "/metrics").text
    for name in ("lmforge_requests_total", "lmforge_tokens_total", "lmforge_request_latency_seconds_bucket",
                 "lmforge_batch_size_bucket", "lmforge_queue_depth", "lmforge_time_to_first_token_seconds_bucket"):
        assert name in text
    assert 'lmforge_requests_total{endpoint="/v1/completions",status="200"}' in text
