"""Train the demo models bundled in `lmforge/demo_models/`: one small checkpoint per family, on public-domain text.

    python scripts/train_demo_models.py                         # all five, one after another
    python scripts/train_demo_models.py --families gpt2,t5      # some of them
    python scripts/train_demo_models.py --steps 50 --out /tmp/demo   # a quick trial outside the package

Data: Tiny Shakespeare and seven Project Gutenberg children's classics from `../shared/data/` (public domain;
the Project Gutenberg header and footer are stripped). Each family gets its own tokenizer (4,096 tokens)
trained on that text, and is pretrained with `lmforge pretrain`'s loop and its own objective. The weights
are stored in float16 with the tokenizer, a card (README.md: data, objective, steps, validation loss) and
the loss curve. Everything is seeded, so a rerun on the same machine rebuilds the same files.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from lmforge.models.hf_io import load_model
from lmforge.train import Args, pretrain

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LMFORGE_DATA", ROOT.parent / "shared" / "data"))
PACKAGE = ROOT / "src" / "lmforge" / "demo_models"
FAMILIES = ("bert", "roberta", "gpt2", "xlnet", "t5")
DIMS = dict(layers=4, hidden=128, heads=4, ffn=512)  # about 1.4M parameters (T5: 2.4M); 2.7-4.8 MB in fp16
PER_FAMILY = {  # XLNet predicts 1/6 of the tokens: give it more steps for a comparable signal
    "bert": dict(steps=200), "roberta": dict(steps=200), "gpt2": dict(steps=200), "xlnet": dict(steps=250),
    "t5": dict(steps=200),
}


def gutenberg_body(text: str) -> str:
    """The book without the Project Gutenberg header and footer (both the modern and the old 'small print' form)."""
    start = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$", text, re.M)
    end = re.search(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$|^End of (the )?Project Gutenberg.*$", text,
                    re.M | re.I)
    return text[start.end() if start else 0 : end.start() if end else len(text)].strip() + "\n"


def prepare_corpus(work: Path) -> list[Path]:
    work.mkdir(parents=True, exist_ok=True)
    files = []
    shakespeare = DATA / "tinyshakespeare" / "input.txt"
    books = sorted((DATA / "gutenberg_children").glob("pg*.txt"))
    if not shakespeare.is_file() or not books:
        sys.exit(f"expected the public data sets in {DATA} (set LMFORGE_DATA to their folder)")
    dst = work / "tinyshakespeare.txt"
    shutil.copyfile(shakespeare, dst)
    files.append(dst)
    for book in books:
        dst = work / book.name
        text = book.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
        dst.write_text(gutenberg_body(text), encoding="utf-8")
        files.append(dst)
    return files


def train_one(family: str, corpus: list[Path], work: Path, out_root: Path, steps: int | None, threads: int) -> dict:
    run = work / "runs" / family
    shutil.rmtree(run, ignore_errors=True)
    opts = dict(DIMS, **PER_FAMILY[family])
    if steps:
        opts["steps"] = steps
    note = ("Tiny Shakespeare (karpathy/char-rnn) and seven Project Gutenberg children's classics (Alice, Anne of "
            "Green Gables, Black Beauty, Tom Sawyer, The Secret Garden, Treasure Island, Heidi); public domain, "
            "PG headers removed")
    args = Args(family=family, data=corpus, out=run, vocab_size=4096, block_size=128, max_positions=128,
                micro_batch=8, lr=2e-3, warmup_steps=20, schedule="cosine", min_lr_ratio=0.1, precision="fp32",
                eval_every=50, eval_blocks=96, save_every=50, log_every=10, seed=0, threads=threads,
                cache_dir=work / "cache", progress=sys.stderr.isatty(),
                extra={"data_note": note,
                       "card_note": "A demo-sized model: it shows the pipeline end to end and fits in the package "
                                    "(float16 weights). Rebuild with `python scripts/train_demo_models.py`."},
                **opts)
    t0 = time.perf_counter()
    summary = pretrain(args)
    summary["seconds"] = round(time.perf_counter() - t0, 1)

    dest = out_root / family
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    load_model(run).to(torch.float16).save_pretrained(dest)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "README.md", "loss.png",
                 "metrics.jsonl"):
        shutil.copyfile(run / name, dest / name)
    summary["megabytes"] = round(sum(f.stat().st_size for f in dest.iterdir()) / 1e6, 2)
    (dest / "README.md").write_text((dest / "README.md").read_text()
                                    + f"\nTrained in {summary['seconds']:.0f} s on {threads} CPU thread(s); "
                                      f"weights stored in float16.\n")
    return summary


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--steps", type=int, default=None, help="override every family's step count")
    p.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--work", type=Path, default=ROOT / "build" / "demo")
    p.add_argument("--out", type=Path, default=PACKAGE)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    corpus = prepare_corpus(a.work / "data")
    results = {}
    for family in a.families.split(","):
        results[family] = train_one(family, corpus, a.work, a.out, a.steps, a.threads)
        print(json.dumps({family: results[family]}), flush=True)
    total = sum(f.stat().st_size for f in a.out.rglob("*") if f.is_file()) / 1e6
    print(f"demo models: {total:.1f} MB in {a.out}")


if __name__ == "__main__":
    main()
