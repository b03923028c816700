import shutil
import time

import pytest

from lmforge import load, load_model
from lmforge.hub import pull, resolve
from lmforge.models import ModelError


def test_hub_id_offline_fails_at_once_saying_how_to_pass_a_local_copy():
    start = time.monotonic()
    with pytest.raises(ModelError, match="copy the model folder or .gguf file to this machine and pass its path"):
        load_model("someone/some-model-that-is-not-pulled")
    with pytest.raises(ModelError, match="--model /models/x.Q8_0.gguf"):
        pull("someone/some-model", "x.Q8_0.gguf")
    assert time.monotonic() - start < 2  # no retries


def test_a_pulled_model_is_found_by_its_hub_id(tmp_path, monkeypatch):
    """`lmforge pull` keeps a repo under LMFORGE_HOME/models/OWNER--NAME; its id then loads it offline."""
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path))
    shutil.copytree(resolve("demo-gpt2"), tmp_path / "models" / "someone--tiny-gpt2")
    model, tok = load("someone/tiny-gpt2")
    assert model.family == "gpt2" and tok is not None


def test_missing_local_path():
    with pytest.raises(ModelError, match="does not exist"):
        load_model("./no/such/model")


def test_packaged_minilm_loads_with_its_tokenizer():
    model, tok = load("all-MiniLM-L6-v2")
    assert model.family == "bert" and model.task == "base"
    batch = tok(["hello world", "a longer sentence about cats"], padding=True)
    vectors = model.embed(batch["input_ids"], batch["attention_mask"])
    assert vectors.shape == (2, 384)
    assert vectors.norm(dim=-1).sub(1).abs().max() < 1e-5
