"""T5 v1.0 and v1.1 against transformers: checkpoints both ways, masks, losses, the decoder cache, the buckets."""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers.models.t5.modeling_t5 import T5Attention

from lmforge.models import ModelError, load_model
from lmforge.models.t5 import T5Config, T5Model, relative_position_bucket

transformers.logging.set_verbosity_error()

VERSIONS = {
    "v1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}
TASKS = ["base", "lm", "encoder", "classification", "qa"]
HF_CLASS = {task: getattr(transformers, name) for task, name in T5Model.architectures.items()}
# Few buckets and a short max_distance so these short sequences reach the logarithmic and the clipped buckets.
SIZES = dict(
    vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=3, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=12, decoder_start_token_id=0,
)
ATOL = 1e-5


def hf_model(version: str, task: str, seed: int = 0):
    """A random transformers model; v1.1's LM head is made really separate from the embedding."""
    torch.manual_seed(seed)
    model = HF_CLASS[task](transformers.T5Config(**SIZES, **VERSIONS[version])).eval()
    if task == "lm" and version == "v1.1":
        # transformers 5 builds every T5 LM head tied and unties it only for checkpoints that differ.
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    return model


def batch(seed: int = 1) -> dict:
    """Three rows: full, right-padded, left-padded; each real part ends with eos (id 1) for classification."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, SIZES["vocab_size"], (3, 14), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, :4] = 0
    ids[0, -1], ids[1, 8], ids[2, -1] = 1, 1, 1
    ids[mask == 0] = 0
    dec = torch.randint(2, SIZES["vocab_size"], (3, 13), generator=g)
    dec_mask = torch.ones_like(dec)
    dec_mask[1, 10:] = 0
    labels = dec.clone()
    labels[1, 10:] = -100
    return dict(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask,
                lm_labels=labels)


def hf_outputs(model, task: str, b: dict, with_labels: bool = True):
    """(main output, loss) of a transformers model in our conventions."""
    kw = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    if task in ("base", "lm"):
        kw |= dict(decoder_input_ids=b["decoder_input_ids"], decoder_attention_mask=b["decoder_attention_mask"])
    if with_labels and task == "lm":
        kw["labels"] = b["lm_labels"]
    if with_labels and task == "classification":
        kw["labels"] = torch.tensor([0, 1, 1])
    if with_labels and task == "qa":
        kw |= dict(start_positions=torch.tensor([1, 2, 5]), end_positions=torch.tensor([3, 40, 6]))
    with torch.no_grad():
        out = model(**kw)
    if task == "qa":
        return torch.stack([out.start_logits, out.end_logits], -1), out.loss
    if task in ("base", "encoder"):
        return out.last_hidden_state, None
    return out.logits, out.loss


def our_outputs(model, task: str, b: dict, with_labels: bool = True):
    kw = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    if task in ("base", "lm"):
        kw |= dict(decoder_input_ids=b["decoder_input_ids"], decoder_attention_mask=b["decoder_attention_mask"])
    if with_labels:
        kw["labels"] = {"lm": b["lm_labels"], "classification": torch.tensor([0, 1, 1]),
                        "qa": torch.tensor([[1, 3], [2, 40], [5, 6]])}.get(task)
    with torch.no_grad():
        out = model(**kw)
    return out.logits, out.loss


def assert_match(task: str, b: dict, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Compare on real tokens only: padded positions carry no meaning in either implementation."""
    assert ours.shape == theirs.shape
    if task == "encoder":
        keep = b["attention_mask"].bool()
    elif task in ("base", "lm"):
        keep = b["decoder_attention_mask"].bool()
    else:
        keep = torch.ones(ours.shape[0], dtype=torch.bool) if ours.dim() == 2 else None
    if keep is not None:
        ours, theirs = ours[keep], theirs[keep]
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-5)


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """One transformers checkpoint per (version, task), written once for the module."""
    root = tmp_path_factory.mktemp("hf")
    folders = {}
    for version in VERSIONS:
        for task in TASKS:
            folders[version, task] = root / f"{version}-{task}"
            hf_model(version, task).save_pretrained(folders[version, task])
    return folders


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("version", VERSIONS)
def test_transformers_checkpoint_loads_and_matches(hf_folders, version, task):
    theirs = HF_CLASS[task].from_pretrained(hf_folders[version, task]).eval()
    ours = load_model(hf_folders[version, task])
    assert ours.family == "t5" and ours.task == task
    assert ours.config.scale_decoder_outputs == (version == "v1.0")
    if task == "lm":
        assert ours.config.tie_word_embeddings == (version == "v1.0")
    b = batch()
    (o, o_loss), (t, t_loss) = our_outputs(ours, task, b), hf_outputs(theirs, task, b)
    assert_match(task, b, o, t)
    if t_loss is not None:
        torch.testing.assert_close(o_loss, t_loss, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("version", VERSIONS)
def test_our_checkpoint_loads_in_transformers(tmp_path, version, task):
    torch.manual_seed(3)
    ours = T5Model(T5Config.from_hf(SIZES | VERSIONS[version]), task).eval()
    ours.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert ("lm_head.weight" in saved) == (task == "lm" and version == "v1.1")
    theirs = HF_CLASS[task].from_pretrained(tmp_path).eval()
    b = batch(seed=2)
    (o, o_loss), (t, t_loss) = our_outputs(ours, task, b), hf_outputs(theirs, task, b)
    assert_match(task, b, o, t)
    if t_loss is not None:
        torch.testing.assert_close(o_loss, t_loss, atol=ATOL, rtol=1e-5)
    # and back: our own folder round-trips exactly
    again = load_model(tmp_path)
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), again.parameters(), strict=True))


def test_hub_layout_with_tied_copies_loads(hf_folders, tmp_path):
    """Hub checkpoints carry embed_tokens/lm_head copies, the unused cross-attention bias, tie_word_embeddings:
    false for v1.1 and no scale_decoder_outputs key."""
    for version in VERSIONS:
        folder = tmp_path / version
        theirs = hf_model(version, "lm")
        theirs.save_pretrained(folder)
        state = load_file(folder / "model.safetensors")
        for copy in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            state[copy] = state["shared.weight"].clone()
        state.setdefault("lm_head.weight", state["shared.weight"].clone())
        state["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = torch.zeros(8, 4)
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        config = json.loads((folder / "config.json").read_text())
        config.pop("scale_decoder_outputs", None)
        config["tie_word_embeddings"] = version == "v1.0"
        (folder / "config.json").write_text(json.dumps(config))
        ours = load_model(folder)
        b = batch()
        assert_match("lm", b, our_outputs(ours, "lm", b)[0], hf_outputs(theirs, "lm", b)[0])


def test_v11_with_the_head_transformers_ties_loads(tmp_path):
    """transformers 5 builds a v1.1 model with its LM head tied to `shared` (no rescaling) and saves no
    lm_head.weight; loading must tie too, not ask for the missing tensor, and saving must round-trip."""
    torch.manual_seed(0)
    theirs = HF_CLASS["lm"](transformers.T5Config(**SIZES, **VERSIONS["v1.1"])).eval()
    theirs.save_pretrained(tmp_path / "hf")
    assert "lm_head.weight" not in load_file(tmp_path / "hf" / "model.safetensors")
    ours = load_model(tmp_path / "hf")
    assert ours.head.weight is ours.shared.weight and not ours.config.scale_decoder_outputs
    b = batch()
    assert_match("lm", b, our_outputs(ours, "lm", b)[0], hf_outputs(theirs, "lm", b)[0])
    ours.save_pretrained(tmp_path / "ours")
    again = HF_CLASS["lm"].from_pretrained(tmp_path / "ours").eval()
    assert_match("lm", b, our_outputs(ours, "lm", b)[0], hf_outputs(again, "lm", b)[0])


def test_tied_head_is_one_parameter():
    tied = T5Model(T5Config.from_hf(SIZES | VERSIONS["v1.0"]), "lm")
    assert tied.head.weight is tied.shared.weight
    assert "head.weight" not in dict(tied.named_parameters())
    untied = T5Model(T5Config.from_hf(SIZES | VERSIONS["v1.1"]), "lm")
    assert untied.head.weight is not untied.shared.weight


@pytest.mark.parametrize("version", VERSIONS)
def test_incremental_decoding_with_cache_equals_full_pass(hf_folders, version):
    ours = load_model(hf_folders[version, "lm"])
    b = batch()
    dec = b["decoder_input_ids"]
    full = ours(b["input_ids"], b["attention_mask"], decoder_input_ids=dec)
    assert full.past_key_values is None
    # a 3-token prompt, then one token at a time, reusing the encoder output and the cache
    out = ours(b["input_ids"], b["attention_mask"], decoder_input_ids=dec[:, :3], use_cache=True)
    steps, cache = [out.logits], out.past_key_values
    for t in range(3, dec.shape[1]):
        cross_k = cache[0][2]
        out = ours(attention_mask=b["attention_mask"], decoder_input_ids=dec[:, t : t + 1],
                   encoder_outputs=full.encoder_last_hidden_state, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        assert cache[0][2] is cross_k  # cross-attention k/v computed once
        assert cache[0][0].shape == (3, 4, t + 1, 8)  # self-attention k/v grow
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full.logits, atol=ATOL, rtol=1e-5)
    # the full pass itself is transformers' (no decoder mask here)
    theirs = HF_CLASS["lm"].from_pretrained(hf_folders[version, "lm"]).eval()
    with torch.no_grad():
        ref = theirs(input_ids=b["input_ids"], attention_mask=b["attention_mask"], decoder_input_ids=dec).logits
    torch.testing.assert_close(full.logits.detach(), ref, atol=ATOL, rtol=1e-5)


def test_incremental_decoding_with_decoder_mask(hf_folders):
    """A decoder_attention_mask covering past + new tokens (left-padded prompts) gives the full pass's values."""
    ours = load_model(hf_folders["v1.1", "lm"])
    b = batch()
    dec, dmask = b["decoder_input_ids"], torch.ones_like(b["decoder_input_ids"])
    dmask[0, :2] = 0
    full = ours(b["input_ids"], b["attention_mask"], decoder_input_ids=dec, decoder_attention_mask=dmask)
    out = ours(b["input_ids"], b["attention_mask"], decoder_input_ids=dec[:, :4],
               decoder_attention_mask=dmask[:, :4], use_cache=True)
    steps = [out.logits]
    for t in range(4, dec.shape[1]):
        out = ours(attention_mask=b["attention_mask"], decoder_input_ids=dec[:, t : t + 1],
                   decoder_attention_mask=dmask[:, : t + 1], encoder_outputs=out.encoder_last_hidden_state,
                   past_key_values=out.past_key_values, use_cache=True)
        steps.append(out.logits)
    keep = dmask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[keep], full.logits[keep], atol=ATOL, rtol=1e-5)


def test_labels_are_shifted_right_like_transformers(hf_folders):
    ours = load_model(hf_folders["v1.0", "lm"])
    theirs = HF_CLASS["lm"].from_pretrained(hf_folders["v1.0", "lm"]).eval()
    labels = batch()["lm_labels"]
    torch.testing.assert_close(ours.shift_right(labels), theirs._shift_right(labels))
    b = batch()
    with torch.no_grad():
        o = ours(b["input_ids"], b["attention_mask"], labels=labels)
        t = theirs(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels)
    torch.testing.assert_close(o.loss, t.loss, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(o.logits, t.logits, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 12), (16, 20)])
def test_relative_buckets_match_transformers(bidirectional, num_buckets, max_distance):
    distances = torch.arange(-400, 401)[None, :]
    ours = relative_position_bucket(distances, bidirectional, num_buckets, max_distance)
    theirs = T5Attention._relative_position_bucket(distances, bidirectional, num_buckets, max_distance)
    assert torch.equal(ours, theirs)
    assert ours.min() >= 0 and ours.max() == num_buckets - 1


def test_embed_uses_the_encoder(hf_folders):
    ours = load_model(hf_folders["v1.1", "lm"])
    encoder = HF_CLASS["encoder"].from_pretrained(hf_folders["v1.1", "lm"]).eval()
    b = batch()
    with torch.no_grad():
        ref = encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    keep = b["attention_mask"].bool()
    torch.testing.assert_close(ours.encode(b["input_ids"], b["attention_mask"])[keep], ref[keep], atol=ATOL,
                               rtol=1e-5)
    vectors = ours.embed(b["input_ids"], b["attention_mask"])
    assert vectors.shape == (3, SIZES["d_model"])
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))


def test_lm_checkpoint_loads_for_another_task(hf_folders):
    model = load_model(hf_folders["v1.1", "lm"], task="classification")
    assert model.task == "classification"
    b = batch()
    assert model(b["input_ids"], b["attention_mask"]).logits.shape == (3, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fully_padded_row_stays_finite_and_trains(dtype):
    torch.manual_seed(0)
    model = T5Model(T5Config.from_hf(SIZES | VERSIONS["v1.1"] | dict(dropout_rate=0.1)), "lm").train()
    b = batch()
    mask = b["attention_mask"].clone()
    mask[1] = 0
    dmask = b["decoder_attention_mask"].clone()
    dmask[2, :5] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = model(b["input_ids"], mask, decoder_input_ids=b["decoder_input_ids"], decoder_attention_mask=dmask,
                    labels=b["lm_labels"])
    out.loss.backward()
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.encoder.relative_attention_bias.weight.grad.abs().sum() > 0


def test_wrong_shape_weight_names_key_and_shapes(hf_folders, tmp_path):
    folder = hf_folders["v1.0", "lm"]
    state = load_file(folder / "model.safetensors")
    key = "decoder.block.1.layer.1.EncDecAttention.q.weight"
    state[key] = torch.zeros(32, 31)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ModelError, match=rf"{key}.*\[32, 31\].*\[32, 32\]"):
        load_model(tmp_path)


def test_classification_checkpoint_uses_transformer_prefix(hf_folders):
    keys = load_file(hf_folders["v1.0", "classification"] / "model.safetensors")
    assert "transformer.encoder.final_layer_norm.weight" in keys and "classification_head.dense.weight" in keys
    assert T5Model.hf_prefix("classification") == "transformer." and T5Model.hf_prefix("qa") == ""


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, b: m(b["input_ids"], b["attention_mask"]), "decoder_input_ids"),
        (lambda m, b: m(b["input_ids"], decoder_input_ids=b["decoder_input_ids"],
                        decoder_attention_mask=b["decoder_attention_mask"][:, :5]), r"\[3, 13\]"),
        (lambda m, b: m(decoder_input_ids=b["decoder_input_ids"]), "input_ids"),
    ],
)
def test_bad_inputs_raise_model_error(call, message):
    model = T5Model(T5Config.from_hf(SIZES), "lm").eval()
    with pytest.raises(ModelError, match=message):
        call(model, batch())


def test_classification_needs_eos_and_bad_activation_is_refused():
    model = T5Model(T5Config.from_hf(SIZES), "classification").eval()
    with pytest.raises(ModelError, match="eos"):
        model(torch.full((2, 5), 7))
    with pytest.raises(ModelError, match="gated-laplace"):
        T5Config(feed_forward_proj="gated-laplace")


def test_rescaling_follows_scale_decoder_outputs_else_the_tie():
    """transformers 5 writes tie_word_embeddings: true plus scale_decoder_outputs: false for v1.1 (whether the
    head is tied then depends on the weights); Hub configs have only tie_word_embeddings."""
    v11_hf5 = T5Config.from_hf({"tie_word_embeddings": True, "scale_decoder_outputs": False})
    assert v11_hf5.tie_word_embeddings and not v11_hf5.scale_decoder_outputs
    assert not T5Config.from_hf({"tie_word_embeddings": False}).scale_decoder_outputs
    assert T5Config.from_hf({}).tie_word_embeddings and T5Config.from_hf({}).scale_decoder_outputs
    assert T5Config.from_hf({"num_layers": 3}).num_decoder_layers == 3


def test_lm_checkpoint_loads_as_encoder_dropping_the_decoder(tmp_path):
    from lmforge.models.hf_io import model_class
    from lmforge.models.presets import TINY, make_config

    torch.manual_seed(0)
    lm = model_class("t5")(make_config("t5", **TINY), "lm").eval()
    lm.save_pretrained(tmp_path)
    encoder = load_model(tmp_path, task="encoder")
    ids = torch.randint(2, 100, (2, 7))
    torch.testing.assert_close(encoder.encode(ids), lm.encode(ids))
