"""Bias audit arithmetic: PLL and LL equal brute force on tiny models, the stereotype score and its CI on
hand-made pairs, and the counterfactual flip count."""
import pytest
import torch

from lmforge.models.hf_io import model_class
from lmforge.models.presets import TINY, make_config
from lmforge.safety.bias import (BiasError, Pair, PairScorer, bootstrap_ci, counterfactual_flips, counterfactuals,
                                 crows_pairs, shared_positions, stereotype_score)
from lmforge.tokenizer import train_tokenizer

TEXT = ["the doctor said he was tired after the long shift at the hospital",
        "the doctor said she was tired after the long shift at the hospital",
        "the nurse helped the old man and the young woman cross the road"] * 20


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("c") / "corpus.txt"
    corpus.write_text("\n".join(TEXT))
    tok = train_tokenizer("bert", [str(corpus)], vocab_size=120, min_frequency=1)
    torch.manual_seed(0)
    model = model_class("bert")(make_config("bert", **{**TINY, "vocab": tok.vocab_size}), "lm").eval()
    return model, tok


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("c") / "corpus.txt"
    corpus.write_text("\n".join(TEXT))
    tok = train_tokenizer("gpt2", [str(corpus)], vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    model = model_class("gpt2")(make_config("gpt2", **{**TINY, "vocab": tok.vocab_size}), "lm").eval()
    return model, tok


@torch.no_grad()
def brute_pll(model, ids, skip_positions, mask_id, special):
    total = 0.0
    for i, t in enumerate(ids):
        if i in skip_positions or t in special:
            continue
        x = torch.tensor([ids])
        x[0, i] = mask_id
        total += model(x).logits[0, i].log_softmax(-1)[t].item()
    return total


def test_pll_equals_brute_force(bert):
    model, tok = bert
    pair = Pair(TEXT[0], TEXT[1], "stereo", "gender")
    ia, ib = tok.encode(pair.sent_more), tok.encode(pair.sent_less)
    assert len(ia) == len(ib)
    differ = {i for i, (a, b) in enumerate(zip(ia, ib)) if a != b}
    assert len(differ) == 1  # "he" vs "she"
    special = set(tok.all_special_ids)
    more, less = PairScorer(model, tok)(pair)
    assert more == pytest.approx(brute_pll(model, ia, differ, tok.mask_token_id, special), abs=1e-4)
    assert less == pytest.approx(brute_pll(model, ib, differ, tok.mask_token_id, special), abs=1e-4)
    assert more != less  # the shared tokens are conditioned on different words


def test_shared_positions_with_different_lengths():
    a = [101, 5, 6, 7, 8, 102]
    b = [101, 5, 9, 9, 7, 8, 102]
    assert shared_positions(a, b, {101, 102}) == ([1, 3, 4], [1, 4, 5])


@torch.no_grad()
def test_gpt2_log_likelihood_equals_brute_force(gpt2):
    model, tok = gpt2
    pair = Pair(TEXT[0], TEXT[2], "stereo", "gender")
    more, _ = PairScorer(model, tok)(pair)
    ids = [tok.eos_token_id] + tok.encode(TEXT[0], add_special_tokens=False)
    brute = sum(model(torch.tensor([ids[:t]])).logits[0, -1].log_softmax(-1)[ids[t]].item() for t in range(1, len(ids)))
    assert more == pytest.approx(brute, abs=1e-4)


def test_stereotype_score_by_hand():
    pairs = [Pair("a", "b", "stereo", "gender"), Pair("c", "d", "stereo", "gender"),
             Pair("e", "f", "antistereo", "gender"), Pair("g", "h", "stereo", "race"),
             Pair("i", "j", "stereo", "race")]
    # (sent_more, sent_less) scores: gender prefers sent_more, sent_less, sent_more (antistereo row: the model
    # prefers the stereotype-violating sentence's counterpart) ; race: a tie and a preference for sent_more
    scores = [(-1.0, -2.0), (-3.0, -1.0), (-0.5, -0.7), (-2.0, -2.0), (-1.0, -4.0)]
    overall, by_cat = stereotype_score(pairs, scores, n_boot=200)
    assert overall.score == pytest.approx(100 * 3 / 5) and overall.ties == 1 and overall.n == 5
    assert by_cat["gender"].score == pytest.approx(100 * 2 / 3)
    assert by_cat["race"].score == pytest.approx(50.0) and by_cat["race"].ties == 1
    assert overall.ci_low <= overall.score <= overall.ci_high


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    small = bootstrap_ci([1, 0] * 10, n_boot=2000)
    large = bootstrap_ci([1, 0] * 500, n_boot=2000)
    assert small[0] < 50 < small[1] and large[0] < 50 < large[1]
    assert large[1] - large[0] < small[1] - small[0]
    assert bootstrap_ci([1] * 30) == (100.0, 100.0)


def test_crows_pairs_runs_on_a_tiny_model(bert):
    model, tok = bert
    pairs = [Pair(TEXT[0], TEXT[1], "stereo", "gender"), Pair(TEXT[2], TEXT[2].replace("man", "woman", 1), "stereo", "age")]
    res = crows_pairs(model, tok, pairs, n_boot=100)
    assert res.metric == "pseudo-log-likelihood" and res.overall.n == 2 and set(res.by_category) == {"gender", "age"}
    d = res.to_dict()
    assert d["overall"]["score"] in (0.0, 50.0, 100.0)


def test_unsupported_models_are_refused(bert):
    model, tok = bert
    with pytest.raises(BiasError, match="task='lm'"):
        PairScorer(model_class("bert")(model.config, "classification"), tok)
    xlnet = model_class("xlnet")(make_config("xlnet", **TINY), "lm")
    with pytest.raises(BiasError, match="not xlnet"):
        PairScorer(xlnet, tok)


def test_counterfactual_variants_keep_case_and_swap_together():
    groups = [["he", "she"], ["him", "her"], ["man", "woman"]]
    assert counterfactuals("He told him the Man left.", groups) == ["She told her the Woman left."]
    assert counterfactuals("She told her.", groups) == ["He told him."]
    assert counterfactuals("The shepherd left.", groups) == []  # whole words only


def test_counterfactual_flip_count():
    # a "classifier" that is biased on purpose: positive iff the text mentions "he"
    predict = lambda texts: [int(" he " in f" {t.lower()} ") for t in texts]  # noqa: E731
    texts = ["he is a good doctor", "she is a good doctor", "the weather is fine", "they said he left"]
    rep = counterfactual_flips(predict, texts, {"gender": [["he", "she"]]})["gender"]
    assert (rep.texts, rep.counterfactuals, rep.flips) == (3, 3, 3)
    fair = counterfactual_flips(lambda ts: [len(ts[0]) * 0 for _ in ts], texts, {"gender": [["he", "she"]]})
    assert fair["gender"].flips == 0
