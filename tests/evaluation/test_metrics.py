"""Metrics against values worked out by hand."""
import math

import pytest

from lmforge.evaluation import metrics as M

# ----------------------------------------------------------- SQuAD normalisation (evaluate-v1.1.py)

@pytest.mark.parametrize("raw, normalised", [
    ("The Cat", "cat"),                               # lower case, article dropped
    ("  an   apple,  a pear! ", "apple pear"),        # punctuation and articles gone, spaces collapsed
    ("theory of the atom", "theory of atom"),         # 'the' only as a whole word
    ("A.D. 1066", "ad 1066"),                         # dots removed inside tokens
    ("Anne's", "annes"),                              # the apostrophe is punctuation
    ("Théâtre", "théâtre"),                           # no accent stripping in the official script
    ("the", ""),
])
def test_squad_normalisation(raw, normalised):
    assert M.normalize_answer(raw) == normalised


def test_squad_em_and_f1_by_hand():
    # "the big cat" -> [big, cat]; "a cat" -> [cat]: one common token, P = 1/2, R = 1, F1 = 2/3.
    assert M.squad_f1("the big cat", "a cat") == pytest.approx(2 / 3)
    assert M.squad_exact("The cat.", "cat") == 1.0
    assert M.squad_f1("dog", "cat") == 0.0
    # Best reference per question: first EM 1 (second reference), second F1 2/3 and EM 0.
    scores = M.squad(["Denver Broncos", "the big cat"], [["Broncos", "Denver Broncos"], ["a cat"]])
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


# ----------------------------------------------------------- BLEU / chrF (sacrebleu)

def test_bleu_matches_hand_computation():
    # hyp "the cat sat on the mat", ref "the cat sat on a mat": clipped n-gram precisions 5/6, 3/5, 2/4, 1/3;
    # equal lengths so BP = 1; BLEU = geometric mean = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4).
    expected = 100 * (5 / 6 * 3 / 5 * 1 / 2 * 1 / 3) ** 0.25
    assert M.bleu(["the cat sat on the mat"], [["the cat sat on a mat"]]) == pytest.approx(expected, abs=1e-6)


def test_bleu_multiple_references_and_chrf():
    assert M.bleu(["the cat sat on the mat"], [["a dog", "the cat sat on the mat"]]) == pytest.approx(100.0)
    assert M.chrf(["Ein Hund läuft."], [["Ein Hund läuft."]]) == pytest.approx(100.0)
    assert 0 < M.chrf(["Ein Hund rennt."], [["Ein Hund läuft."]]) < 100


# ----------------------------------------------------------- ROUGE (rouge-score)

def test_rouge_two_sentences_by_hand():
    # ref "the cat sat on the mat" / pred "the cat lay on the mat":
    # unigrams 5 of 6 shared -> R1 = 5/6; bigrams (the cat, on the, the mat) 3 of 5 -> R2 = 3/5;
    # longest common subsequence "the cat on the mat" = 5 -> RL = 5/6.
    s = M.rouge(["the cat lay on the mat"], [["the cat sat on the mat"]])
    assert s["rouge1"] == pytest.approx(100 * 5 / 6)
    assert s["rouge2"] == pytest.approx(100 * 3 / 5)
    assert s["rougeL"] == pytest.approx(100 * 5 / 6)


def test_rouge_keeps_the_best_reference():
    s = M.rouge(["the cat lay on the mat"], [["dogs bark", "the cat sat on the mat"]])
    assert s["rouge1"] == pytest.approx(100 * 5 / 6)


# ----------------------------------------------------------- classification (scikit-learn)

def test_classification_metrics_by_hand():
    preds, refs = ["a", "a", "b", "b"], ["a", "b", "b", "b"]
    assert M.accuracy(preds, refs) == pytest.approx(0.75)
    # positive "b": TP 2, FP 0, FN 1 -> P 1, R 2/3, F1 0.8
    assert M.f1(preds, refs, positive="b") == pytest.approx(0.8)
    # macro: for "a" TP 1, FP 1, FN 0 -> P 1/2, R 1, F1 2/3; the mean with b's 0.8
    assert M.f1(preds, refs) == pytest.approx((2 / 3 + 0.8) / 2)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2*1 - 0*1) / sqrt(2*3*1*2)
    assert M.mcc(preds, refs) == pytest.approx(2 / math.sqrt(12))


def test_predictions_that_are_no_label_count_as_wrong():
    # A T5 classifier may write "maybe": accuracy 1/3; F1 of "pos": TP 1, FP 0, FN 1 -> 2/3;
    # macro over the reference labels only: neg has TP 0 -> 0, so (2/3 + 0) / 2.
    preds, refs = ["pos", "maybe", "pos2"], ["pos", "pos", "neg"]
    assert M.accuracy(preds, refs) == pytest.approx(1 / 3)
    assert M.f1(preds, refs, positive="pos") == pytest.approx(2 / 3)
    assert M.f1(preds, refs) == pytest.approx(1 / 3)
    assert -1 <= M.mcc(preds, refs) <= 1


def test_binary_f1_with_an_off_label_prediction_counts_it_as_a_miss():
    # sklearn's binary F1 refuses these targets; counted by hand for positive "1": TP 1, FP 1 (the third),
    # FN 1 (the "yes") -> 2 / (2 + 1 + 1) = 0.5. Class "0": TP 1, FP 0, FN 1 -> 2/3.
    preds, refs = ["1", "yes", "1", "0"], ["1", "1", "0", "0"]
    assert M.f1(preds, refs, positive="1") == pytest.approx(0.5)
    assert M.f1(preds, refs) == pytest.approx((0.5 + 2 / 3) / 2)
    assert M.compute(["f1"], preds, refs, positive="1") == {"f1": pytest.approx(0.5)}
    # A valid label absent from the references is not averaged: "b" only costs "a" its recall.
    assert M.f1(["a", "b"], ["a", "a"]) == pytest.approx(2 / 3)


def test_compute_by_name_and_errors():
    out = M.compute(["accuracy", "squad", "chrf"], ["x y"], [["x y"]])
    assert out == {"accuracy": 1.0, "exact_match": 100.0, "f1": 100.0, "chrf": pytest.approx(100.0)}
    with pytest.raises(ValueError, match="unknown metric 'bogus'"):
        M.compute(["bogus"], ["x"], ["x"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        M.accuracy(["a", "b"], ["a"])
    assert M.perplexity(2 * math.log(3), 2) == pytest.approx(3.0)
