"""A studio app on a temporary SQLite database, with the hashing embedder (no model needed) and training
inside the request, driven through Starlette's TestClient. `studio_app(home)` builds another instance on
the same database (a restart)."""
import re

import pytest
import torch
from fastapi.testclient import TestClient

from lmforge.models.hf_io import model_class
from lmforge.models.presets import make_config
from lmforge.serve import Settings, create_app
from lmforge.serve.served import serve_model
from lmforge.store import Database
from lmforge.studio.security import create_user
from lmforge.tokenizer import train_tokenizer

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _studio_env(monkeypatch):
    monkeypatch.setenv("LMFORGE_STUDIO_EMBEDDER", "hashing")
    monkeypatch.setenv("LMFORGE_STUDIO_TRAIN_IN_THREAD", "false")
    # Stored conversations are PII-redacted; the NER model would redact the places in the test questions
    # ("do you ship to norway"). Its redaction is tested in tests/safety; here only the patterns run.
    monkeypatch.setenv("LMFORGE_PII_NER", "0")


def make_client(home, models=()) -> TestClient:
    settings = Settings(home=home, port=8000)
    return TestClient(create_app(settings, list(models)), base_url="http://testserver")


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD):
    page = client.get("/studio/login")
    r = client.post("/studio/login", data={"username": username, "password": password, "next": "/studio/",
                                           "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    return r


class Browser:
    """A signed-in client plus its CSRF token."""

    def __init__(self, client: TestClient, username: str):
        r = sign_in(client, username)
        assert r.status_code == 303, r.text
        self.client = client
        self.csrf = csrf_of(client.get("/studio/").text)

    def post(self, url, data=None, **kw):
        return self.client.post(url, data={**(data or {}), "csrf_token": self.csrf}, follow_redirects=False, **kw)

    def json(self, url, body):
        return self.client.post(url, json=body, headers={"X-CSRF-Token": self.csrf, "Accept": "application/json"})

    def get(self, url, **kw):
        return self.client.get(url, **kw)

    def create_bot(self, template="customer_service", **fields) -> int:
        r = self.post("/studio/bots", {"template": template, **fields})
        assert r.status_code == 303, r.text
        return int(r.headers["location"].rsplit("/", 1)[1])


@pytest.fixture
def home(tmp_path):
    db = Database(Settings(home=tmp_path).database)
    db.migrate()
    create_user(db, "alice", PASSWORD, workspace="team-a")
    create_user(db, "bob", PASSWORD, workspace="team-b")
    db.dispose()
    return tmp_path


@pytest.fixture
def client(home):
    with make_client(home) as c:
        yield c


@pytest.fixture
def alice(client):
    return Browser(client, "alice")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "c.txt"
    corpus.write_text("the cat sat on the mat\nUser: hello\nAssistant: hello there, how can I help\n" * 20)
    tok = train_tokenizer("gpt2", [corpus], vocab_size=150)
    torch.manual_seed(0)
    model = model_class("gpt2")(make_config("gpt2", layers=1, hidden=32, heads=2, ffn=64, max_len=64,
                                            vocab=tok.vocab_size), "lm").eval()
    return serve_model(model, tok, "tiny-gpt2")
