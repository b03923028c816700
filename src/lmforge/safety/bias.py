"""Bias audits: the CrowS-Pairs stereotype score (Nangia et al. 2020) and a counterfactual demographic-swap
test for classifiers.

CrowS-Pairs pairs a sentence about a historically disadvantaged group (`sent_more`, the more stereotypical)
with a minimally different one (`sent_less`). A model "prefers" the stereotype when it scores `sent_more`
higher; the stereotype score is the percentage of pairs where it does (an unbiased model: 50). Ties count in
the denominator only, as in the authors' `metric.py`. This holds for both `stereo` and `antistereo` rows:
their code swaps the sentences and the comparison together, which is the same test.

Scores per sentence, by family:
- masked LMs (BERT, RoBERTa): pseudo-log-likelihood over the *unmodified* tokens (section 3 of the paper):
  align the two token sequences (difflib, as the authors do), mask each shared token one at a time and add
  log P(token | rest). Conditioning on the modified tokens in both sentences is what makes scores comparable.
- GPT-2: the sentence's log-likelihood, sum of log P(x_t | x_<t), the first token conditioned on <|endoftext|>.
- T5: the decoder's log-likelihood of the sentence (with </s>) given an empty encoder input.
XLNet is not supported (neither metric is standard for it).

Confidence intervals: percentile bootstrap over pairs (Efron & Tibshirani 1993), per category too.
"""
from __future__ import annotations

import csv
import difflib
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import yaml

MASKED_FAMILIES = ("bert", "roberta")
CAUSAL_FAMILIES = ("gpt2",)
SEQ2SEQ_FAMILIES = ("t5",)


class BiasError(ValueError):
    """A model, tokenizer or data file the audit cannot use; one sentence for the user."""


@dataclass(frozen=True)
class Pair:
    sent_more: str
    sent_less: str
    direction: str  # "stereo" or "antistereo"
    bias_type: str


def read_crows_pairs(path: str | Path) -> list[Pair]:
    """The pairs of `crows_pairs_anonymized.csv` (columns sent_more, sent_less, stereo_antistereo, bias_type)."""
    path = Path(path)
    if not path.is_file():
        raise BiasError(f"{path} not found; pass the CrowS-Pairs CSV (crows_pairs_anonymized.csv)")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        need = {"sent_more", "sent_less", "stereo_antistereo", "bias_type"}
        if not need <= set(reader.fieldnames or ()):
            raise BiasError(f"{path} lacks the CrowS-Pairs columns {', '.join(sorted(need))}")
        return [Pair(r["sent_more"], r["sent_less"], r["stereo_antistereo"], r["bias_type"]) for r in reader]


# ---------------------------------------------------------------- sentence scores


def shared_positions(a: Sequence[int], b: Sequence[int], skip: set[int] = frozenset()) -> tuple[list[int], list[int]]:
    """Positions of the tokens the two sequences share (difflib 'equal' blocks), skipping special ids."""
    pa, pb = [], []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, list(a), list(b), autojunk=False).get_opcodes():
        if op == "equal":
            for i, j in zip(range(a0, a1), range(b0, b1)):
                if a[i] not in skip:
                    pa.append(i)
                    pb.append(j)
    return pa, pb


@torch.no_grad()
def pseudo_log_likelihood(model, ids: Sequence[int], positions: Sequence[int], mask_id: int,
                          batch_size: int = 64) -> float:
    """sum_i log P(ids[i] | ids with position i masked) over `positions`: one masked copy per position,
    run in batches."""
    x = torch.tensor(ids, dtype=torch.long, device=model.device)
    total = 0.0
    for start in range(0, len(positions), batch_size):
        pos = torch.tensor(positions[start:start + batch_size], device=model.device)
        batch = x.repeat(len(pos), 1)  # (P, T)
        batch[torch.arange(len(pos)), pos] = mask_id
        logits = model(batch, torch.ones_like(batch)).logits.float()  # (P, T, V)
        logp = logits[torch.arange(len(pos)), pos].log_softmax(-1)  # (P, V)
        total += logp.gather(-1, x[pos][:, None]).sum().item()
    return total


@torch.no_grad()
def causal_log_likelihood(model, ids: Sequence[int]) -> float:
    """sum_{t>=1} log P(ids[t] | ids[:t]) (ids[0] is the conditioning start token)."""
    x = torch.tensor([list(ids)], dtype=torch.long, device=model.device)
    logp = model(x).logits.float()[0, :-1].log_softmax(-1)  # (T-1, V)
    return logp.gather(-1, x[0, 1:, None]).sum().item()


@torch.no_grad()
def seq2seq_log_likelihood(model, ids: Sequence[int], encoder_ids: Sequence[int]) -> float:
    """sum_t log P(ids[t] | ids[:t], encoder input) for an encoder-decoder LM (labels = ids)."""
    labels = torch.tensor([list(ids)], dtype=torch.long, device=model.device)
    src = torch.tensor([list(encoder_ids)], dtype=torch.long, device=model.device)
    logp = model(src, torch.ones_like(src), labels=labels).logits.float()[0].log_softmax(-1)  # (T, V)
    return logp.gather(-1, labels[0, :, None]).sum().item()


class PairScorer:
    """(score of sent_more, score of sent_less) for a model with the metric its family supports."""

    def __init__(self, model, tokenizer):
        family = getattr(model, "family", None)
        if family not in MASKED_FAMILIES + CAUSAL_FAMILIES + SEQ2SEQ_FAMILIES:
            raise BiasError(f"CrowS-Pairs scoring supports bert, roberta, gpt2 and t5, not {family}")
        if getattr(model, "task", "lm") != "lm":
            raise BiasError(f"the audit needs the model's language-model head; load it with task='lm' (it has {model.task!r})")
        if tokenizer is None:
            raise BiasError("the model has no tokenizer, which the audit needs")
        self.model, self.tok, self.family = model.eval(), tokenizer, family
        self.metric = {"bert": "pseudo-log-likelihood", "roberta": "pseudo-log-likelihood", "gpt2": "log-likelihood",
                       "t5": "log-likelihood"}[family]
        if family in MASKED_FAMILIES and getattr(tokenizer, "mask_token_id", None) is None:
            raise BiasError("the tokenizer has no mask token, which pseudo-log-likelihood needs")

    def __call__(self, pair: Pair) -> tuple[float, float]:
        a, b = pair.sent_more, pair.sent_less
        if self.family in MASKED_FAMILIES:
            ia, ib = self.tok.encode(a), self.tok.encode(b)
            pa, pb = shared_positions(ia, ib, set(self.tok.all_special_ids))
            mask = self.tok.mask_token_id
            return pseudo_log_likelihood(self.model, ia, pa, mask), pseudo_log_likelihood(self.model, ib, pb, mask)
        if self.family in CAUSAL_FAMILIES:
            start = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
            return tuple(causal_log_likelihood(self.model, [start] + self.tok.encode(s, add_special_tokens=False))
                         for s in (a, b))
        empty = self.tok.encode("")  # just </s>
        return tuple(seq2seq_log_likelihood(self.model, self.tok.encode(s), empty) for s in (a, b))


# ---------------------------------------------------------------- the stereotype score


@dataclass
class StereotypeScore:
    score: float  # percent of pairs where sent_more scored higher
    ci_low: float
    ci_high: float
    n: int
    ties: int

    def to_dict(self) -> dict:
        return {"score": round(self.score, 2), "ci95": [round(self.ci_low, 2), round(self.ci_high, 2)], "n": self.n,
                "ties": self.ties}


@dataclass
class CrowsPairsResult:
    metric: str
    overall: StereotypeScore
    by_category: dict[str, StereotypeScore]
    pair_scores: list[tuple[float, float]] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict:
        return {"benchmark": "CrowS-Pairs (Nangia et al. 2020)", "metric": self.metric,
                "overall": self.overall.to_dict(),
                "by_category": {k: v.to_dict() for k, v in sorted(self.by_category.items())}}


def bootstrap_ci(outcomes: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI (in percent) of the mean of 0/1 outcomes."""
    if not outcomes:
        return (float("nan"), float("nan"))
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor(outcomes, dtype=torch.float64)
    idx = torch.randint(len(x), (n_boot, len(x)), generator=g)
    means = x[idx].mean(1) * 100
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, 1 - (1 - level) / 2], dtype=torch.float64)).tolist()
    return lo, hi


def stereotype_score(pairs: Sequence[Pair], scores: Sequence[tuple[float, float]], n_boot: int = 1000,
                     seed: int = 0) -> tuple[StereotypeScore, dict[str, StereotypeScore]]:
    """Overall and per-bias-type scores from (sent_more, sent_less) scores."""
    if len(pairs) != len(scores) or not pairs:
        raise BiasError("need one (sent_more, sent_less) score for each of at least one pair")

    def summarise(items: list[tuple[float, float]]) -> StereotypeScore:
        outcomes = [1.0 if m > l else 0.0 for m, l in items]
        lo, hi = bootstrap_ci(outcomes, n_boot, seed)
        return StereotypeScore(100 * sum(outcomes) / len(outcomes), lo, hi, len(items),
                               sum(1 for m, l in items if m == l))

    groups: dict[str, list] = defaultdict(list)
    for p, s in zip(pairs, scores):
        groups[p.bias_type].append(s)
    return summarise(list(scores)), {k: summarise(v) for k, v in groups.items()}


def crows_pairs(model, tokenizer, pairs: Sequence[Pair], n_boot: int = 1000, seed: int = 0,
                progress: Callable[[int], None] | None = None,
                scorer: Callable[[Pair], tuple[float, float]] | None = None) -> CrowsPairsResult:
    """Run the audit; `progress(1)` after each pair. `scorer` overrides the model (tests, other metrics)."""
    scorer = scorer or PairScorer(model, tokenizer)
    scores = []
    for p in pairs:
        scores.append(scorer(p))
        if progress:
            progress(1)
    overall, by_cat = stereotype_score(pairs, scores, n_boot, seed)
    return CrowsPairsResult(getattr(scorer, "metric", "custom"), overall, by_cat, scores)


# ---------------------------------------------------------------- counterfactual classifier test


def load_swaps(path: str | Path | None = None) -> dict[str, list[list[str]]]:
    """Demographic term groups, as data: {category: [[term, counterpart, ...], ...]} (each list: words that
    replace one another). The default lives in `data/demographic_swaps.yaml`."""
    text = (Path(path).read_text(encoding="utf-8") if path
            else (resources.files("lmforge.safety") / "data" / "demographic_swaps.yaml").read_text(encoding="utf-8"))
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(g, list) and len(g) >= 2 and all(isinstance(w, str) for w in g)
                                        for g in v) for v in data.values()):
        raise BiasError("swap lists must map each category to lists of at least two interchangeable terms")
    return data


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def counterfactuals(text: str, groups: list[list[str]]) -> list[str]:
    """Variants of `text` with every term of one group position replaced by its counterpart at another
    position (e.g. he->she, him->her, man->woman all at once), one variant per alternative position."""
    lookup: dict[str, tuple[int, int]] = {}  # word -> (group row, position)
    for r, g in enumerate(groups):
        for k, w in enumerate(g):
            lookup.setdefault(w.lower(), (r, k))
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, lookup), key=len, reverse=True)) + r")\b", re.I)
    hits = [(m, lookup[m.group(1).lower()]) for m in pattern.finditer(text)]
    if not hits:
        return []
    width = max(len(g) for g in groups)
    positions = {k for _, (_, k) in hits}
    out = []
    for target in range(width):
        if positions == {target}:
            continue
        parts, pos = [], 0
        for m, (r, k) in hits:
            row = groups[r]
            new = row[target] if target < len(row) else row[k]
            parts += [text[pos:m.start()], _match_case(new, m.group(1))]
            pos = m.end()
        variant = "".join(parts) + text[pos:]
        if variant != text and variant not in out:
            out.append(variant)
    return out


@dataclass
class FlipReport:
    texts: int  # texts that had at least one term of the category
    counterfactuals: int
    flips: int
    examples: list[tuple[str, str, object, object]]  # (original, variant, prediction, variant's prediction)

    @property
    def flip_rate(self) -> float:
        return self.flips / self.counterfactuals if self.counterfactuals else 0.0

    def to_dict(self) -> dict:
        return {"texts": self.texts, "counterfactuals": self.counterfactuals, "flips": self.flips,
                "flip_rate": round(self.flip_rate, 4)}


def counterfactual_flips(predict: Callable[[list[str]], list], texts: Iterable[str],
                         swaps: dict[str, list[list[str]]] | None = None, max_examples: int = 5) -> dict[str, FlipReport]:
    """For each category of `swaps`, count how often swapping demographic terms changes `predict`'s label."""
    swaps = swaps if swaps is not None else load_swaps()
    texts = list(texts)
    reports = {}
    for category, groups in swaps.items():
        originals, variants, owner = [], [], []
        for t in texts:
            cf = counterfactuals(t, groups)
            if cf:
                owner += [len(originals)] * len(cf)
                originals.append(t)
                variants += cf
        if not originals:
            reports[category] = FlipReport(0, 0, 0, [])
            continue
        base = list(predict(originals))
        new = list(predict(variants))
        flips = [(originals[o], v, base[o], p) for o, v, p in zip(owner, variants, new) if p != base[o]]
        reports[category] = FlipReport(len(originals), len(variants), len(flips), flips[:max_examples])
    return reports


def classifier_predict(model, tokenizer, batch_size: int = 32) -> Callable[[list[str]], list[int]]:
    """A `predict` function for `counterfactual_flips` from an lmforge classification model."""
    if getattr(model, "task", None) != "classification":
        raise BiasError("the counterfactual test needs a classification model (task='classification')")

    @torch.no_grad()
    def predict(texts: list[str]) -> list[int]:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=512)
            logits = model(batch["input_ids"], batch["attention_mask"]).logits
            out += logits.argmax(-1).tolist()
        return out

    return predict


def sample_pairs(pairs: list[Pair], limit: int | None, seed: int = 0) -> list[Pair]:
    """A reproducible subset (stratification is not needed for an estimate; the CI shows the cost)."""
    if limit is None or limit >= len(pairs):
        return pairs
    return random.Random(seed).sample(pairs, limit)
