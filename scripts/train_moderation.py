"""Train lmforge's moderation model on shared/data/hate_speech_offensive and write it into the package.

    python scripts/train_moderation.py [--data PATH] [--out src/lmforge/safety/data]

Writes moderation.npz (hashed TF-IDF idf + logistic-regression weights, float16) and moderation.yaml
(thresholds picked on the validation split, precision/recall/F1/ROC-AUC on the held-out test split).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lmforge.safety.moderation import read_training_data, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data",
                    help="the shared data folder (hate_speech_offensive/ and, optionally, clinc150/)")
    ap.add_argument("--out", type=Path, default=ROOT / "src/lmforge/safety/data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    console = Console()
    if not (args.data / "hate_speech_offensive" / "labeled_data.csv").is_file():
        raise SystemExit(f"error: {args.data}/hate_speech_offensive/labeled_data.csv not found; pass --data FOLDER")
    t0 = time.time()
    with console.status("training the moderation model"):
        texts, labels, source = read_training_data(args.data)
        model, metrics = train(texts, labels, source=source, seed=args.seed, progress=console.log)
    model.save(args.out)
    table = Table(title=f"held-out test split (n={metrics['n_test']}), {time.time() - t0:.0f} s")
    for col in ("category", "positives", "precision", "recall", "F1", "ROC-AUC", "threshold", "F1 tweets",
                "FPR CLINC"):
        table.add_column(col)
    for c, m in metrics["test"].items():
        table.add_row(c, str(m["positives"]), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
                      f"{m['roc_auc']:.3f}", f"{m['threshold']:.3f}", str(m.get("f1_tweets_only", "-")),
                      str(m.get("false_positive_rate_clinc", "-")))
    console.print(table)
    size = sum(p.stat().st_size for p in args.out.glob("moderation.*"))
    console.print(f"wrote {args.out}/moderation.npz + moderation.yaml ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
