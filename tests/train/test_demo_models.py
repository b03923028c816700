import pytest
import torch

import lmforge
from lmforge import demo_models


def test_every_family_has_a_small_demo_model():
    assert demo_models.available() == list(demo_models.FAMILIES)
    total = sum(f.stat().st_size for f in demo_models.FOLDER.rglob("*") if f.is_file())
    assert total < 30e6


@pytest.mark.parametrize("family", demo_models.FAMILIES)
def test_demo_model_loads_with_tokenizer_and_card(family):
    folder = demo_models.path(family)
    model, tok = lmforge.load(folder)
    assert model.family == family and tok is not None
    card = (folder / "README.md").read_text()
    assert "validation loss" in card and "objective" in card and "steps" in card
    ids = torch.tensor([tok.encode("Once upon a time the king said")])
    kwargs = {"decoder_input_ids": ids[:, :3]} if family == "t5" else {}
    with torch.no_grad():
        assert torch.isfinite(model(ids, **kwargs).logits).all()


def test_unknown_demo_model():
    with pytest.raises(lmforge.ModelError, match="no bundled demo model"):
        demo_models.path("llama")
