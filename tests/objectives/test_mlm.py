import numpy as np
import pytest
import torch

from lmforge.objectives import Blocks, MaskedLM

VOCAB, MASK = 1000, 4
SPECIAL = (0, 1, 2, 3, 4)  # pad, unk, cls, sep, mask


def make_blocks(n=2000, length=128, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, size=(n, length))
    lengths = rng.integers(length // 2, length + 1, size=n)
    ids[:, 0] = 2  # [CLS]
    ids[np.arange(n), lengths - 1] = 3  # [SEP]
    ids[np.arange(length)[None, :] >= lengths[:, None]] = 0  # padding
    return Blocks(ids, lengths, np.arange(n))


def objective(**kw):
    return MaskedLM(mask_token_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL, **kw)


def test_masking_rate_and_80_10_10_split():
    blocks = make_blocks()
    out = objective(dynamic=False)(blocks, epoch=0)
    ids = torch.from_numpy(blocks.input_ids)
    labels, inputs = out["labels"], out["input_ids"]
    chosen = labels != -100
    candidates = (ids >= 5) & (out["attention_mask"] == 1)
    # Exactly round(15%) of each row's candidates, never a special token or padding.
    assert not (chosen & ~candidates).any()
    per_row = chosen.sum(1).float() / candidates.sum(1).float()
    assert (per_row - 0.15).abs().max() < 0.01
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # untouched outside the targets
    n = int(chosen.sum())
    masked = (inputs[chosen] == MASK).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    randomised = ((inputs[chosen] != MASK) & (inputs[chosen] != ids[chosen])).float().mean().item()
    sd = (0.1 * 0.9 / n) ** 0.5
    assert abs(masked - 0.8) < 5 * (0.16 / n) ** 0.5
    assert abs(kept - 0.1) < 5 * sd + 1 / VOCAB  # a random replacement hits the original 1/995 of the time
    assert abs(randomised - 0.1) < 5 * sd
    replaced = inputs[chosen & (inputs != MASK) & (inputs != ids)]
    assert replaced.min() >= 5  # random replacements are never special tokens
    counts = np.bincount(replaced.numpy(), minlength=VOCAB)[5:]
    assert counts.max() < 5 * max(counts.mean(), 1)  # spread over the vocabulary, not a few ids


def test_static_masks_identical_across_epochs_dynamic_ones_differ():
    blocks = make_blocks(200)
    static, dynamic = objective(dynamic=False, seed=3), objective(dynamic=True, seed=3)
    s0, s1 = static(blocks, 0), static(blocks, 7)
    assert torch.equal(s0["input_ids"], s1["input_ids"]) and torch.equal(s0["labels"], s1["labels"])
    d0, d1 = dynamic(blocks, 0), dynamic(blocks, 1)
    differ = (d0["labels"] != d1["labels"]).any(1).float().mean()
    assert differ > 0.99
    assert torch.equal(dynamic(blocks, 1)["input_ids"], d1["input_ids"])  # same epoch: same mask


def test_mask_of_a_block_does_not_depend_on_its_batch():
    blocks = make_blocks(50)
    obj = objective(dynamic=True)
    whole = obj(blocks, 4)
    sub = Blocks(blocks.input_ids[[7, 30]], blocks.lengths[[7, 30]], blocks.index[[7, 30]])
    part = obj(sub, 4)
    assert torch.equal(part["input_ids"], whole["input_ids"][[7, 30]])


def test_nsp_passes_pairs_through_and_needs_them():
    blocks = make_blocks(4)
    blocks.token_type_ids = np.zeros_like(blocks.input_ids)
    blocks.next_sentence_label = np.array([0, 1, 1, 0])
    out = objective(nsp=True)(blocks, 0)
    assert out["next_sentence_label"].tolist() == [0, 1, 1, 0]
    assert "token_type_ids" in out and objective(nsp=True).task == "pretraining"
    with pytest.raises(ValueError, match="sentence-pair"):
        objective(nsp=True)(make_blocks(4), 0)
