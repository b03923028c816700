"""Reading examples: the registry's local copies of public benchmarks, and users' own CSV / TSV / JSONL files.

Every reader returns plain dicts with a kind's fields (registry.KIND_FIELDS) plus `where` ("file, line N")
so that later errors can point at the row. Bad input fails with one sentence naming the file, the line and
the field: a missing column, a ragged row, a label outside the task's set, an answer not in its context,
an empty split.
"""
from __future__ import annotations

import csv
import json
import os
import random
import re
import string
from collections.abc import Iterator
from pathlib import Path

from ..models import ModelError
from .registry import TaskSpec

csv.field_size_limit(2**31 - 1)  # long documents (summarisation sources) exceed the 128 KiB default

# Which user-file column fills each field, by default (the CLI's --text-column etc. override these).
DEFAULT_COLUMNS = {
    "classification": {"text": "text", "text_pair": None, "label": "label"},
    "qa": {"question": "question", "context": "context", "answer": "answer", "answer_start": None},
    "summarization": {"document": "text", "summary": "target"},
    "translation": {"source": "source", "target": "target"},
    "generation": {"text": "text"},
    "ner": {"text": "text", "entities": "entities"},
}
OPTIONAL = {"text_pair", "answer_start"}
ENV_DATA_DIR = "LMFORGE_DATA_DIR"


# ------------------------------------------------------------------ where the data lives


def data_dir_candidates(explicit: str | Path | None = None) -> list[Path]:
    """Where a benchmark's local copy is looked for, in order: --data-dir, $LMFORGE_DATA_DIR, ../shared/data
    next to the working directory or the source checkout, then $LMFORGE_HOME/data."""
    if explicit is not None:
        return [Path(explicit).expanduser()]
    found = []
    if os.environ.get(ENV_DATA_DIR):
        found.append(Path(os.environ[ENV_DATA_DIR]).expanduser())
    found.append(Path.cwd().parent / "shared" / "data")
    found.append(Path(__file__).resolve().parents[4] / "shared" / "data")  # src/lmforge/tasks -> ../shared/data
    found.append(Path(os.environ.get("LMFORGE_HOME", "~/.lmforge")).expanduser() / "data")
    return list(dict.fromkeys(found))


def _task_folder(spec: TaskSpec, data_dir) -> Path:
    tried = data_dir_candidates(data_dir)
    for root in tried:
        if (root / spec.data.folder).is_dir():
            return root / spec.data.folder
    raise ModelError(
        f"the {spec.name} data is not on this machine (looked for a '{spec.data.folder}' folder in "
        f"{', '.join(map(str, tried))}); pass --data-dir or set {ENV_DATA_DIR}"
    )


def split_names(spec: TaskSpec) -> list[str]:
    names = list(spec.data.splits)
    if spec.data.holdout and "validation" not in names:
        names.insert(1, "validation")
    return names


def read_task_split(spec: TaskSpec, split: str, data_dir=None) -> list[dict]:
    """Examples of a registry task's split; `validation` comes from `holdout` when the copy has none."""
    if spec.is_user:
        raise ModelError(f"task {spec.name!r} reads your own files; pass --train FILE (and --validation FILE)")
    if split not in split_names(spec):
        raise ModelError(f"{spec.name} has no {split!r} split; it has {', '.join(split_names(spec))}")
    folder = _task_folder(spec, data_dir)
    holdout = spec.data.holdout if "validation" not in spec.data.splits else None
    source = "train" if holdout and split == "validation" else split
    files = spec.data.splits[source]
    for f in [files] if isinstance(files, str) else files:
        if not (folder / f).is_file():
            raise ModelError(f"{folder / f} is missing; the {spec.name} data folder looks incomplete")
    examples = _read_files(spec, folder, files)
    if holdout and source == "train":
        examples = _holdout(examples, holdout, keep="validation" if split == "validation" else "train")
    if not examples:
        raise ModelError(f"the {split} split of {spec.name} ({folder}) has no examples")
    return examples


def _holdout(examples: list[dict], fraction: float, keep: str) -> list[dict]:
    """A fixed split: a seeded permutation's first `fraction` is validation (for text, the last part)."""
    if len(examples) == 1 and "text" in examples[0] and "label" not in examples[0]:  # one long text: cut its tail
        text = examples[0]["text"]
        cut = text.rfind("\n", 0, int(len(text) * (1 - fraction)))
        cut = cut if cut > 0 else int(len(text) * (1 - fraction))
        part = text[cut:] if keep == "validation" else text[:cut]
        return [{**examples[0], "text": part}]
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    n_val = max(1, round(len(examples) * fraction))
    chosen = sorted(order[:n_val] if keep == "validation" else order[n_val:])
    return [examples[i] for i in chosen]


def _read_files(spec: TaskSpec, folder: Path, files) -> list[dict]:
    fmt = spec.data.format
    if fmt == "squad":
        return read_squad(folder / files)
    if fmt == "parallel":
        return read_parallel(folder / files[0], folder / files[1])
    if fmt == "conll":
        return read_conll(folder / files)
    if fmt == "text":
        paths = [folder / f for f in ([files] if isinstance(files, str) else files)]
        texts = [_read_text(p, spec.data.strip_gutenberg) for p in paths]
        return [{"text": "\n\n".join(texts), "where": str(paths[0])}]
    rows = read_rows(folder / files, fmt, header=spec.data.header, columns=spec.data.columns, quoting=fmt == "csv")
    return _to_examples(spec, rows, dict(spec.fields), folder / files)


# ------------------------------------------------------------------ users' own files


def read_user_file(path, spec: TaskSpec, columns: dict[str, str | None] | None = None,
                   labels: list[str] | None = None) -> list[dict]:
    """Examples from a CSV, TSV or JSONL file (a .txt file for generation). `columns` maps a field to the
    file's column (None entries keep the defaults, see DEFAULT_COLUMNS); `labels`, when given, is the closed
    label set (e.g. the training labels when reading a validation file)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} does not exist")
    mapping = {**DEFAULT_COLUMNS[spec.kind], **{k: v for k, v in (columns or {}).items() if v is not None}}
    suffix = path.suffix.lower()
    if spec.kind == "generation" and suffix in (".txt", ".text", ".md"):
        text = _read_text(path, strip_gutenberg=False)
        if not text.strip():
            raise ModelError(f"{path} is empty")
        return [{"text": text, "where": str(path)}]
    if spec.kind == "ner":
        if suffix in (".jsonl", ".json"):
            return read_entity_jsonl(path, mapping, types=labels)
        if suffix in CONLL_SUFFIXES:
            return read_conll(path, types=labels)
        raise ModelError(f"{path}: unsupported file type {suffix or '(none)'} for ner; use CoNLL columns "
                         f"({', '.join(CONLL_SUFFIXES)}) or .jsonl with character spans")
    fmt = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}.get(suffix)
    if fmt is None:
        raise ModelError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv, .tsv or .jsonl")
    rows = read_rows(path, fmt, header=True, columns=None, quoting=True)
    fields = {k: v for k, v in mapping.items() if v is not None}
    return _to_examples(spec, rows, fields, path, labels=labels)


# ------------------------------------------------------------------ rows from tables


class Rows:
    """A table's rows as (line number, {column: value}) plus its column names, read lazily."""

    def __init__(self, path: Path, columns: list[str], rows: Iterator[tuple[int, dict]]):
        self.path, self.columns, self._rows = path, columns, rows

    def __iter__(self):
        return self._rows


def read_rows(path: Path, fmt: str, *, header: bool, columns, quoting: bool) -> Rows:
    """CSV (standard quoting), TSV (no quoting when `quoting` is False, as GLUE's files need) or JSONL."""
    path = Path(path)
    if fmt == "jsonl":
        return _jsonl_rows(path)
    f = open(path, encoding="utf-8-sig", newline="")
    delimiter = "\t" if fmt == "tsv" else ","
    reader = csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    try:
        names = next(reader) if header else list(columns)
    except StopIteration:
        f.close()
        raise ModelError(f"{path} is empty") from None
    except (csv.Error, UnicodeDecodeError) as e:
        f.close()
        raise ModelError(f"{path}, line 1: cannot read the header ({e})") from None
    names = [n.strip() for n in names]
    if header and len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        f.close()
        raise ModelError(f"{path}, line 1: the header names column {dup!r} twice")

    def rows():
        with f:
            line = reader.line_num
            try:
                for record in reader:
                    first, line = line + 1, reader.line_num
                    if not record or record == [""]:  # blank line
                        continue
                    if len(record) != len(names):
                        raise ModelError(
                            f"{path}, line {first}: {len(record)} fields but the "
                            f"{'header' if header else 'format'} has {len(names)} ({', '.join(names)})"
                        )
                    yield first, dict(zip(names, record))
            except csv.Error as e:
                raise ModelError(f"{path}, line {reader.line_num}: {e}") from None
            except UnicodeDecodeError:
                raise ModelError(f"{path}, after line {line}: not UTF-8 text") from None

    return Rows(path, names, rows())


def _jsonl_rows(path: Path) -> Rows:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    parsed = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ModelError(f"{path}, line {i}: invalid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(obj, dict):
            raise ModelError(f"{path}, line {i}: expected a JSON object, got {type(obj).__name__}")
        parsed.append((i, obj))
    columns = list(dict.fromkeys(k for _, obj in parsed for k in obj))
    return Rows(path, columns, iter(parsed))


def _to_examples(spec: TaskSpec, rows: Rows, fields: dict[str, str], path: Path,
                 labels: list[str] | None = None) -> list[dict]:
    """Rows -> examples of the task's kind, checking every field as it goes."""
    kind = spec.kind
    needed = {}
    for field, source in fields.items():
        cols = [c for _, c, _, _ in string.Formatter().parse(source) if c] if "{" in source else [source]
        missing = [c for c in cols if c not in rows.columns]
        if missing:
            if field in OPTIONAL and source == DEFAULT_COLUMNS[kind].get(field):
                continue
            flag = _flag(kind, field)
            raise ModelError(
                f"{path}: no column {missing[0]!r} (the {field} column{flag}); the file has: "
                f"{', '.join(rows.columns) or 'no columns'}"
            )
        needed[field] = source
    label_map = spec.labels
    examples = []
    for line, row in rows:
        where = f"{path}, line {line}"
        ex: dict = {"where": where}
        for field, source in needed.items():
            ex[field] = _value(row, source, field, where, keep_list=field in ("summary", "target"))
        if kind == "classification":
            ex["label"] = _label(ex["label"], label_map, labels, where, fields["label"])
        elif kind == "qa":
            ex.update(_qa_answer(ex, where, fields))
        elif kind in ("summarization", "translation"):
            key = "summary" if kind == "summarization" else "target"
            refs = ex[key] if isinstance(ex[key], list) else [ex[key]]
            ex[key], ex["references"] = refs[0], refs
        examples.append(ex)
    if not examples:
        raise ModelError(f"{path} has no examples (only a header or blank lines)")
    return examples


def _flag(kind: str, field: str) -> str:
    flags = {"text": "--text-column", "text_pair": "--text-pair-column", "label": "--label-column",
             "question": "--question-column", "context": "--context-column", "answer": "--answer-column",
             "answer_start": "--answer-start-column", "document": "--text-column", "summary": "--target-column",
             "source": "--text-column", "target": "--target-column"}
    return f", {flags[field]}" if field in flags else ""


def _value(row: dict, source: str, field: str, where: str, keep_list: bool = False):
    if "{" in source:  # a template joining columns: "{title}. {description}"
        return source.format(**{k: _flat(v) for k, v in row.items()})
    value = row.get(source)
    if isinstance(value, list) and keep_list:
        value = [_flat(v) for v in value if _flat(v).strip()]
        if not value:
            raise ModelError(f"{where}, field {source!r}: the list of texts is empty")
        return value
    value = _flat(value)
    if not value.strip() and field not in OPTIONAL:
        raise ModelError(f"{where}, field {source!r}: empty {field}")
    return value.strip()


def _flat(v) -> str:
    if v is None:
        return ""
    if isinstance(v, list):  # SciTLDR stores a document as its list of sentences
        return " ".join(_flat(x) for x in v)
    return str(v)


def _label(raw: str, label_map: dict[str, str] | None, closed: list[str] | None, where: str, column: str) -> str:
    if label_map is not None:
        if raw not in label_map:
            raise ModelError(f"{where}, field {column!r}: label {raw!r} is not one of {', '.join(label_map)}")
        return label_map[raw]
    if closed is not None and raw not in closed:
        raise ModelError(f"{where}, field {column!r}: label {raw!r} did not occur in the training data "
                         f"({', '.join(closed)})")
    return raw


def _qa_answer(ex: dict, where: str, fields: dict[str, str]) -> dict:
    """The answer's character span in the context; an answer that is not in its context is an error."""
    context, answer = ex["context"], ex.pop("answer")
    start_text = ex.pop("answer_start", None)
    if start_text not in (None, ""):
        try:
            start = int(start_text)
        except ValueError:
            raise ModelError(f"{where}, field {fields['answer_start']!r}: {start_text!r} is not a number") from None
        if context[start:start + len(answer)] != answer:
            raise ModelError(f"{where}, field {fields['answer']!r}: the answer {answer!r} is not at character "
                             f"{start} of the context")
    else:
        start = context.find(answer)
        if start < 0:
            raise ModelError(f"{where}, field {fields['answer']!r}: the answer {answer!r} does not occur in the "
                             f"context")
    return {"answers": [{"text": answer, "start": start}]}


# ------------------------------------------------------------------ named entities

CONLL_SUFFIXES = (".conll", ".txt", ".iob", ".bio", ".tsv")


def ner_example(text: str, offsets: list[tuple[int, int]], tags: list[str], where: str) -> dict:
    """An ner example: the text, its words' character spans, their tags in IOB2 and the entity spans."""
    from .tagging import entities

    return {"text": text, "offsets": offsets, "tags": tags, "entities": entities(text, offsets, tags),
            "where": where}


def read_conll(path, types: list[str] | None = None) -> list[dict]:
    """CoNLL column files (CoNLL-2003's `word POS chunk NER`, or just `word tag`): one word per line, the word
    first and its tag last, a blank line between sentences, `-DOCSTART-` lines skipped. Tags in IOB1, IOB2 or
    BIOES are read as IOB2 through their entity spans (tagging.convert; on IOB1 that is CoNLL's rule: I-X after
    O or another type starts an entity). `types`, when given, is the closed set of entity types (the training data's, when reading validation files)."""
    from .tagging import convert, split_tag

    path = Path(path)
    examples: list[dict] = []
    words: list[str] = []
    tags: list[str] = []
    first = 0

    def flush():
        if not words:
            return
        offsets, pos = [], 0
        for w in words:
            offsets.append((pos, pos + len(w)))
            pos += len(w) + 1
        examples.append(ner_example(" ".join(words), offsets, convert(tags, "iob2"),
                                    f"{path}, line {first}"))
        words.clear()
        tags.clear()

    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ModelError(f"{path} is not UTF-8 text") from None
    for n, line in enumerate(lines, 1):
        cols = line.split()
        if not cols:
            flush()
            continue
        if cols[0] == "-DOCSTART-":
            flush()
            continue
        if len(cols) < 2:
            raise ModelError(f"{path}, line {n}: one column ({line.strip()!r}); a CoNLL line holds a word and its "
                             "tag (and optionally columns between them)")
        tag = cols[-1]
        try:
            _, typ = split_tag(tag)
        except ValueError as e:
            raise ModelError(f"{path}, line {n}, field 'tag': {e}") from None
        if types is not None and typ is not None and typ not in types:
            raise ModelError(f"{path}, line {n}, field 'tag': entity type {typ!r} did not occur in the training "
                             f"data ({', '.join(types)})")
        if not words:
            first = n
        words.append(cols[0])
        tags.append(tag)
    flush()
    if not examples:
        raise ModelError(f"{path} has no sentences (a CoNLL file holds one `word ... tag` line per word)")
    return examples


def read_entity_jsonl(path, mapping: dict, types: list[str] | None = None) -> list[dict]:
    """JSON Lines with character spans: {"text": "...", "entities": [{"start": 0, "end": 5, "label": "PER"}]}
    (or [start, end, label] triples, as doccano and spaCy export them). The text is split into words (also at
    every span edge, so an entity always covers whole words) and tagged in IOB2."""
    from .tagging import from_spans, words_of

    text_col, ent_col = mapping["text"], mapping["entities"]
    rows = _jsonl_rows(Path(path))
    for col, flag in ((text_col, "--text-column"), (ent_col, "--entities-column")):
        if col not in rows.columns:
            raise ModelError(f"{path}: no column {col!r} (the {'text' if col == text_col else 'entities'} "
                             f"column, {flag}); the file has: {', '.join(rows.columns) or 'no columns'}")
    examples = []
    for line, row in rows:
        where = f"{path}, line {line}"
        text = row.get(text_col)
        if not isinstance(text, str) or not text.strip():
            raise ModelError(f"{where}, field {text_col!r}: empty text")
        raw = row.get(ent_col) or []
        if not isinstance(raw, list):
            raise ModelError(f"{where}, field {ent_col!r}: expected a list of entities")
        ents = []
        for k, e in enumerate(raw):
            try:
                if isinstance(e, dict):
                    s, t, typ = int(e["start"]), int(e["end"]), str(e.get("label", e.get("type")))
                else:
                    s, t, typ = int(e[0]), int(e[1]), str(e[2])
            except (KeyError, IndexError, TypeError, ValueError):
                raise ModelError(f"{where}, field {ent_col!r}[{k}]: an entity is {{\"start\", \"end\", \"label\"}} "
                                 "or [start, end, label]") from None
            if not 0 <= s < t <= len(text):
                raise ModelError(f"{where}, field {ent_col!r}[{k}]: span {s}-{t} is outside the text "
                                 f"({len(text)} characters)")
            if typ in ("None", "") or "-" in typ or " " in typ:
                raise ModelError(f"{where}, field {ent_col!r}[{k}]: label {typ!r} is not an entity type "
                                 "(a word such as PER; no spaces or hyphens)")
            if types is not None and typ not in types:
                raise ModelError(f"{where}, field {ent_col!r}[{k}]: entity type {typ!r} did not occur in the "
                                 f"training data ({', '.join(types)})")
            if not text[s:t].strip():
                raise ModelError(f"{where}, field {ent_col!r}[{k}]: span {s}-{t} covers only spaces")
            ents.append((s, t, typ, k))
        ents.sort()
        for (s1, t1, _, k1), (s2, t2, _, k2) in zip(ents, ents[1:]):
            if s2 < t1:
                raise ModelError(f"{where}, field {ent_col!r}: entities {k1} ({s1}-{t1}) and {k2} ({s2}-{t2}) "
                                 "overlap; a tagger needs non-overlapping spans")
        offsets = words_of(text, {c for s, t, _, _ in ents for c in (s, t)})
        word_spans = []
        for s, t, typ, k in ents:
            inside = [w for w, (a, b) in enumerate(offsets) if a >= s and b <= t]
            if not inside:
                raise ModelError(f"{where}, field {ent_col!r}[{k}]: span {s}-{t} holds no word")
            word_spans.append((typ, inside[0], inside[-1] + 1))
        examples.append(ner_example(text, offsets, from_spans(len(offsets), word_spans), where))
    if not examples:
        raise ModelError(f"{path} has no examples (only blank lines)")
    return examples


# ------------------------------------------------------------------ other formats


def read_squad(path: Path) -> list[dict]:
    """SQuAD v1.1 JSON: data[].paragraphs[].qas[] with answers [{text, answer_start}]; every span is checked."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"{path} is not SQuAD-format JSON ({type(e).__name__}: {e})") from None
    examples = []
    for a, article in enumerate(data):
        for p, para in enumerate(article["paragraphs"]):
            context = para["context"]
            for q, qa in enumerate(para["qas"]):
                where = f"{path}, data[{a}].paragraphs[{p}].qas[{q}]"
                answers = [{"text": ans["text"], "start": ans["answer_start"]} for ans in qa["answers"]]
                for ans in answers:
                    if context[ans["start"]:ans["start"] + len(ans["text"])] != ans["text"]:
                        raise ModelError(f"{where}, field 'answers': {ans['text']!r} is not at character "
                                         f"{ans['start']} of the context")
                examples.append({"id": qa.get("id", where), "question": qa["question"], "context": context,
                                 "answers": answers, "where": where})
    return examples


def read_parallel(source: Path, target: Path) -> list[dict]:
    """Line-aligned parallel text (Multi30k): line i of `source` translates line i of `target`."""
    src = Path(source).read_text(encoding="utf-8").splitlines()
    tgt = Path(target).read_text(encoding="utf-8").splitlines()
    if len(src) != len(tgt):
        raise ModelError(f"{source} has {len(src)} lines but {target} has {len(tgt)}; they must align")
    return [{"source": s.strip(), "target": t.strip(), "references": [t.strip()], "where": f"{source}, line {i}"}
            for i, (s, t) in enumerate(zip(src, tgt), 1) if s.strip() and t.strip()]


_PG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE)
_PG_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE)


def _read_text(path: Path, strip_gutenberg: bool) -> str:
    text = Path(path).read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    if strip_gutenberg:
        start, end = _PG_START.search(text), _PG_END.search(text)
        text = text[start.end() if start else 0:end.start() if end else len(text)].strip()
    return text
