"""Responsible-AI commands: `lmforge data scrub|index`, `lmforge detect`, `lmforge audit bias|log`.

Each command parses, delegates to the library in `lmforge.safety`, and prints with rich; bad input ends
with one sentence on stderr and exit code 1.
"""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

data_app = typer.Typer(help="Prepare training corpora: PII scrubbing, copy-check indexes.", no_args_is_help=True)
audit_app = typer.Typer(help="Audits: bias benchmarks and the generation audit log.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

CROWS_CANDIDATES = ("shared/data/crows_pairs/crows_pairs_anonymized.csv",
                    "../shared/data/crows_pairs/crows_pairs_anonymized.csv")


def _fail(message: object) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


def lmforge_home() -> Path:
    return Path(os.environ.get("LMFORGE_HOME", Path.home() / ".lmforge")).expanduser()


def default_audit_path() -> Path:
    return Path(os.environ.get("LMFORGE_AUDIT_LOG", lmforge_home() / "audit.jsonl"))


def _bytes_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=err, transient=True)


# ---------------------------------------------------------------- lmforge data scrub / index


@data_app.command("scrub")
def scrub(
    files: Annotated[list[Path], typer.Argument(help="UTF-8 text files to scrub (before tokenization).")],
    out: Annotated[Path, typer.Option(help="Folder for the scrubbed copies (same file names).")],
    types: Annotated[Optional[str], typer.Option(help="Comma-separated entity types (default: all; PERSON, "
                                                      "ORGANIZATION and LOCATION when the NER model is "
                                                      "installed).")] = None,
    phone_regions: Annotated[Optional[str], typer.Option(help="Comma-separated ISO country codes whose national "
                                                              "phone formats are recognised (default: "
                                                              "$LMFORGE_PII_PHONE_REGIONS or US,CA,GB,IE,DE,FR,ES,"
                                                              "IT,NL,IN,AU,JP,BR,MX,ZA).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write the report as JSON here.")] = None,
) -> None:
    """Redact PII (names, organisations, places, emails, phones, cards, IBANs, IPs, SSNs, addresses, secrets)
    from training corpora and report what was found."""
    from . import ner
    from .pii import ENTITY_TYPES, NER_TYPES, ScrubReport, check_regions, default_types, scrub_file

    wanted = [t.strip().upper() for t in types.split(",")] if types else None
    if wanted and set(wanted) - set(ENTITY_TYPES):
        _fail(f"unknown PII types {', '.join(sorted(set(wanted) - set(ENTITY_TYPES)))}; known: {', '.join(ENTITY_TYPES)}")
    if wanted and set(wanted) & set(NER_TYPES.values()) and not ner.enabled():
        _fail(f"{', '.join(sorted(set(wanted) & set(NER_TYPES.values())))} need the NER model, which is "
              f"{'turned off (' + ner.ENV_SWITCH + ')' if ner.shipped() else 'not installed'}")
    regions = None
    if phone_regions:
        try:
            regions = check_regions(r.strip() for r in phone_regions.split(",") if r.strip())
        except ValueError as e:
            _fail(e)
    shown = wanted or list(default_types())
    for f in files:
        if not f.is_file():
            _fail(f"{f} is not a file")
    out.mkdir(parents=True, exist_ok=True)
    if any((out / f.name).resolve() == f.resolve() for f in files):
        _fail("--out must not be the folder the input files are in (the originals would be overwritten)")
    rep = ScrubReport()
    with _bytes_progress() as progress:
        task = progress.add_task("scrubbing", total=sum(f.stat().st_size for f in files))
        for f in files:
            try:
                scrub_file(f, out / f.name, wanted, rep, progress=lambda n: progress.advance(task, n),
                           phone_regions=regions)
            except UnicodeDecodeError:
                _fail(f"{f} is not UTF-8 text")
    table = Table(title=f"PII found in {rep.files} file(s), {rep.lines:,} lines ({rep.lines_changed:,} changed)")
    table.add_column("entity")
    table.add_column("count", justify="right")
    for t in ENTITY_TYPES:
        if t in shown:
            table.add_row(t, f"{rep.counts.get(t, 0):,}")
    table.add_row("[bold]total", f"[bold]{sum(rep.counts.values()):,}")
    console.print(table)
    if report:
        report.write_text(json.dumps(rep.to_dict(), indent=2), encoding="utf-8")
    console.print(f"scrubbed copies in {out}")


@data_app.command("index")
def index(
    files: Annotated[list[Path], typer.Argument(help="The training corpus: text files.")],
    out: Annotated[Path, typer.Option(help="Folder to write the copy index to.")],
    n: Annotated[int, typer.Option(help="Words per indexed window (shorter overlaps are not seen).")] = 8,
) -> None:
    """Build the n-gram index that `lmforge detect --index` checks generated text against."""
    from .copying import CopyIndex

    for f in files:
        if not f.is_file():
            _fail(f"{f} is not a file")
    if n < 2:
        _fail("--n must be at least 2")
    with _bytes_progress() as progress:
        task = progress.add_task("indexing", total=sum(f.stat().st_size for f in files))
        idx = CopyIndex.from_files(files, n=n, progress=lambda chars: progress.advance(task, chars))
    idx.save(out)
    console.print(f"indexed {len(idx.ids):,} words in {len(files)} file(s) ({len(idx.vocab):,} distinct) to {out}")


# ---------------------------------------------------------------- lmforge detect


def _read_text(text: Optional[str], file: Optional[Path]) -> str:
    if file is not None:
        if not file.is_file():
            _fail(f"{file} is not a file")
        return file.read_text(encoding="utf-8")
    if text == "-" or (text is None and not sys.stdin.isatty()):
        return sys.stdin.read()
    if not text:
        _fail("give the text to check as an argument, with --file, or on standard input")
    return text


def detect(
    text: Annotated[Optional[str], typer.Argument(help="Text to check ('-' reads standard input).")] = None,
    file: Annotated[Optional[Path], typer.Option(help="Read the text from this file.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model whose tokenizer and vocabulary the watermark used.")] = None,
    key: Annotated[Optional[str], typer.Option(help="Watermark secret key (default: $LMFORGE_WATERMARK_KEY).")] = None,
    gamma: Annotated[float, typer.Option(help="Green-list fraction used at generation.")] = 0.25,
    threshold: Annotated[float, typer.Option(help="z-score above which text counts as watermarked.")] = 4.0,
    index: Annotated[Optional[Path], typer.Option(help="Copy index (from `lmforge data index`) to check against.")] = None,
    min_words: Annotated[int, typer.Option(help="Flag verbatim overlaps of at least this many words.")] = 32,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Check text for the lmforge watermark (z-score, p-value) and/or verbatim copying from a training corpus."""
    content = _read_text(text, file)
    key = key or os.environ.get("LMFORGE_WATERMARK_KEY")
    if model is None and index is None:
        _fail("nothing to check: pass --model (and a key) for the watermark, --index for copying, or both")
    result: dict = {}
    if model is not None:
        from .. import load
        from ..models import ModelError
        from .watermark import WatermarkConfig, detect_text

        if not key:
            _fail("the watermark check needs the secret key: --key or $LMFORGE_WATERMARK_KEY")
        try:
            m, tok = load(model)
            if tok is None:
                raise ModelError(f"{model} has no tokenizer files, which the watermark check needs")
            cfg = WatermarkConfig(key=key, vocab_size=m.config.vocab_size, gamma=gamma)
            result["watermark"] = detect_text(content, tok, cfg, threshold=threshold).to_dict()
        except (ModelError, ValueError) as e:
            _fail(e)
    if index is not None:
        from .copying import CopyIndex

        try:
            result["copying"] = CopyIndex.load(index).check(content, threshold=min_words).to_dict()
        except ValueError as e:
            _fail(e)
    if json_out:
        console.print_json(json.dumps(result))
        return
    if "watermark" in result:
        w = result["watermark"]
        verdict = "[bold red]watermarked" if w["watermarked"] else "[green]no watermark found"
        console.print(f"watermark: {verdict}[/]  z = {w['z_score']:.2f}, p = {w['p_value']:.2e}, "
                      f"{w['num_green']}/{w['num_tokens_scored']} green tokens (gamma {gamma})")
    if "copying" in result:
        c = result["copying"]
        verdict = "[bold red]copied" if c["flagged"] else "[green]no long verbatim overlap"
        console.print(f"copying: {verdict}[/]  longest overlap {c['longest_overlap_words']} words "
                      f"(threshold {min_words}); {c['copied_fraction']:.0%} of words in indexed windows")
        if c.get("source"):
            console.print(f"  from {c['source']}: \"{c['overlap_text'][:200]}\"")


# ---------------------------------------------------------------- lmforge audit bias / log


@audit_app.command("bias")
def audit_bias(
    model: Annotated[str, typer.Option(help="Model folder or name (bert, roberta, gpt2 or t5 with its LM head).")],
    data: Annotated[Optional[Path], typer.Option(help="crows_pairs_anonymized.csv (default: shared/data/crows_pairs/).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Score a random subset of this many pairs.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the confidence intervals.")] = 1000,
    out: Annotated[Optional[Path], typer.Option(help="Write the result as JSON here.")] = None,
    card: Annotated[Optional[Path], typer.Option(help="Checkpoint folder whose model card gets the result.")] = None,
) -> None:
    """CrowS-Pairs stereotype score, overall and per bias type, with 95% bootstrap confidence intervals."""
    from .. import load
    from ..models import ModelError
    from .bias import BiasError, PairScorer, crows_pairs, read_crows_pairs, sample_pairs

    if data is None:
        data = next((Path(c) for c in CROWS_CANDIDATES if Path(c).is_file()), None)
        if data is None:
            _fail("CrowS-Pairs not found; pass --data path/to/crows_pairs_anonymized.csv")
    if limit is not None and limit < 1:
        _fail("--limit must be at least 1")
    if bootstrap < 100:
        _fail("--bootstrap must be at least 100")
    try:
        pairs = sample_pairs(read_crows_pairs(data), limit)
        m, tok = load(model, task="lm")
        scorer = PairScorer(m, tok)
    except (ModelError, BiasError) as e:
        _fail(e)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} pairs"),
                  TimeRemainingColumn(), console=err, transient=True) as progress:
        task = progress.add_task(f"CrowS-Pairs ({scorer.metric})", total=len(pairs))
        result = crows_pairs(m, tok, pairs, n_boot=bootstrap, progress=lambda k: progress.advance(task, k),
                             scorer=scorer)
    o = result.overall
    table = Table(title=f"CrowS-Pairs stereotype score, {model} ({result.metric}); 50 = no preference")
    for col in ("bias type", "score", "95% CI", "pairs"):
        table.add_column(col, justify="left" if col == "bias type" else "right")
    for cat, s in sorted(result.by_category.items()):
        table.add_row(cat, f"{s.score:.1f}", f"{s.ci_low:.1f}-{s.ci_high:.1f}", str(s.n))
    table.add_row("[bold]overall", f"[bold]{o.score:.1f}", f"{o.ci_low:.1f}-{o.ci_high:.1f}", str(o.n))
    console.print(table)
    d = result.to_dict()
    d["model"] = model
    if out:
        out.write_text(json.dumps(d, indent=2), encoding="utf-8")
    if card:
        from .model_card import update_model_card

        console.print(f"updated {update_model_card(card, bias={'crows_pairs': d})}")


@audit_app.command("log")
def audit_log(
    since: Annotated[Optional[str], typer.Option(help="From this time: ISO date/time or an age like 24h, 7d.")] = None,
    until: Annotated[Optional[str], typer.Option(help="Until this time (exclusive), same formats.")] = None,
    path: Annotated[Optional[Path], typer.Option(help="The audit log (default: $LMFORGE_HOME/audit.jsonl).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    output: Annotated[Optional[Path], typer.Option(help="Write the export here instead of standard output.")] = None,
    verify: Annotated[bool, typer.Option(help="Only check the hash chain and report.")] = False,
) -> None:
    """Export the generation audit log (after checking its hash chain) or verify it."""
    from .audit_log import AuditError, AuditLog, parse_since

    path = path or default_audit_path()
    if fmt not in ("jsonl", "csv"):
        _fail("--format must be jsonl or csv")
    if not path.is_file():
        _fail(f"no audit log at {path}")
    log = AuditLog(path, key=os.environ.get("LMFORGE_AUDIT_KEY"))
    check = log.verify()
    if verify:
        if check.ok:
            console.print(f"[green]ok[/]: {check.records:,} records, chain intact, head {check.head[:16]}…")
            return
        _fail(f"{path}: line {check.line}: {check.error}")
    if not check.ok:
        err.print(f"[bold yellow]warning:[/] {path}: line {check.line}: {check.error}; exporting anyway")
    try:
        t0 = parse_since(since) if since else None
        t1 = parse_since(until) if until else None
        records = list(log.read(since=t0, until=t1))
    except AuditError as e:
        _fail(e)
    sink = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        if fmt == "jsonl":
            for r in records:
                sink.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            cols = list(dict.fromkeys(k for r in records for k in r))
            w = csv.DictWriter(sink, fieldnames=cols)
            w.writeheader()
            for r in records:
                w.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
                            for k, v in r.items()})
    finally:
        if output:
            sink.close()
    if output:
        console.print(f"exported {len(records):,} records to {output}")


def register(app: typer.Typer) -> None:
    """Add `data scrub|index`, `detect` and `audit bias|log` to the main app. If another module already made a
    `data` or `audit` group, the commands join it instead of shadowing it."""
    groups = {g.name: g.typer_instance for g in app.registered_groups}
    for name, mine in (("data", data_app), ("audit", audit_app)):
        if name in groups:
            for cmd in mine.registered_commands:
                groups[name].registered_commands.append(cmd)
        else:
            app.add_typer(mine, name=name)
    app.command("detect")(detect)
