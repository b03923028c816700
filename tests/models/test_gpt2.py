"""GPT-2 against a tiny random Hugging Face twin: logits, losses, checkpoints both ways, the KV cache."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from lmforge.models import ModelError, load_model
from lmforge.models.gpt2 import GPT2Config, GPT2Model

PAD = 0
VOCAB = 99
TASKS = {  # our task -> Hugging Face class
    "base": transformers.GPT2Model,
    "lm": transformers.GPT2LMHeadModel,
    "classification": transformers.GPT2ForSequenceClassification,
    "qa": transformers.GPT2ForQuestionAnswering,
}
ATOL = 1e-5


def hf_config(**overrides) -> transformers.GPT2Config:
    kw = dict(
        vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=48, pad_token_id=PAD,
        bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1, num_labels=3, resid_pdrop=0.1, embd_pdrop=0.1,
        attn_pdrop=0.1,
    )
    return transformers.GPT2Config(**(kw | overrides))


def hf_model(task: str, **overrides):
    torch.manual_seed(0)
    model = TASKS[task](hf_config(**overrides)).eval()
    with torch.no_grad():  # random LayerNorm and bias values, so a dropped or swapped tensor shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.normal_(0, 0.5)
    return model


def batch(B=3, T=7, right_pad=(0, 2, 4)):
    """Right-padded ids (pads are PAD, real tokens never are) and the matching mask."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for b, n in enumerate(right_pad):
        if n:
            mask[b, -n:] = 0
            ids[b, -n:] = PAD
    return ids, mask


def labels_for(task, ids, mask):
    if task == "lm":
        return ids.masked_fill(mask == 0, -100)
    if task == "classification":
        return torch.tensor([0, 2, 1])
    if task == "qa":
        return torch.tensor([[1, 3], [0, 2], [2, 2]])
    return None


def hf_forward(model, task, ids, mask, labels=None, **kw):
    if task == "qa" and labels is not None:
        kw |= dict(start_positions=labels[:, 0], end_positions=labels[:, 1])
    elif labels is not None:
        kw["labels"] = labels
    out = model(input_ids=ids, attention_mask=mask, **kw)
    if task == "base":
        return out.last_hidden_state, None
    if task == "qa":
        return torch.stack([out.start_logits, out.end_logits], -1), out.loss
    return out.logits, out.loss


def assert_real_tokens_close(task, ours, theirs, mask):
    if task == "classification":
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
        return
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("task", list(TASKS))
def test_load_hf_checkpoint_matches_hf(tmp_path, task):
    hf = hf_model(task)
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    assert ours.task == task and ours.family == "gpt2" and not ours.training
    ids, mask = batch()
    labels = labels_for(task, ids, mask)
    with torch.no_grad():
        want, want_loss = hf_forward(hf, task, ids, mask, labels)
        out = ours(ids, mask, labels=labels)
    assert_real_tokens_close(task, out.logits, want, mask)
    if labels is not None:
        torch.testing.assert_close(out.loss, want_loss, atol=ATOL, rtol=0)


@pytest.mark.parametrize("task", list(TASKS))
def test_saved_checkpoint_loads_in_hf(tmp_path, task):
    torch.manual_seed(0)
    config = GPT2Config.from_hf(hf_config().to_dict())
    ours = GPT2Model(config, task).eval()
    ours.save_pretrained(tmp_path)
    hf = TASKS[task].from_pretrained(tmp_path).eval()
    ids, mask = batch()
    with torch.no_grad():
        want, _ = hf_forward(hf, task, ids, mask)
        got = ours(ids, mask).logits
    assert_real_tokens_close(task, got, want, mask)
    # and back again, bit for bit
    again = load_model(tmp_path)
    for (name, a), (_, b) in zip(ours.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), name


def test_lm_loss_equals_hf_with_ignored_labels(tmp_path):
    hf = hf_model("lm")
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    ids, mask = batch()
    labels = ids.clone()
    labels[0, 2] = -100  # an ignored target in the middle, besides the padding
    labels[mask == 0] = -100
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, labels=labels).loss
        got = ours(ids, mask, labels=labels).loss
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    # labels = input_ids, shifted inside: a model that learnt nothing is near log(vocab), not zero
    assert abs(got.item() - torch.log(torch.tensor(float(VOCAB))).item()) < 1.5


def test_left_padding_with_position_ids_matches_hf(tmp_path):
    hf = hf_model("lm")
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    ids, right_mask = batch()
    mask = right_mask.flip(1)  # left padding: mask [0 0 1 1 1 ...]
    ids = ids.flip(1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        got = ours(ids, mask, position_ids=pos).logits
    assert torch.isfinite(got).all()
    assert_real_tokens_close("lm", got, want, mask)


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("left_pad", [False, True])
def test_incremental_decoding_equals_full_pass(tmp_path, chunk, left_pad):
    """Prompt first, then the rest `chunk` tokens at a time through the cache: same logits as one pass."""
    hf_model("lm").save_pretrained(tmp_path)
    model = load_model(tmp_path)
    g = torch.Generator().manual_seed(2)
    B, T, prompt = 3, 10, 4
    ids = torch.randint(1, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    if left_pad:
        mask[1, :2] = 0
        mask[2, :3] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0) if left_pad else None
    with torch.no_grad():
        full = model(ids, mask, position_ids=pos).logits
        out = model(
            ids[:, :prompt], mask[:, :prompt], use_cache=True,
            position_ids=None if pos is None else pos[:, :prompt],
        )
        steps = [out.logits]
        for s in range(prompt, T, chunk):
            e = min(s + chunk, T)
            out = model(
                ids[:, s:e], mask[:, :e], past_key_values=out.past_key_values, use_cache=True,
                position_ids=None if pos is None else pos[:, s:e],
            )
            steps.append(out.logits)
    cache = out.past_key_values
    assert len(cache) == 2 and cache[0][0].shape == (B, 4, T, 8)
    incremental = torch.cat(steps, 1)
    real = mask.bool()
    torch.testing.assert_close(incremental[real], full[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(incremental[:, -1], full[:, -1], atol=ATOL, rtol=0)


def test_old_attention_buffers_are_ignored(tmp_path):
    hf = hf_model("lm")
    hf.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    n = hf.config.n_positions
    for i in range(hf.config.n_layer):
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, n, n))
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, tmp_path / "model.safetensors")
    ours = load_model(tmp_path)
    ids, mask = batch()
    with torch.no_grad():
        assert_real_tokens_close("lm", ours(ids, mask).logits, hf(ids, attention_mask=mask).logits, mask)
    # the ignore list names those buffers only: another stray attention tensor is still refused
    save_file({**state, "transformer.h.0.attn.c_attn.scale": torch.ones(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match=r"does not use, e.g. 'transformer.h.0.attn.c_attn.scale'"):
        load_model(tmp_path)


def test_lm_head_is_tied_to_embeddings(tmp_path):
    hf_model("lm").save_pretrained(tmp_path)
    model = load_model(tmp_path)
    wte = model.transformer.wte.weight
    assert model.head.weight is wte
    assert model.head.weight.data_ptr() == wte.data_ptr()
    assert "head.weight" not in dict(model.named_parameters())
    with torch.no_grad():
        wte[5].add_(1.0)  # one Parameter: the head sees the change
    assert torch.equal(model.head.weight[5], wte[5])
    model.save_pretrained(tmp_path / "again")
    assert "lm_head.weight" not in load_file(tmp_path / "again" / "model.safetensors")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "again")
    assert torch.equal(hf.lm_head.weight, wte)


def test_base_checkpoint_loads_for_other_tasks(tmp_path):
    """A bare GPT2Model checkpoint (no `transformer.` prefix) serves lm, and classification with a new head."""
    base = hf_model("base")
    base.save_pretrained(tmp_path)
    lm = load_model(tmp_path, task="lm")
    hf_lm = transformers.GPT2LMHeadModel(base.config).eval()
    hf_lm.transformer.load_state_dict(base.state_dict())
    hf_lm.lm_head.weight = hf_lm.transformer.wte.weight
    ids, mask = batch()
    with torch.no_grad():
        assert_real_tokens_close("lm", lm(ids, mask).logits, hf_lm(ids, attention_mask=mask).logits, mask)
    clf = load_model(tmp_path, task="classification")
    assert clf(ids, mask).logits.shape == (3, 3)


def test_unprefixed_lm_checkpoint_like_openai_gpt2(tmp_path):
    """The original `gpt2` checkpoint says GPT2LMHeadModel but stores bare backbone keys (`h.0...`, `wte.weight`)."""
    import json

    base = hf_model("base")
    base.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"architectures": ["GPT2LMHeadModel"]}))
    model = load_model(tmp_path)
    assert model.task == "lm"
    torch.testing.assert_close(model.transformer.wte.weight, base.wte.weight)


def test_wrong_shape_names_key_and_shapes(tmp_path):
    hf_model("lm").save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    key = "transformer.wpe.weight"
    save_file({**state, key: torch.zeros(16, 32)}, tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match=r"'transformer.wpe.weight' has shape \[16, 32\] .* \[32, 32\]"):
        load_model(tmp_path)


def test_too_long_input_and_bad_mask_are_model_errors():
    model = GPT2Model(GPT2Config.from_hf(hf_config().to_dict()), "lm").eval()
    with pytest.raises(ModelError, match="exceed GPT-2's n_positions"):
        model(torch.ones(1, 33, dtype=torch.long))
    with pytest.raises(ModelError, match=r"must cover the 0 cached and 4 new tokens: \[1, 4\]"):
        model(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 5))


def test_dropout_follows_config():
    ids, mask = batch()
    model = GPT2Model(GPT2Config.from_hf(hf_config().to_dict()), "lm")
    model.train()
    torch.manual_seed(0)
    a = model(ids, mask).logits
    b = model(ids, mask).logits
    assert not torch.allclose(a, b)
    no_dropout = hf_config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    quiet = GPT2Model(GPT2Config.from_hf(no_dropout.to_dict()), "lm")
    quiet.train()
    torch.testing.assert_close(quiet(ids, mask).logits, quiet(ids, mask).logits)
