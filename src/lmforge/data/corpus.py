"""Reading corpora: plain text, JSONL (a `text` field per line) or a local Hugging Face dataset folder.

A corpus yields documents; a document is a list of segments (the units BERT's next-sentence pairs and
RoBERTa's full-sentence packing keep whole):

    plain text   one segment per line, a blank line ends a document (BERT's `create_pretraining_data` format)
    JSONL        one document per line, from its `text` field; its lines are the segments
    HF dataset   a folder written by `datasets.save_to_disk`; one document per row's `text`, split as JSONL

Bad input stops with the file, the line and the reason (`DataError`), before anything is written.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..models import ModelError

TEXT_SUFFIXES = {".txt", ".text", ".md", ""}
JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}


class DataError(ModelError):
    """A corpus lmforge cannot read; the message names the file, the line and the reason."""


def is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "dataset_info.json").is_file() and (path / "state.json").is_file()


def expand_sources(paths) -> list[Path]:
    """Files (and HF dataset folders) named by `paths`; folders contribute their .txt/.jsonl files, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise DataError(f"{p}: no such file or folder")
        if p.is_dir() and not is_hf_dataset(p):
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES | JSONL_SUFFIXES
                           and not f.name.startswith("."))
            if not files:
                raise DataError(f"{p}: the folder holds no .txt or .jsonl files")
            out.extend(files)
        else:
            out.append(p)
    if not out:
        raise DataError("no corpus files given")
    return out


def read_documents(path: Path) -> Iterator[list[str]]:
    """The documents of one source, each a list of non-empty segments."""
    path = Path(path)
    if is_hf_dataset(path):
        yield from _hf_documents(path)
    elif path.suffix.lower() in JSONL_SUFFIXES:
        yield from _jsonl_documents(path)
    else:
        yield from _text_documents(path)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the line ending), decoded strictly as UTF-8 (a leading BOM is dropped)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                f"{e.start + 1}: {e.reason}); convert the file to UTF-8") from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            yield lineno, line.rstrip("\r\n")


def _text_documents(path: Path) -> Iterator[list[str]]:
    doc: list[str] = []
    for _, line in _lines(path):
        if line.strip():
            doc.append(line)
        elif doc:
            yield doc
            doc = []
    if doc:
        yield doc


def _segments(text: str) -> list[str]:
    return [s for s in text.replace("\r\n", "\n").split("\n") if s.strip()]


def _jsonl_documents(path: Path) -> Iterator[list[str]]:
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict) or "text" not in record:
            raise DataError(f"{path}:{lineno}: expected a JSON object with a \"text\" field")
        if not isinstance(record["text"], str):
            raise DataError(f"{path}:{lineno}: the \"text\" field is {type(record['text']).__name__}, not a string")
        segments = _segments(record["text"])
        if segments:
            yield segments


def _hf_documents(path: Path) -> Iterator[list[str]]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path} is a Hugging Face dataset folder; reading it needs `pip install datasets`") from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(f"{path}: the dataset has splits {', '.join(ds)} but no 'train' split")
        ds = ds["train"]
    if "text" not in ds.column_names:
        raise DataError(f"{path}: the dataset has columns {', '.join(ds.column_names)} but no 'text' column")
    for row, text in enumerate(ds["text"]):
        if not isinstance(text, str):
            raise DataError(f"{path}: row {row}: the \"text\" field is {type(text).__name__}, not a string")
        segments = _segments(text)
        if segments:
            yield segments
