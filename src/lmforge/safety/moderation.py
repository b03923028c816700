"""Harmful-content moderation: a small classifier lmforge trains itself, per-category scores in the shape of
OpenAI's `/v1/moderations`, and block / flag / allow policies with a refusal message kept as data.

The model is hashed word and character n-grams, TF-IDF weighted, under one logistic regression per category
(scikit-learn to train; numpy alone to score). It ships as `data/moderation.npz` (arrays only, never a
pickle, so loading a model file cannot run code) with the decision thresholds and the measured held-out
scores in `data/moderation.yaml`. `scripts/train_moderation.py` rebuilds both from the Davidson et al. (2017)
tweets in `shared/data/hate_speech_offensive/`, with the CLINC150 assistant requests (`shared/data/clinc150/`)
as benign examples: the tweets are 83% offensive, so without ordinary chat text the model would take any
informal message for abuse.

Categories (what the training data can support, nothing more):
- `hate`: hate speech, "language used to express hatred towards a targeted group or ... to be derogatory,
  to humiliate, or to insult" a group (Davidson et al. 2017, section 2) -- OpenAI's `hate`.
- `harassment`: offensive or abusive language (hate speech included), Davidson's `offensive_language` and
  `hate_speech` classes together -- the nearest of OpenAI's categories, but broader: profanity counts.
OpenAI's other categories (self-harm, sexual, violence, ...) have no labelled data here and are not reported.
"""
from __future__ import annotations

import html
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

CATEGORIES = ("hate", "harassment")
MODEL_NAME = "lmforge-moderation-1"
ACTIONS = ("block", "flag", "allow")

# Hashing keeps the artifact free of a vocabulary (and of any training text): 2**18 buckets per view.
N_FEATURES = 2**18
_WORD = dict(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b")
_CHAR = dict(analyzer="char_wb", ngram_range=(2, 5))


class ModerationError(ValueError):
    """Bad input to moderation or a policy file that does not validate; one sentence for the user."""


def normalise(text: str) -> str:
    """What both training and scoring see: entities decoded, URLs and @mentions replaced, lower case."""
    text = html.unescape(text)
    text = re.sub(r"https?://\S+", " URL ", text)
    text = re.sub(r"@\w+", " @USER ", text)
    text = re.sub(r"\bRT\b", " ", text)
    return re.sub(r"\s+", " ", text).strip().lower()


def _vectorizers():
    from sklearn.feature_extraction.text import HashingVectorizer

    common = dict(n_features=N_FEATURES, alternate_sign=False, norm=None, lowercase=False)
    return HashingVectorizer(**common, **_WORD), HashingVectorizer(**common, **_CHAR)


def featurize(texts: list[str], idf: np.ndarray):
    """(N, 2 * N_FEATURES) sparse TF-IDF rows, sublinear tf, L2-normalised per view."""
    from scipy import sparse
    from sklearn.preprocessing import normalize

    norm = [normalise(t) for t in texts]
    views = []
    for i, vec in enumerate(_vectorizers()):
        x = vec.transform(norm).tocsr().astype(np.float32)
        x.data = 1.0 + np.log(x.data)  # sublinear tf
        x = x.multiply(idf[i * N_FEATURES:(i + 1) * N_FEATURES]).tocsr()
        views.append(normalize(x))
    return sparse.hstack(views).tocsr()


@dataclass
class Result:
    """One input's moderation: OpenAI's `results[i]`."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]

    def to_dict(self) -> dict:
        return {"flagged": self.flagged, "categories": self.categories, "category_scores": self.category_scores}


class ModerationModel:
    """Scores texts per category. `ModerationModel.load()` gives the model shipped with lmforge."""

    def __init__(self, idf: np.ndarray, coef: np.ndarray, intercept: np.ndarray, thresholds: dict[str, float],
                 name: str = MODEL_NAME, metrics: dict | None = None):
        if coef.shape != (len(CATEGORIES), idf.shape[0]):
            raise ModerationError(f"moderation weights have shape {coef.shape}, expected {(len(CATEGORIES), idf.shape[0])}")
        self.idf, self.coef, self.intercept = idf, coef, intercept
        self.thresholds = thresholds
        self.name = name
        self.metrics = metrics or {}

    @classmethod
    def load(cls, folder: str | Path | None = None) -> "ModerationModel":
        """Read `moderation.npz` + `moderation.yaml` from `folder` (default: the package's own copy)."""
        root = Path(folder) if folder is not None else Path(str(resources.files("lmforge.safety") / "data"))
        npz, meta = root / "moderation.npz", root / "moderation.yaml"
        if not npz.is_file() or not meta.is_file():
            raise ModerationError(f"{root} lacks moderation.npz or moderation.yaml; run scripts/train_moderation.py")
        with np.load(npz, allow_pickle=False) as z:
            idf, coef, intercept = z["idf"], z["coef"], z["intercept"]
        info = yaml.safe_load(meta.read_text(encoding="utf-8"))
        thresholds = {c: float(info["thresholds"][c]) for c in CATEGORIES}
        return cls(idf, coef.astype(np.float32), intercept.astype(np.float32), thresholds,
                   info.get("model", MODEL_NAME), info.get("metrics"))

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "moderation.npz", idf=self.idf.astype(np.float16),
                            coef=self.coef.astype(np.float16), intercept=self.intercept.astype(np.float32))
        meta = {"model": self.name, "categories": list(CATEGORIES), "thresholds": self.thresholds,
                "metrics": self.metrics}
        (folder / "moderation.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")

    def scores(self, texts: list[str]) -> np.ndarray:
        """(N, len(CATEGORIES)) probabilities."""
        x = featurize(texts, self.idf.astype(np.float32))
        z = np.asarray(x @ self.coef.T) + self.intercept  # (N, C)
        return 1.0 / (1.0 + np.exp(-z))

    def moderate(self, texts: list[str], thresholds: dict[str, float] | None = None) -> list[Result]:
        th = {**self.thresholds, **(thresholds or {})}
        out = []
        for row in self.scores(texts):
            scores = {c: round(float(s), 6) for c, s in zip(CATEGORIES, row)}
            cats = {c: scores[c] >= th[c] for c in CATEGORIES}
            out.append(Result(any(cats.values()), cats, scores))
        return out


@lru_cache(maxsize=1)
def default_model() -> ModerationModel:
    return ModerationModel.load()


def _inputs(input) -> list[str]:
    if isinstance(input, str):
        return [input]
    if isinstance(input, list) and input and all(isinstance(t, str) for t in input):
        return input
    raise ModerationError("input must be a string or a non-empty list of strings")


def moderation_response(input, model: ModerationModel | None = None) -> dict:
    """The body of OpenAI's `POST /v1/moderations` response for `input` (a string or a list of strings)."""
    texts = _inputs(input)
    model = model or default_model()
    return {"id": f"modr-{secrets.token_hex(12)}", "model": model.name,
            "results": [r.to_dict() for r in model.moderate(texts)]}


# ---------------------------------------------------------------- policies


@dataclass
class Policy:
    """What to do with text a category fires on: one action per category ("block", "flag" or "allow"),
    optional per-category thresholds overriding the model's, and the refusal message shown on a block.
    Kept as data (YAML/JSON) so an operator edits it per API key or bot without code."""

    actions: dict[str, str] = field(default_factory=lambda: {c: "flag" for c in CATEGORIES})
    thresholds: dict[str, float] = field(default_factory=dict)
    refusal_message: str = "Sorry, I can't help with that request because it goes against the usage policy."

    def __post_init__(self):
        for c, a in self.actions.items():
            if c not in CATEGORIES:
                raise ModerationError(f"policy names unknown category {c!r}; known: {', '.join(CATEGORIES)}")
            if a not in ACTIONS:
                raise ModerationError(f"policy action for {c!r} is {a!r}; choose block, flag or allow")
        for c, t in self.thresholds.items():
            if c not in CATEGORIES:
                raise ModerationError(f"policy threshold names unknown category {c!r}")
            if not (isinstance(t, (int, float)) and 0 <= t <= 1):
                raise ModerationError(f"policy threshold for {c!r} must be a number in [0, 1]")
        if not isinstance(self.refusal_message, str) or not self.refusal_message.strip():
            raise ModerationError("policy refusal_message must be a non-empty string")

    @classmethod
    def from_dict(cls, d: dict | None) -> "Policy":
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ModerationError("a moderation policy must be a mapping")
        unknown = set(d) - {"actions", "thresholds", "refusal_message"}
        if unknown:
            raise ModerationError(f"unknown policy keys: {', '.join(sorted(unknown))}")
        base = cls()
        actions = d.get("actions", {})
        if isinstance(actions, str):  # one action for every category
            actions = {c: actions for c in CATEGORIES}
        if not isinstance(actions, dict):
            raise ModerationError("policy 'actions' must be a mapping or one of block, flag, allow")
        return cls({**base.actions, **actions}, dict(d.get("thresholds") or {}),
                   d.get("refusal_message", base.refusal_message))

    @classmethod
    def from_file(cls, path: str | Path) -> "Policy":
        try:
            return cls.from_dict(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError) as e:
            raise ModerationError(f"cannot read policy {path}: {e}") from None


@dataclass
class Decision:
    """The outcome of a policy on one text: `action` is the strongest action among the categories that fired."""

    action: str  # "block", "flag" or "allow"
    result: Result
    message: str | None = None  # the refusal message when blocked

    @property
    def blocked(self) -> bool:
        return self.action == "block"


def check(text: str, policy: Policy | None = None, model: ModerationModel | None = None) -> Decision:
    """Moderate one text under `policy`: the hook the API calls on requests (input) and completions (output)."""
    policy = policy or Policy()
    model = model or default_model()
    result = model.moderate(_inputs(text), policy.thresholds)[0]
    fired = [policy.actions.get(c, "flag") for c, hit in result.categories.items() if hit]
    action = min(fired, key=ACTIONS.index) if fired else "allow"
    return Decision(action, result, policy.refusal_message if action == "block" else None)


# ---------------------------------------------------------------- training


def read_davidson(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Tweets and (N, 2) binary labels [hate, harassment] from Davidson et al.'s labeled_data.csv."""
    import csv

    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            cls = int(row["class"])  # 0 hate speech, 1 offensive language, 2 neither
            texts.append(row["tweet"])
            labels.append([cls == 0, cls in (0, 1)])
    return texts, np.asarray(labels, dtype=np.int8)


def _best_f1(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """(best F1, its threshold) over all thresholds."""
    from sklearn.metrics import precision_recall_curve

    p, r, t = precision_recall_curve(y, s)
    f1 = 2 * p * r / np.clip(p + r, 1e-9, None)
    i = int(np.argmax(f1[:-1]))
    return float(f1[i]), float(t[i])


def read_clinc_negatives(path: str | Path) -> list[str]:
    """CLINC150 utterances (requests people type to an assistant): benign examples for both categories, so the
    model learns what ordinary chat traffic looks like and not only tweets (train, val and oos_* splits)."""
    import json

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [u for split in ("train", "val", "test", "oos_train", "oos_val", "oos_test") for u, _ in data.get(split, [])]


def read_training_data(data_dir: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Texts, (N, 2) labels and a source id per text (0 Davidson tweets, 1 CLINC150 utterances)."""
    data_dir = Path(data_dir)
    texts, labels = read_davidson(data_dir / "hate_speech_offensive" / "labeled_data.csv")
    source = [0] * len(texts)
    clinc = data_dir / "clinc150" / "data_small.json"
    if clinc.is_file():
        extra = read_clinc_negatives(clinc)
        texts = texts + extra
        labels = np.concatenate([labels, np.zeros((len(extra), len(CATEGORIES)), np.int8)])
        source += [1] * len(extra)
    return texts, labels, np.asarray(source, np.int8)


def train(texts: list[str], labels: np.ndarray, *, source: np.ndarray | None = None, seed: int = 0, Cs: tuple[float, ...] = (0.5, 2.0, 8.0),
          progress=None) -> tuple[ModerationModel, dict]:
    """Fit on an 80/10/10 split (stratified on the 3 classes): train one logistic regression per category and
    regularisation C, keep the C and the threshold with the best F1 on validation, and report
    precision/recall/F1/ROC-AUC on the held-out test split. Returns (model, metrics)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    source = np.zeros(len(texts), np.int8) if source is None else source
    strata = labels[:, 0] * 2 + labels[:, 1] + 4 * source
    idx = np.arange(len(texts))
    tr, rest = train_test_split(idx, test_size=0.2, random_state=seed, stratify=strata)
    va, te = train_test_split(rest, test_size=0.5, random_state=seed, stratify=strata[rest])

    # IDF from the training split only.
    from sklearn.feature_extraction.text import TfidfTransformer

    norm = [normalise(texts[i]) for i in tr]
    idf = np.concatenate([TfidfTransformer(sublinear_tf=True).fit(v.transform(norm)).idf_ for v in _vectorizers()])
    idf = idf.astype(np.float16).astype(np.float32)  # the precision it is stored in
    x_all = featurize(texts, idf)

    x_tr, x_va, x_te = x_all[tr], x_all[va], x_all[te]
    coef, intercept, thresholds, chosen_C = [], [], {}, {}
    for j, c in enumerate(CATEGORIES):
        best = None
        for C in Cs:
            clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
            clf.fit(x_tr, labels[tr, j])
            # thresholds are picked on the float16-rounded weights that ship
            w = clf.coef_[0].astype(np.float16).astype(np.float32)
            s_va = 1 / (1 + np.exp(-(np.asarray(x_va @ w).ravel() + clf.intercept_[0])))
            f1, th = _best_f1(labels[va, j], s_va)
            if best is None or f1 > best[0]:
                best = (f1, th, C, w, float(clf.intercept_[0]))
            if progress:
                progress(f"{c} C={C}: validation F1 {f1:.3f}")
        _, thresholds[c], chosen_C[c], w, b0 = best
        thresholds[c] = round(thresholds[c], 4)
        coef.append(w)
        intercept.append(b0)
    model = ModerationModel(idf, np.asarray(coef, np.float32), np.asarray(intercept, np.float32), thresholds)

    s_te = model.scores([texts[i] for i in te])
    metrics = {"data": "hate_speech_offensive (Davidson et al. 2017) + CLINC150 utterances as benign examples"
               if source.any() else "hate_speech_offensive (Davidson et al. 2017)", "split": "80/10/10 stratified, seed %d" % seed,
               "n_train": len(tr), "n_val": len(va), "n_test": len(te), "test": {}}
    for j, c in enumerate(CATEGORIES):
        y, pred = labels[te, j], (s_te[:, j] >= model.thresholds[c]).astype(int)
        metrics["test"][c] = {
            "positives": int(y.sum()), "precision": round(float(precision_score(y, pred)), 4),
            "recall": round(float(recall_score(y, pred)), 4), "f1": round(float(f1_score(y, pred)), 4),
            "roc_auc": round(float(roc_auc_score(y, s_te[:, j])), 4), "threshold": model.thresholds[c],
            "C": chosen_C[c]}
        tweets = te[source[te] == 0]
        if len(tweets) < len(te):  # the Davidson-only figure, comparable with the paper's
            yt = labels[tweets, j]
            pt = (s_te[source[te] == 0, j] >= model.thresholds[c]).astype(int)
            metrics["test"][c]["f1_tweets_only"] = round(float(f1_score(yt, pt)), 4)
            metrics["test"][c]["false_positive_rate_clinc"] = round(float(
                (s_te[source[te] == 1, j] >= model.thresholds[c]).mean()), 4)
    model.metrics = metrics
    return model, metrics
