import pytest

from lmforge import load, load_model
from lmforge.models import ModelError


def test_hub_id_offline_says_how_to_pass_a_folder():
    with pytest.raises(ModelError, match="pass its local folder"):
        load_model("someone/some-model-that-is-not-cached")


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
