"""Precision and recall of lmforge's PII detector per entity type on generated labelled sets (with decoys).

    python scripts/eval_pii.py [--n 5000] [--seed 2024] [--names 3000] [--threads 1]

1. the pattern types (pii_synth.py: emails, phones, cards, IBANs, IPs, SSNs, addresses, secrets);
2. people, organisations, places and phones in running text (pii_names_synth.py), by exact span and overlap;
3. phones in the national and international formats of 13 countries (recall per country and format);
4. speed: texts per second of `redact_many` with everything on (the NER model included), one torch thread.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from lmforge.safety.pii import detect, detect_many, redact_many
from lmforge.safety.pii_names_synth import phone_formats_set, score, synthetic_names_set
from lmforge.safety.pii_synth import evaluate, synthetic_pii_set


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--names", type=int, default=3000, help="texts in the names set")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", type=Path, default=None, help="write all figures as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console, out = Console(), {}

    scores = evaluate(synthetic_pii_set(args.n, args.seed))
    out["patterns"] = scores
    t = Table(title=f"PII patterns, {args.n} generated texts (seed {args.seed}), exact span match")
    for c in ("entity", "support", "precision", "recall", "F1"):
        t.add_column(c)
    for typ, s in scores.items():
        t.add_row(typ, str(s["support"]), f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}")
    console.print(t)

    examples = synthetic_names_set(args.names, args.seed)
    t0 = time.perf_counter()
    names = score(examples, lambda texts: [[(e.type, e.start, e.end) for e in ents] for ents in detect_many(texts)])
    out["names"], out["names_seconds"] = names, time.perf_counter() - t0
    t = Table(title=f"People, organisations, places and phones: {args.names} generated texts (seed {args.seed})")
    for c in ("entity", "support", "precision", "recall", "overlap precision", "overlap recall"):
        t.add_column(c)
    for typ, s in names.items():
        t.add_row(typ, str(s["support"]), f"{s['precision']:.3f}", f"{s['recall']:.3f}",
                  f"{s['overlap_precision']:.3f}", f"{s['overlap_recall']:.3f}")
    console.print(t)

    rows = phone_formats_set(40, args.seed)
    hit, total = Counter(), Counter()
    for country, fmt, text, number in rows:
        total[country, fmt] += 1
        hit[country, fmt] += [e.text for e in detect(text, ["PHONE"])] == [number]
    out["phones"] = {f"{c} {f}": hit[c, f] / total[c, f] for c, f in sorted(total)}
    t = Table(title="Phone recall by country and format (40 numbers each, exact)")
    for c in ("country", "national", "international"):
        t.add_column(c)
    for country in sorted({c for c, _ in total}):
        t.add_row(country, *(f"{hit[country, f] / total[country, f]:.3f}" for f in ("national", "international")))
    t.add_row("all", f"{sum(v for (c, f), v in hit.items() if f == 'national') / (len(rows) / 2):.3f}",
              f"{sum(v for (c, f), v in hit.items() if f == 'international') / (len(rows) / 2):.3f}")
    console.print(t)

    texts = [text for text, _ in examples]
    redact_many(texts[:64])  # the model is built on first use: not part of the speed
    t0 = time.perf_counter()
    redact_many(texts)
    seconds = time.perf_counter() - t0
    out["texts_per_second"] = len(texts) / seconds
    console.print(f"speed: {len(texts)} texts in {seconds:.1f} s = {len(texts) / seconds:.0f} texts/s "
                  f"(all types, NER included, {args.threads} thread(s); mean {sum(map(len, texts)) / len(texts):.0f} "
                  "characters a text)")
    if args.output:
        args.output.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
