"""A real server for the API tests: tiny random GPT-2 and T5 (tokenizers trained on a few sentences) and a
tiny BERT embedder, served by uvicorn on a free port in a background thread, with SQLite in a temp dir."""
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn

from lmforge.models.hf_io import model_class
from lmforge.models.presets import make_config
from lmforge.serve import Settings, create_app
from lmforge.serve.auth import create_key
from lmforge.serve.served import serve_model
from lmforge.store import Database
from lmforge.tokenizer import train_tokenizer

CORPUS = "\n".join([
    "the cat sat on the mat and looked at the red ball",
    "a dog ran to the park with a stick in its mouth",
    "User: hello there\nAssistant: hello, how can I help you today",
    "the sun is bright and the sky is blue over the quiet town",
] * 20)
SIZES = dict(layers=2, hidden=64, heads=4, ffn=128, max_len=64)
CONTEXT = 64


def build(family: str, corpus: Path, task: str = "lm"):
    tok = train_tokenizer({"bert": "bert"}.get(family, family), [corpus], vocab_size=200)
    torch.manual_seed(0)
    config = make_config(family, **SIZES, vocab=tok.vocab_size)
    if family == "t5":
        config.pad_token_id = config.decoder_start_token_id = tok.pad_token_id
        config.eos_token_id = tok.eos_token_id
    model = model_class(family)(config, task).eval()
    if family != "bert":
        # sharpen the random weights a little so that outputs vary with the prompt and the seed
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.mul_(8)
    return model, tok


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, app, settings):
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.app_state = self.server.config.app.state.lmforge
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def db(self) -> Database:
        return self.app_state.db

    def key(self, name: str, **limits) -> str:
        return create_key(self.db, name, **limits)[1]

    def client(self, key: str, **kw) -> openai.OpenAI:
        return openai.OpenAI(api_key=key, base_url=self.url + "/v1", max_retries=0, timeout=60, **kw)

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text(CORPUS)
    gpt2 = serve_model(*build("gpt2", corpus), "tiny-gpt2")
    t5 = serve_model(*build("t5", corpus), "tiny-t5")
    bert = serve_model(*build("bert", corpus, task="base"), "tiny-bert")
    return [gpt2, t5, bert]


@pytest.fixture(scope="session")
def server(tiny_models, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, port=free_port(), max_body_bytes=20_000)
    with Server(create_app(settings, tiny_models), settings) as s:
        yield s


@pytest.fixture(scope="session")
def key(server) -> str:
    return server.key("tests")
