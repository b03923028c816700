import numpy as np
import pytest
import torch

from lmforge.models.hf_io import model_class
from lmforge.models.presets import make_config
from lmforge.objectives import Blocks, PermutationLM

VOCAB, SEP, CLS, PAD = 500, 4, 3, 5


def make_blocks(n, length=60, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(10, VOCAB, size=(n, length))
    ids[:, -2:] = [SEP, CLS]
    return Blocks(ids, np.full(n, length), np.arange(n))


def plm(**kw):
    return PermutationLM(special_ids=(SEP, CLS, PAD), vocab_size=VOCAB, **kw)


def check_invariants(out, blocks):
    ids = torch.from_numpy(blocks.input_ids)
    mapping, perm, labels = out["target_mapping"], out["perm_mask"], out["labels"]
    B, M, T = mapping.shape
    for b in range(B):
        rows = mapping[b][labels[b] != -100]
        assert ((rows == 0) | (rows == 1)).all() and (rows.sum(1) == 1).all()  # one-hot rows
        is_target = rows.sum(0)
        assert is_target.max() == 1  # every target exactly once
        targets = is_target.nonzero().squeeze(1)
        assert torch.equal(labels[b][labels[b] != -100], ids[b, targets])
        assert not torch.isin(ids[b, targets], torch.tensor([SEP, CLS, PAD])).any()
        context = (is_target == 0).nonzero().squeeze(1)
        p = perm[b]
        # Everyone sees the context; the context never sees a target.
        assert (p[:, context] == 0).all()
        assert (p[context][:, targets] == 1).all()
        # Among targets, "i sees j" is a strict total order: the query stream never sees its own token,
        # of any two targets exactly one sees the other, and the k-th target sees exactly k earlier ones.
        pt = p[targets][:, targets]
        assert (pt.diagonal() == 1).all()
        sees = pt == 0
        assert (sees ^ sees.T | torch.eye(len(targets), dtype=torch.bool)).all()
        assert sorted(sees.sum(1).tolist()) == list(range(len(targets)))
    return mapping


def test_every_target_predicted_once_and_perm_mask_follows_the_order():
    blocks = make_blocks(64)
    out = plm()(blocks, 0)
    mapping = check_invariants(out, blocks)
    assert mapping.shape[1] == round(58 / 6)  # partial prediction: 1/K of the 58 content tokens


def test_perm_mask_matches_the_sampled_rank():
    obj = plm()
    ids = make_blocks(1).input_ids[0]
    rank = obj.sample(ids, len(ids), np.random.default_rng(1))
    p = obj.perm_mask(rank)
    for i in range(len(ids)):
        for j in range(len(ids)):
            blocked = rank[j] >= 0 and rank[j] >= rank[i]
            assert p[i, j] == blocked


def test_targets_and_order_are_uniform():
    blocks = make_blocks(3000, length=30)
    out = plm()(blocks, 0)
    is_target = out["target_mapping"].sum(1)  # (B, T)
    rate = is_target[:, :28].mean(0)  # each content position is a target 1/6 of the time (5 of 28)
    assert (rate - 5 / 28).abs().max() < 5 * (5 / 28 * (1 - 5 / 28) / 3000) ** 0.5
    assert (is_target[:, 28:] == 0).all()
    # The first target in position order is first in the factorization order 1/5 of the time.
    perm = out["perm_mask"]
    first_pos = out["target_mapping"][:, 0].argmax(1)
    sees_others = (perm[torch.arange(3000), first_pos][:, :28] * is_target[:, :28]).sum(1)
    first_in_order = (sees_others == 5).float().mean()  # blocked from all 5 targets incl. itself
    assert abs(first_in_order - 0.2) < 5 * (0.16 / 3000) ** 0.5


def test_new_order_each_epoch():
    blocks = make_blocks(20)
    a, b = plm()(blocks, 0), plm()(blocks, 1)
    assert not torch.equal(a["perm_mask"], b["perm_mask"])
    assert torch.equal(a["perm_mask"], plm()(blocks, 0)["perm_mask"])


def test_span_order_predicts_ngrams():
    blocks = make_blocks(300, length=122)
    out = plm(span=True)(blocks, 0)
    check_invariants({k: v[:20] for k, v in out.items()}, make_blocks(20, length=122))
    is_target = out["target_mapping"].sum(1)
    assert (is_target.sum(1) == 20).all()  # still 1/K of the 120 content tokens
    starts = (is_target[:, 1:] > is_target[:, :-1]).sum() + is_target[:, 0].sum()
    mean_span = is_target.sum() / starts
    assert mean_span > 1.7  # n-grams (p ∝ 1/n, n <= 5: mean 2.19 before merging), not single tokens


@pytest.mark.parametrize("span", [False, True])
def test_xlnet_targets_see_only_the_context_and_earlier_targets(span):
    """Through the real model: a target's prediction ignores its own token and later targets, not earlier ones."""
    torch.manual_seed(0)
    model = model_class("xlnet")(make_config("xlnet", layers=2, hidden=32, heads=2, ffn=64, vocab=VOCAB), "lm").eval()
    blocks = make_blocks(1, length=26)
    obj = plm(span=span)
    rank = obj.sample(blocks.input_ids[0], 26, np.random.default_rng(0))
    out = obj(blocks, 0)
    targets = out["target_mapping"][0].argmax(1)  # positions of the rows, in position order
    order = torch.from_numpy(rank)[targets]
    with torch.no_grad():
        base = model(**out).logits[0]
        for pos in targets.tolist():
            changed = {k: v.clone() for k, v in out.items()}
            changed["input_ids"][0, pos] = 7 if changed["input_ids"][0, pos] != 7 else 8
            diff = (model(**changed).logits[0] - base).abs().amax(-1)
            r = rank[pos]
            assert (diff[order <= r] < 1e-5).all()  # itself and every later target: blind to the change
            assert (diff[order > r] > 1e-5).all()  # every target later in the order sees it
