"""Reproducibility check: a re-run's results.json against a committed one, cell by cell, within SPREAD
(the rule the report states). `lmforge compare … --check-against results.json` runs it after a run."""
from __future__ import annotations

import math
from dataclasses import dataclass

RELATIVE = 0.02
SPREAD = ("A benchmark cell (mean over seeds) agrees when the two means differ by at most twice the standard error "
          "of their difference, 2·√(s₁²/n₁ + s₂²/n₂) with the seeds' standard deviations s and seed counts n, and "
          "never by less than one example's worth of the metric (1 / scored examples; ×100 for metrics in percent), "
          "so cells with no seed spread may still move by one example. A single-run measurement (final validation "
          "loss, held-out bits per character, the sample measures) agrees within 2% relative; counts and names "
          "(parameters, steps, tokens seen, attention pattern, counted training FLOPs, claim verdicts) must be equal. "
          "Timings and memory depend on the machine and its load and are not compared.")
FRACTION_METRICS = ("accuracy", "mcc")  # and f1 on classification tasks; the rest are percentages


@dataclass
class Cell:
    table: str
    row: str
    column: str
    reference: object
    new: object
    tolerance: float | None  # None: must be equal

    @property
    def agrees(self) -> bool:
        if self.tolerance is None:
            return self.reference == self.new
        if self.reference is None or self.new is None:
            return self.reference is self.new
        return abs(float(self.new) - float(self.reference)) <= self.tolerance

    def line(self) -> str:
        show = lambda x: "missing" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)
        tol = "exact" if self.tolerance is None else f"± {self.tolerance:.3g}"
        return (f"{'agree ' if self.agrees else 'DIFFER'}  {self.table} | {self.row} | {self.column}: "
                f"{show(self.reference)} -> {show(self.new)} ({tol})")


def seed_spread(ref: dict, new: dict, metric: str, scale: float, examples: int) -> float:
    """2 x the standard error of the difference of two means over seeds, at least one example's worth."""
    se = math.sqrt(ref["std"][metric] ** 2 / ref["n"] + new["std"][metric] ** 2 / new["n"])
    return max(2 * se, scale / max(examples, 1))


def compare_results(ref: dict, new: dict) -> list[Cell]:
    """Every comparable cell of two studies' results (the families and tasks both hold)."""
    cells: list[Cell] = []
    fams = [f for f in ref["families"] if f in new["families"]]
    for f in fams:
        a, b = ref["families"][f], new["families"][f]
        cells += [Cell("Architecture", f, "parameters", a["architecture"]["parameters"],
                       b["architecture"]["parameters"], None),
                  Cell("Architecture", f, "attention", a["architecture"]["attention"], b["architecture"]["attention"],
                       None)]
        for key in ("steps", "tokens_seen"):
            cells.append(Cell("Pretraining", f, key, a["pretrain"][key], b["pretrain"][key], None))
        cells.append(Cell("Cost", f, "training FLOPs per token", a["cost"].get("train_flops_per_token"),
                          b["cost"].get("train_flops_per_token"), None))
        cells.append(_relative("Pretraining", f, "final validation loss", a["pretrain"]["final_val_loss"],
                               b["pretrain"]["final_val_loss"]))
        if a["likelihood"] or b["likelihood"]:
            cells.append(_relative("Generation ability", f, "held-out bits per character",
                                   (a["likelihood"] or {}).get("bits_per_char"), (b["likelihood"] or {}).get("bits_per_char")))
        for key in ("bigram_perplexity", "distinct_1", "distinct_2", "repetition_rate"):
            cells.append(_relative("Generation ability", f, key, a["generation"].get(key), b["generation"].get(key)))
    for task, t in ref["tasks"].items():
        if task not in new["tasks"]:
            continue
        for f in fams:
            x, y = t["families"].get(f), new["tasks"][task]["families"].get(f)
            if not x or not y or not x.get("n") or not y.get("n"):
                if x and y:
                    cells.append(Cell("Benchmark performance", f"{task} {t['primary']}", f, _state(x), _state(y), None))
                continue
            for metric in x["mean"]:
                if metric not in y["mean"]:
                    continue
                fraction = metric in FRACTION_METRICS or (metric == "f1" and t["kind"] == "classification")
                tol = seed_spread(x, y, metric, 1.0 if fraction else 100.0, x.get("eval_examples") or 1)
                cells.append(Cell("Benchmark performance", f"{task} {metric}", f, x["mean"][metric],
                                  y["mean"][metric], tol))
    new_claims = {c["claim"]: c["verdict"] for c in new.get("claims", [])}
    for c in ref.get("claims", []):
        if c["claim"] in new_claims:
            cells.append(Cell("Claims versus measurement", c["claim"], "verdict", c["verdict"],
                              new_claims[c["claim"]], None))
    return cells


def _relative(table, row, column, a, b) -> Cell:
    return Cell(table, row, column, a, b, None if a is None else RELATIVE * abs(float(a)))


def _state(e: dict) -> str:
    return "refused" if e.get("refused") else "not run" if not e.get("n") else "ran"


def summary(cells: list[Cell]) -> str:
    agree = sum(c.agrees for c in cells)
    return f"{agree} of {len(cells)} cells agree within the stated spread" + \
        ("" if agree == len(cells) else f"; {len(cells) - agree} differ")
