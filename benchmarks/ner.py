"""The shipped NER model on CoNLL-2003: entity F1 per type and micro (seqeval, strict IOB2) on the test split
(and dev), the time it took to train, its size in the package, the time to rebuild it, and tagging speed.

    python benchmarks/ner.py [--data-dir ../shared/data] [--full runs/ner-minilm] [--threads 1]

The model is rebuilt from its delta against the installed all-MiniLM-L6-v2, exactly as `lmforge.safety.ner`
does at run time, so the scores are the shipped model's. `--full` also scores the unquantized fine-tuned
run the delta was made from, to show what the packaging costs. Writes JSON to --output.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def score(predictor, examples) -> tuple[dict, float]:
    from lmforge.tasks.evaluate import evaluate

    r = evaluate(predictor, examples, "test")
    return r.metrics, r.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--full", type=Path, default=None, help="the fine-tuned run folder, scored unquantized too")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", type=Path, default=ROOT / "runs" / "ner-benchmark.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from lmforge.safety import ner
    from lmforge.tasks import Predictor, get_task
    from lmforge.tasks.readers import read_task_split

    spec = get_task("conll2003")
    splits = {s: read_task_split(spec, s, a.data_dir) for s in ("test", "validation")}
    t0 = time.perf_counter()
    shipped = ner.load_tagger()
    rebuild = time.perf_counter() - t0
    result = {"rebuild_seconds": rebuild, "threads": a.threads}
    files = sorted(p for p in ner.MODEL_DIR.iterdir() if p.is_file())
    result["package_bytes"] = {p.name: p.stat().st_size for p in files}
    result["package_total_mb"] = sum(result["package_bytes"].values()) / 1e6
    train = ner.MODEL_DIR / "train_results.json"
    if train.is_file():
        t = json.loads(train.read_text())
        result["train_seconds"], result["train_steps"] = t["train_seconds"], t["steps"]
    for split, examples in splits.items():
        metrics, seconds = score(shipped, examples)
        result[f"shipped_{split}"] = metrics
        result[f"shipped_{split}_sentences_per_second"] = len(examples) / seconds
    if a.full is not None:
        full = Predictor.load(a.full)
        result["full_test"] = score(full, splits["test"])[0]

    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(result, indent=2) + "\n")
    test = result["shipped_test"]
    print(f"CoNLL-2003 test, shipped model: micro P {test['precision']:.4f} R {test['recall']:.4f} F1 {test['f1']:.4f}")
    for typ in ("PER", "ORG", "LOC", "MISC"):
        print(f"  {typ:4s} P {test[f'{typ}_precision']:.4f} R {test[f'{typ}_recall']:.4f} F1 {test[f'{typ}_f1']:.4f} "
              f"({test[f'{typ}_support']} entities)")
    print(f"dev F1 {result['shipped_validation']['f1']:.4f}")
    if "full_test" in result:
        print(f"unquantized fine-tuned run: test F1 {result['full_test']['f1']:.4f}")
    if "train_seconds" in result:
        print(f"training: {result['train_seconds'] / 60:.1f} min ({result['train_steps']} steps, 1 thread)")
    print(f"package: {result['package_total_mb']:.2f} MB ({', '.join(f'{k} {v / 1e6:.2f} MB' for k, v in result['package_bytes'].items())}); "
          f"rebuilt in {rebuild:.1f} s; {result['shipped_test_sentences_per_second']:.0f} test sentences/s")
    print(f"written to {a.output}")


if __name__ == "__main__":
    main()
