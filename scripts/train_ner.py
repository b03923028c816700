"""Train the NER model lmforge ships, and package it as a small difference from MiniLM.

    python scripts/train_ner.py --out runs/ner-minilm            # train (about 15 min on 1 thread) + package
    python scripts/train_ner.py --out runs/ner-minilm --no-train # package an existing run

Training is `lmforge finetune` itself; the same run from the shell:

    lmforge finetune --model all-MiniLM-L6-v2 --task conll2003 --data-dir ../shared/data --out runs/ner-minilm \\
        --epochs 4 --batch-size 32 --lr 1e-4 --freeze-embeddings --save-every 500 --threads 1

Packaging (`lmforge.tasks.delta.write_delta`) stores what differs from the installed all-MiniLM-L6-v2:
the change of every layer matrix quantized to int4 (groups of 128, float16 scales; int8 would be
11.1 MB, over the 10 MB budget, and scores the same), the changed vectors in float16, the new head; the word
embeddings are frozen in training and so are not stored. The result goes to
src/lmforge/safety/data/ner-minilm/ with lmforge_task.json; the model card there is written by hand from
`benchmarks/ner.py`'s figures. CoNLL-2003 is research-only (../shared/data/README.md): nothing of the
data goes into the package, only the weights trained on it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "src" / "lmforge" / "safety" / "data" / "ner-minilm"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "ner-minilm")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--no-train", dest="train", action="store_false", help="package the run already in --out")
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bits", type=int, default=4, choices=(4, 8), help="quantization of the layer differences")
    ap.add_argument("--package-dir", type=Path, default=PACKAGE_DIR)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lmforge.hub import load
    from lmforge.tasks import FinetuneArgs, finetune
    from lmforge.tasks.delta import write_delta
    from lmforge.tasks.inference import TASK_FILE

    if args.train:
        t0 = time.perf_counter()
        r = finetune(FinetuneArgs(model="all-MiniLM-L6-v2", task="conll2003", out=args.out, data_dir=args.data_dir,
                                  epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_length=128,
                                  freeze_embeddings=True, save_every=500),
                     progress=lambda s, n, loss: s % 100 == 0 and print(f"step {s}/{n} loss {loss:.4f}", flush=True))
        (args.out / "eval_results.json").write_text(json.dumps(
            {"task": "conll2003", "split": "validation", "metrics": r.metrics, "train_seconds": r.train_seconds,
             "steps": r.steps, "wall_seconds": time.perf_counter() - t0}, indent=2) + "\n")
        print(f"trained in {r.train_seconds:.0f} s; dev F1 {r.metrics['f1']:.4f}")

    tuned, _ = load(args.out)
    base, _ = load("all-MiniLM-L6-v2", task="base")
    args.package_dir.mkdir(parents=True, exist_ok=True)
    info = write_delta(tuned, base, args.package_dir, base_name="all-MiniLM-L6-v2", bits=args.bits)
    shutil.copy(args.out / TASK_FILE, args.package_dir / TASK_FILE)
    if (args.out / "eval_results.json").is_file():
        shutil.copy(args.out / "eval_results.json", args.package_dir / "train_results.json")
    print(f"packaged to {args.package_dir}: {info['bytes'] / 1e6:.2f} MB ({info})")


if __name__ == "__main__":
    main()
