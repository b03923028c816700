"""The standard metric of each application, as thin wrappers over the libraries that define them.

Scales follow each metric's own convention: accuracy, F1 and MCC are fractions (scikit-learn); SQuAD exact
match and F1, ROUGE, BLEU and chrF are percentages (the official SQuAD script, papers' ROUGE tables, sacrebleu).
Wherever an example has several references, the score takes the best one, as the SQuAD script and
SciTLDR's evaluation do; BLEU and chrF use them all as reference streams (sacrebleu's multi-reference mode).
"""
from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Callable, Sequence

# --------------------------------------------------------------- classification


def accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    from sklearn.metrics import accuracy_score

    _same_length(predictions, references)
    return float(accuracy_score(references, predictions))


def f1(predictions: Sequence[str], references: Sequence[str], positive: str | None = None) -> float:
    """F1 of the `positive` label when given (GLUE's MRPC, spam), otherwise macro F1 over the reference labels.

    A prediction that is no label at all (a text-to-text model writing another word) counts as a wrong
    answer: a false negative for the class it should have named and a false positive for none. It is not a
    class of its own, so it does not dilute the macro average. This is scikit-learn's `f1_score` restricted
    to `labels=` (without it, sklearn would refuse binary F1 on such "multiclass" predictions). A valid label
    that is predicted but absent from the references adds false positives only; it is not averaged either."""
    from sklearn.metrics import f1_score

    _same_length(predictions, references)
    labels = [positive] if positive is not None else sorted(set(references))
    per_class = f1_score(references, predictions, labels=labels, average=None, zero_division=0)
    return float(per_class.mean())


def mcc(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Matthews correlation coefficient (GLUE's metric for CoLA; informative on unbalanced sets like spam)."""
    from sklearn.metrics import matthews_corrcoef

    _same_length(predictions, references)
    return float(matthews_corrcoef(references, predictions))


# ------------------------------------------------------------------ SQuAD v1.1


def normalize_answer(s: str) -> str:
    """The official SQuAD v1.1 normalisation: lower case, drop punctuation and the articles a/an/the, and
    collapse whitespace (evaluate-v1.1.py, `normalize_answer`, applied in the same order)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_exact(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def squad_f1(prediction: str, truth: str) -> float:
    """Token-level F1 between the normalised answers (evaluate-v1.1.py, `f1_score`)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Exact match and F1 in percent; each prediction scores against its best-matching reference answer."""
    _same_length(predictions, references)
    if not predictions:
        raise ValueError("no predictions to score")
    em = sum(max(squad_exact(p, t) for t in refs) for p, refs in zip(predictions, references))
    f = sum(max(squad_f1(p, t) for t in refs) for p, refs in zip(predictions, references))
    return {"exact_match": 100 * em / len(predictions), "f1": 100 * f / len(predictions)}


# ------------------------------------------------------------------ generation


def rouge(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """ROUGE-1/2/L F-measure in percent (Google's `rouge-score`, Porter stemming as in the ROUGE-1.5.5
    `-m` setting); with several references an example keeps its best score per variant."""
    from rouge_score import rouge_scorer

    _same_length(predictions, references)
    if not predictions:
        raise ValueError("no predictions to score")
    variants = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(variants), use_stemmer=True)
    totals = dict.fromkeys(variants, 0.0)
    for pred, refs in zip(predictions, references):
        scores = [scorer.score(ref, pred) for ref in refs]  # score(target, prediction)
        for v in variants:
            totals[v] += max(s[v].fmeasure for s in scores)
    return {v: 100 * totals[v] / len(predictions) for v in variants}


def _streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-example reference lists -> sacrebleu's reference streams (None where an example has fewer)."""
    width = max(len(r) for r in references)
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exponential smoothing off for corpus BLEU)."""
    import sacrebleu

    _same_length(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), _streams(references)).score)


def chrf(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    import sacrebleu

    _same_length(predictions, references)
    return float(sacrebleu.corpus_chrf(list(predictions), _streams(references)).score)


def perplexity(total_loss: float, total_tokens: int) -> float:
    """exp of the mean token negative log-likelihood (natural log)."""
    return math.exp(total_loss / max(total_tokens, 1))


def entity_scores(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]],
                  scheme: str = "iob2") -> dict[str, float]:
    """Entity-level precision, recall and F1 (fractions) from `seqeval` in strict mode for `scheme` (IOB2 or
    BIOES): an entity counts only when its type and both boundaries match. Micro averages as `precision`,
    `recall`, `f1`; per type as `TYPE_precision`, `TYPE_recall`, `TYPE_f1` and `TYPE_support`."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import BILOU, IOB2, IOBES

    _same_length(predictions, references)
    for i, (p, r) in enumerate(zip(predictions, references)):
        if len(p) != len(r):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags but {len(r)} reference tags")
    mode = {"iob2": IOB2, "bioes": IOBES, "bilou": BILOU}[scheme]
    # seqeval's IOBES scheme spells the single-word tag S- and the last E-, as lmforge's BIOES does.
    report = classification_report([list(r) for r in references], [list(p) for p in predictions], mode="strict",
                                   scheme=mode, output_dict=True, zero_division=0)
    micro = report["micro avg"]
    out = {"precision": float(micro["precision"]), "recall": float(micro["recall"]), "f1": float(micro["f1-score"])}
    for typ in sorted(k for k in report if not k.endswith(" avg")):
        row = report[typ]
        out |= {f"{typ}_precision": float(row["precision"]), f"{typ}_recall": float(row["recall"]),
                f"{typ}_f1": float(row["f1-score"]), f"{typ}_support": int(row["support"])}
    return out


# ------------------------------------------------------------------ by name

# metric name -> (kind of references, function returning {column: value}); the registry names these.
LABEL_METRICS: dict[str, Callable[..., float]] = {"accuracy": accuracy, "f1": f1, "mcc": mcc}
TEXT_METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "squad": squad,
    "rouge": rouge,
    "bleu": lambda p, r: {"bleu": bleu(p, r)},
    "chrf": lambda p, r: {"chrf": chrf(p, r)},
}
METRICS = (*LABEL_METRICS, *TEXT_METRICS, "perplexity", "seqeval")  # seqeval: entity_scores, on tag sequences


def compute(names: Sequence[str], predictions: Sequence[str], references: Sequence, *,
            positive: str | None = None) -> dict[str, float]:
    """The named metrics. Label metrics take one reference label per prediction; text metrics take a list
    of reference strings per prediction."""
    out: dict[str, float] = {}
    for name in names:
        if name in LABEL_METRICS:
            labels = [r if isinstance(r, str) else r[0] for r in references]
            kwargs = {"positive": positive} if name == "f1" else {}
            out[name] = LABEL_METRICS[name](predictions, labels, **kwargs)
        elif name in TEXT_METRICS:
            refs = [[r] if isinstance(r, str) else list(r) for r in references]
            out.update(TEXT_METRICS[name](predictions, refs))
        else:
            raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return out


def _same_length(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
