"""XLNet against Hugging Face: tiny random twins must agree in both directions, on every input XLNet has."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from lmforge.models import ModelError, load_model
from lmforge.models.xlnet import XLNetConfig, XLNetModel, rel_shift

HF_CLASSES = {
    "base": transformers.XLNetModel,
    "lm": transformers.XLNetLMHeadModel,
    "classification": transformers.XLNetForSequenceClassification,
    "qa": transformers.XLNetForQuestionAnsweringSimple,
    "token_classification": transformers.XLNetForTokenClassification,
}
VOCAB, B, T = 99, 3, 8
ATOL = 1e-5


def hf_config(**overrides) -> transformers.XLNetConfig:
    kw = dict(vocab_size=VOCAB, d_model=32, n_layer=2, n_head=4, d_inner=37, num_labels=3, mem_len=None)
    return transformers.XLNetConfig(**{**kw, **overrides})


def hf_twin(tmp_path, task: str = "lm", **overrides):
    """A random Hugging Face model saved to tmp_path, and lmforge's load of it."""
    torch.manual_seed(0)
    if task == "qa":  # Hugging Face's span head has num_labels outputs and needs exactly 2
        overrides.setdefault("num_labels", 2)
    hf = HF_CLASSES[task](hf_config(**overrides)).eval()
    with torch.no_grad():  # make LayerNorm and bias parameters non-trivial too
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path)
    return hf, load_model(tmp_path)


def inputs(seed: int = 1):
    """ids with left padding (XLNet's side): row 1 has 3 pads, row 2 has 1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :1] = 0
    ids[mask == 0] = 5
    return ids, mask


def two_stream_inputs(ids: torch.Tensor, num_predict: int = 3, seed: int = 2):
    """perm_mask and target_mapping built the XLNet way from a random factorisation order per row.

    Token i may see token j only if j comes earlier in the order; the last `num_predict` tokens of the
    order are the targets.
    """
    g = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(T, generator=g) for _ in range(B)])  # order[b, k] = k-th position
    rank = order.argsort(1)  # rank[b, pos] = place of pos in the order
    perm_mask = (rank[:, None, :] >= rank[:, :, None]).float()  # [b, i, j] = 1: i may not see j
    targets = order[:, -num_predict:]  # (B, M)
    target_mapping = torch.nn.functional.one_hot(targets, T).float()  # (B, M, T)
    return perm_mask, target_mapping, ids.gather(1, targets)


def hf_logits(hf, task, out):
    if task == "base":
        return out.last_hidden_state
    if task == "qa":
        return torch.stack([out.start_logits, out.end_logits], -1)
    return out.logits


def task_labels(task, ids, mask):
    g = torch.Generator().manual_seed(3)
    if task == "lm":
        return ids.masked_fill(mask == 0, -100), {"labels": ids.masked_fill(mask == 0, -100)}
    if task == "classification":
        y = torch.randint(0, 3, (B,), generator=g)
        return y, {"labels": y}
    if task == "qa":
        y = torch.tensor([[3, 5], [4, 4], [2, 7]])
        return y, {"start_positions": y[:, 0], "end_positions": y[:, 1]}
    if task == "token_classification":  # -100 on the (left) pads and on every third token
        y = torch.randint(0, 3, (B, T), generator=g).masked_fill(mask == 0, -100)
        y[:, ::3] = -100
        return y, {"labels": y}
    return None, {}


def assert_close_on_real_tokens(ours, theirs, mask):
    if ours.dim() == 2:  # pooled: (B, num_labels)
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
        return
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("task", list(HF_CLASSES))
@pytest.mark.parametrize(
    "overrides", [{}, {"untie_r": False}, {"clamp_len": 3, "ff_activation": "relu"}], ids=["default", "tied_r", "clamp"]
)
def test_hf_checkpoint_loads_and_matches(tmp_path, task, overrides):
    hf, ours = hf_twin(tmp_path, task, **overrides)
    assert ours.family == "xlnet" and ours.task == task
    assert ours.config.untie_r == overrides.get("untie_r", True)
    ids, mask = inputs()
    labels, hf_labels = task_labels(task, ids, mask)
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, use_mems=False, **hf_labels)
        out = ours(ids, mask, labels=labels)
    assert_close_on_real_tokens(out.logits, hf_logits(hf, task, theirs), mask)
    if labels is not None:
        torch.testing.assert_close(out.loss, theirs.loss, atol=ATOL, rtol=0)
    assert out.mems is None
    if task == "base":
        torch.testing.assert_close(ours.encode(ids, mask), out.logits)


@pytest.mark.parametrize("task", list(HF_CLASSES))
def test_saved_model_loads_in_transformers(tmp_path, task):
    torch.manual_seed(0)
    labels = ["start", "end"] if task == "qa" else ["a", "b", "c"]
    config = XLNetConfig(vocab_size=VOCAB, d_model=32, n_layer=2, n_head=4, d_inner=37, untie_r=False,
                         id2label=dict(enumerate(labels)))
    ours = XLNetModel(config, task).eval()
    ours.save_pretrained(tmp_path)
    hf, info = HF_CLASSES[task].from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert hf.config.untie_r is False
    ids, mask = inputs()
    with torch.no_grad():
        theirs = hf_logits(hf, task, hf.eval()(ids, attention_mask=mask, use_mems=False))
        assert_close_on_real_tokens(ours(ids, mask).logits, theirs, mask)
    assert load_model(tmp_path).task == task  # and it comes back to us


def test_token_type_ids_match(tmp_path):
    hf, ours = hf_twin(tmp_path, "lm")
    ids, mask = inputs()
    segments = torch.zeros(B, T, dtype=torch.long)
    segments[:, 5:] = 1
    segments[2, 7] = 2  # compared with !=, so any id makes its own segment
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, token_type_ids=segments, use_mems=False).logits
        out = ours(ids, mask, token_type_ids=segments).logits
        plain = ours(ids, mask).logits
    assert_close_on_real_tokens(out, theirs, mask)
    assert not torch.allclose(out, plain, atol=1e-3)  # the segment term is live


@pytest.mark.parametrize("padded", [False, True])
def test_two_stream_matches_with_loss(tmp_path, padded):
    hf, ours = hf_twin(tmp_path, "lm")
    ids, mask = inputs()
    mask = mask if padded else None
    perm_mask, target_mapping, labels = two_stream_inputs(ids)
    labels[0, 1] = -100
    kw = dict(perm_mask=perm_mask, target_mapping=target_mapping)
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, labels=labels, use_mems=False, **kw)
        out = ours(ids, mask, labels=labels, **kw)
    assert out.logits.shape == (B, 3, VOCAB)
    torch.testing.assert_close(out.logits, theirs.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.loss, theirs.loss, atol=ATOL, rtol=0)


def test_query_stream_never_sees_its_target(tmp_path):
    """A target's prediction must not change with the token at the target's own position."""
    _, ours = hf_twin(tmp_path, "lm")
    ids, _ = inputs()
    perm_mask, target_mapping, _ = two_stream_inputs(ids, num_predict=1)
    target = target_mapping[:, 0].argmax(1)  # (B,)
    swapped = ids.clone()
    swapped[torch.arange(B), target] = (ids[torch.arange(B), target] + 1) % VOCAB
    kw = dict(perm_mask=perm_mask, target_mapping=target_mapping)
    with torch.no_grad():
        a, b = ours(ids, **kw).logits, ours(swapped, **kw).logits
        c = ours(swapped, target_mapping=target_mapping).logits  # no perm_mask: target visible to others
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert not torch.allclose(a, c, atol=1e-4)


@pytest.mark.parametrize("mem_len,reuse_len", [(5, None), (None, None), (6, 4)])
def test_mems_across_two_segments(tmp_path, mem_len, reuse_len):
    hf, ours = hf_twin(tmp_path, "lm", mem_len=mem_len, reuse_len=reuse_len)
    ids1, _ = inputs(seed=4)
    ids2, _ = inputs(seed=5)
    segments = (torch.arange(T) >= 4).long().expand(B, T)
    perm_mask, target_mapping, _ = two_stream_inputs(ids2)
    theirs1 = hf(ids1, use_mems=True)
    out1 = ours(ids1, use_mems=True)
    kept = min(mem_len or T, reuse_len or T)
    assert [m.shape for m in out1.mems] == [(B, kept, 32)] * 2
    assert not any(m.requires_grad for m in out1.mems)
    for ours_m, hf_m in zip(out1.mems, theirs1.mems):
        torch.testing.assert_close(ours_m, hf_m.transpose(0, 1), atol=ATOL, rtol=0)

    kw = dict(token_type_ids=segments, perm_mask=perm_mask, target_mapping=target_mapping, use_mems=True)
    theirs2 = hf(ids2, mems=theirs1.mems, **kw)
    out2 = ours(ids2, mems=out1.mems, **kw)
    torch.testing.assert_close(out2.logits, theirs2.logits, atol=ATOL, rtol=0)
    for ours_m, hf_m in zip(out2.mems, theirs2.mems):
        torch.testing.assert_close(ours_m, hf_m.transpose(0, 1), atol=ATOL, rtol=0)
    with torch.no_grad():  # the memory really is read
        assert not torch.allclose(ours(ids2, **kw).logits, out2.logits, atol=1e-4)


def test_rel_shift_by_hand():
    """Query i, key j sit at distance mlen + i - j, which is column p = qlen - i + j of bd."""
    Q, mlen = 3, 2
    K = mlen + Q
    P = K + Q
    bd = torch.arange(Q * P, dtype=torch.float).view(1, 1, Q, P)
    expected = torch.tensor([[bd[0, 0, i, Q - i + j].item() for j in range(K)] for i in range(Q)])
    torch.testing.assert_close(rel_shift(bd, K)[0, 0], expected)


def test_backward_and_bf16_fully_masked_rows(tmp_path):
    _, ours = hf_twin(tmp_path, "lm")
    ids, mask = inputs()
    perm_mask, target_mapping, labels = two_stream_inputs(ids)  # the first token of each order sees nothing
    segments = (torch.arange(T) >= 5).long().expand(B, T)
    kw = dict(perm_mask=perm_mask, target_mapping=target_mapping, labels=labels, token_type_ids=segments)
    ours.train()
    ours(ids, mask, **kw).loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ours.parameters())
    half = load_model(tmp_path, dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.isfinite(half(ids, mask, **kw).logits).all()


def test_lm_checkpoint_loads_for_classification(tmp_path):
    hf, _ = hf_twin(tmp_path, "lm")
    model = load_model(tmp_path, task="classification")
    torch.testing.assert_close(
        model.transformer.layer[1].rel_attn.seg_embed, hf.transformer.layer[1].rel_attn.seg_embed
    )
    assert model(*inputs()).logits.shape == (B, 3)


def test_wrong_weight_shape_names_key_and_shapes(tmp_path):
    hf_twin(tmp_path, "classification")
    path = tmp_path / "model.safetensors"
    state = load_file(path)
    key = "transformer.layer.1.rel_attn.r_w_bias"
    state[key] = torch.zeros(4, 9)
    save_file(state, path)
    with pytest.raises(ModelError, match=rf"'{key}' has shape \[4, 9\].*\[4, 8\]"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "overrides,message",
    [({"bi_data": True}, "bi_data"), ({"attn_type": "uni"}, "attn_type"), ({"ff_activation": "laplace"}, "laplace")],
)
def test_unsupported_config_is_refused(tmp_path, overrides, message):
    transformers.XLNetModel(hf_config(**overrides)).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=message):
        load_model(tmp_path)


def test_bad_inputs_are_refused():
    model = XLNetModel(XLNetConfig(vocab_size=VOCAB, d_model=32, n_layer=2, n_head=4, d_inner=37), "lm")
    ids, _ = inputs()
    with pytest.raises(ModelError, match="mems has 1 entries"):
        model(ids, mems=[torch.zeros(B, 2, 32)])
    with pytest.raises(ModelError, match="perm_mask"):
        model(ids, perm_mask=torch.zeros(B, T, T - 1))
