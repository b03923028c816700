"""Precision and recall of lmforge's PII detector per entity type on the generated labelled set (with decoys).

    python scripts/eval_pii.py [--n 5000] [--seed 2024]
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from lmforge.safety.pii_synth import evaluate, synthetic_pii_set


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    scores = evaluate(synthetic_pii_set(args.n, args.seed))
    t = Table(title=f"PII detection, {args.n} generated texts (seed {args.seed}), exact span match")
    for c in ("entity", "support", "precision", "recall", "F1"):
        t.add_column(c)
    for typ, s in scores.items():
        t.add_row(typ, str(s["support"]), f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}")
    Console().print(t)


if __name__ == "__main__":
    main()
