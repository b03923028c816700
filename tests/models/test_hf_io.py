"""Bad model folders give one clear sentence (ModelError), never a traceback from deep inside."""
import json

import pytest
import torch

from lmforge.models import ModelError, load_model
from lmforge.models.presets import TINY, make_config
from lmforge.models.hf_io import FAMILIES, model_class


def write_config(folder, **fields):
    (folder / "config.json").write_text(json.dumps(fields))


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="is not a folder"):
        load_model(tmp_path / "nope")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        load_model(tmp_path)


def test_invalid_json_names_line(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "model_type": "bert",\n  oops\n}')
    with pytest.raises(ModelError, match=r"config.json: invalid JSON at line 3"):
        load_model(tmp_path)


def test_missing_model_type(tmp_path):
    write_config(tmp_path, hidden_size=8)
    with pytest.raises(ModelError, match="no 'model_type'"):
        load_model(tmp_path)


def test_unknown_model_type(tmp_path):
    write_config(tmp_path, model_type="mamba")
    with pytest.raises(ModelError, match=r"unknown model_type 'mamba'.*bert, roberta, gpt2, xlnet, t5, llama, mistral"):
        load_model(tmp_path)


def test_config_without_weights(tmp_path):
    write_config(tmp_path, model_type="gpt2", n_layer=1, n_embd=8, n_head=2, vocab_size=16)
    with pytest.raises(ModelError, match="no weights; expected one of model.safetensors"):
        load_model(tmp_path)


def test_corrupt_safetensors(tmp_path):
    write_config(tmp_path, model_type="gpt2", n_layer=1, n_embd=8, n_head=2, vocab_size=16)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="model.safetensors is not a readable safetensors file"):
        load_model(tmp_path)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_round_trip_and_strictness(tmp_path, model_type):
    """save -> load gives the same weights; an extra or a missing tensor is refused, with the key named."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    cls = model_class(model_type)
    model = cls(make_config(model_type, **TINY), "lm")
    model.save_pretrained(tmp_path)
    again = load_model(tmp_path)
    assert again.task == "lm" and again.family == model.family
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name

    state = load_file(tmp_path / "model.safetensors")
    save_file({**state, "surprise.weight": torch.zeros(3)}, tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match="does not use, e.g. 'surprise.weight'"):
        load_model(tmp_path)
    dropped = sorted(state)[0]
    save_file({k: v for k, v in state.items() if k != dropped}, tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match=f"lacks weight '{dropped}'"):
        load_model(tmp_path)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_wrong_shape_names_key_and_shapes(tmp_path, model_type):
    from safetensors.torch import load_file, save_file

    model_class(model_type)(make_config(model_type, **TINY), "lm").save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    key = next(k for k, v in state.items() if v.dim() == 2)
    bad = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    save_file({**state, key: bad}, tmp_path / "model.safetensors")
    with pytest.raises(ModelError) as e:
        load_model(tmp_path)
    assert key in str(e.value) and str(list(bad.shape)) in str(e.value)


def test_unknown_task(tmp_path):
    with pytest.raises(ModelError, match="has no task 'translate'"):
        model_class("bert")(make_config("bert", **TINY), "translate")


def test_head_lmforge_lacks_is_named_and_its_backbone_loads(tmp_path):
    """A multiple-choice checkpoint: clear error by default; task='base' loads the backbone as transformers
    does, dropping the foreign head."""
    transformers = pytest.importorskip("transformers")
    config = transformers.RobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=37, max_position_embeddings=40)
    torch.manual_seed(0)
    transformers.RobertaForMultipleChoice(config).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="names RobertaForMultipleChoice, a head lmforge's roberta does not"):
        load_model(tmp_path)
    ours = load_model(tmp_path, task="base")
    theirs = transformers.RobertaModel.from_pretrained(tmp_path, add_pooling_layer=False).eval()
    ids = torch.randint(3, 99, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).last_hidden_state, atol=1e-5, rtol=1e-4)


def test_activations_match_transformers():
    transformers = pytest.importorskip("transformers")
    from transformers.activations import ACT2FN

    from lmforge.models.layers import ACTIVATIONS

    x = torch.linspace(-6, 6, 1001)
    for name, fn in ACTIVATIONS.items():
        torch.testing.assert_close(fn(x), ACT2FN[name](x), atol=1e-6, rtol=1e-5, msg=name)
