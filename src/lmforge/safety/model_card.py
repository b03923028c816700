"""Model cards (Mitchell et al. 2019, "Model Cards for Model Reporting") written as Markdown beside a checkpoint.

The sections are the paper's: model details, intended use, factors, metrics, evaluation data, training data,
quantitative analyses, ethical considerations, caveats and recommendations. Everything comes from data the
trainer and the audits already produce (`CardData`); a section with nothing recorded says so instead of
being left out, so a reader can tell "not measured" from "forgotten". A YAML header carries the fields the
Hugging Face Hub reads (license, datasets, tags, metrics).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

NOT_RECORDED = "_Not recorded._"

DEFAULT_LIMITS = [
    "Trained on a small corpus: expect factual errors, repetition and text that merely sounds plausible.",
    "Reproduces biases of its training data; see the bias audit before using it in decisions about people.",
    "Not evaluated for safety-critical, medical, legal or financial advice; do not use it there.",
]


@dataclass
class CardData:
    """What a model card says. `training`, `evaluation` and `bias` are the dicts the trainer, the evaluator and
    `bias.CrowsPairsResult.to_dict()` produce."""

    name: str
    family: str = ""
    task: str = ""
    parameters: int | None = None
    version: str = ""
    license: str = "apache-2.0"
    authors: str = ""
    description: str = ""
    datasets: list[str] = field(default_factory=list)
    data_description: str = ""  # what the data is, where it came from, how it was cleaned (PII scrub report)
    objective: str = ""  # mlm, clm, plm, span corruption, classification, ...
    training: dict = field(default_factory=dict)  # steps, tokens, batch size, learning rate, hardware, time
    evaluation: dict = field(default_factory=dict)  # metric -> value, or dataset -> {metric: value}
    evaluation_data: str = ""
    bias: dict = field(default_factory=dict)  # CrowS-Pairs result and/or counterfactual flip reports
    intended_use: str = ""
    out_of_scope: list[str] = field(default_factory=list)
    limitations: list[str] = field(default_factory=lambda: list(DEFAULT_LIMITS))
    ethical_considerations: list[str] = field(default_factory=list)
    safety: dict = field(default_factory=dict)  # e.g. {"watermark": "on (gamma 0.25, delta 2)", "pii_scrub": {...}}

    @classmethod
    def from_model(cls, model, name: str, **kwargs) -> "CardData":
        return cls(name=name, family=getattr(model, "family", ""), task=getattr(model, "task", ""),
                   parameters=model.num_parameters() if hasattr(model, "num_parameters") else None, **kwargs)


def _table(d: dict, key: str = "key", value: str = "value") -> str:
    rows = [f"| {key} | {value} |", "|---|---|"]
    for k, v in d.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, (dict, list)):
            v = json.dumps(v, ensure_ascii=False)
        rows.append(f"| {k} | {v} |")
    return "\n".join(rows)


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {i}" for i in items) if items else NOT_RECORDED


def _bias_section(bias: dict) -> str:
    if not bias:
        return NOT_RECORDED + " Run `lmforge audit bias --model PATH` and pass its JSON to the card."
    parts = []
    crows = bias.get("crows_pairs")
    if crows:
        o = crows["overall"]
        parts.append(f"CrowS-Pairs stereotype score ({crows['metric']}; 50 = no preference, higher = prefers the "
                     f"stereotype): **{o['score']:.1f}** (95% CI {o['ci95'][0]:.1f}-{o['ci95'][1]:.1f}, "
                     f"{o['n']} pairs).\n")
        rows = ["| bias type | score | 95% CI | pairs |", "|---|---|---|---|"]
        for cat, s in crows.get("by_category", {}).items():
            rows.append(f"| {cat} | {s['score']:.1f} | {s['ci95'][0]:.1f}-{s['ci95'][1]:.1f} | {s['n']} |")
        parts.append("\n".join(rows))
    flips = bias.get("counterfactual")
    if flips:
        rows = ["| swapped terms | texts | counterfactuals | prediction flips | flip rate |", "|---|---|---|---|---|"]
        for cat, r in flips.items():
            rows.append(f"| {cat} | {r['texts']} | {r['counterfactuals']} | {r['flips']} | {r['flip_rate']:.1%} |")
        parts.append("Counterfactual test (demographic terms swapped; a fair classifier never flips):\n\n" + "\n".join(rows))
    other = {k: v for k, v in bias.items() if k not in ("crows_pairs", "counterfactual")}
    if other:
        parts.append(_table(other))
    return "\n\n".join(parts)


def render(card: CardData) -> str:
    """The card as Markdown with a YAML header."""
    header = {"license": card.license, "library_name": "lmforge",
              "tags": [t for t in (card.family, card.task, card.objective) if t]}
    if card.datasets:
        header["datasets"] = card.datasets
    flat_metrics = {k: v for k, v in card.evaluation.items() if isinstance(v, (int, float))}
    if flat_metrics:
        header["metrics"] = list(flat_metrics)
    details = {"family": card.family or "-", "task": card.task or "-",
               "parameters": f"{card.parameters:,}" if card.parameters else "-", "version": card.version or "-",
               "license": card.license, "authors": card.authors or "-",
               "card written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    evaluation = card.evaluation
    s = [
        "---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
        f"# Model card: {card.name}", "",
        card.description or "", "",
        "## Model details", "", _table(details, "field", "value"), "",
        "## Intended use", "", card.intended_use or NOT_RECORDED, "",
        "Out of scope:", "", _bullets(card.out_of_scope), "",
        "## Factors", "",
        "Performance and behaviour can differ across dialects, topics and the demographic groups a text mentions; "
        "the bias audit below measures the last for the groups CrowS-Pairs covers.", "",
        "## Metrics", "", _table(evaluation, "metric", "value") if evaluation else NOT_RECORDED, "",
        "## Evaluation data", "", card.evaluation_data or NOT_RECORDED, "",
        "## Training data", "", (", ".join(card.datasets) + ". " if card.datasets else "")
        + (card.data_description or ("" if card.datasets else NOT_RECORDED)), "",
        "## Training procedure", "", f"Objective: {card.objective or '-'}", "",
        _table(card.training, "setting", "value") if card.training else NOT_RECORDED, "",
        "## Quantitative analyses: bias audit", "", _bias_section(card.bias), "",
        "## Safety features", "", _table(card.safety, "feature", "setting") if card.safety else NOT_RECORDED, "",
        "## Ethical considerations", "", _bullets(card.ethical_considerations), "",
        "## Caveats and recommendations", "", _bullets(card.limitations), "",
    ]
    return "\n".join(s).replace("\n\n\n", "\n\n")


def write_model_card(folder: str | Path, card: CardData, filename: str = "README.md") -> Path:
    """Write the card into a checkpoint folder (README.md is where the Hub looks) and its data as
    model_card.json, so a later audit can update one section and re-render."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(render(card), encoding="utf-8")
    (folder / "model_card.json").write_text(json.dumps(asdict(card), indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def update_model_card(folder: str | Path, **changes) -> Path:
    """Merge `changes` (e.g. bias={...}) into the folder's model_card.json and re-render the card."""
    folder = Path(folder)
    data_path = folder / "model_card.json"
    data = json.loads(data_path.read_text(encoding="utf-8")) if data_path.is_file() else {"name": folder.name}
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    return write_model_card(folder, CardData(**data))
