"""Loading a model for serving: int8 weights where they keep quality, the model's card, its chat template."""
import pytest
from torch import nn

from lmforge.models import ModelError
from lmforge.models.quantize import Int8Linear
from lmforge.serve.served import load_served


def test_auto_quantizes_decoders_to_int8_and_says_so():
    served = load_served("demo-gpt2")
    assert served.card.quantization == "int8"
    int8 = [m for m in served.model.modules() if isinstance(m, Int8Linear)]
    assert len(int8) > len([m for m in served.model.modules() if isinstance(m, nn.Linear)])
    assert served.card.demo and served.card.description.startswith("Demo: a tiny GPT-2")
    assert served.card.parameters == 1_334_016  # counted before the int8 layers replace the float ones
    assert served.card.context_length == served.model.config.n_positions


def test_other_families_and_none_keep_float_weights():
    t5 = load_served("demo-t5")
    assert t5.card.quantization == "none" and any(isinstance(m, nn.Linear) for m in t5.model.modules())
    gpt2 = load_served("demo-gpt2", quantization="none")
    assert gpt2.card.quantization == "none" and any(isinstance(m, nn.Linear) for m in gpt2.model.modules())


def test_int4_is_refused_with_the_reason():
    with pytest.raises(ModelError, match="int4"):
        load_served("demo-gpt2", quantization="int4")


def test_a_model_that_cannot_load_is_left_out_and_the_others_served(tmp_path, caplog):
    from lmforge.serve import Settings
    from lmforge.serve.app import load_models

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 7)  # a header cut short
    settings = Settings(home=tmp_path, models=["demo-gpt2", str(broken)], quantize="none")
    served = load_models(settings)
    assert [m.name for m in served] == ["demo-gpt2"]
    assert "not serving" in caplog.text and "broken.gguf" in caplog.text
    with pytest.raises(ModelError, match="no model could be loaded"):
        load_models(Settings(home=tmp_path, models=[str(broken)]))
