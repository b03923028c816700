"""Training and evaluation data named on the Hugging Face Hub instead of given as a file.

    --train hf:stanfordnlp/imdb          the repo's train split (--validation: its validation split)
    --train hf:nyu-mll/glue:sst2         a configuration (subset) of the repo
    --validation hf:nyu-mll/glue:sst2@test   an explicit split

With the `datasets` library installed, `datasets.load_dataset` reads the data (any format it knows). Without
it, huggingface_hub downloads the split's CSV, TSV, JSON Lines (or, with pyarrow, Parquet) files. Either way
the split is written once as JSON Lines under $LMFORGE_HOME/cache/datasets and read like a user's own file,
so the column flags (--text-column ...) and every check apply unchanged. Offline, a dataset already fetched
is reused; any other is a clear error that says how to pass a local file instead.
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..models import ModelError

PREFIX = "hf:"
_NAME = re.compile(r"^(?P<repo>[\w.-]+(?:/[\w.-]+)?)(?::(?P<config>[\w.-]+))?(?:@(?P<split>[\w.-]+))?$")
SPLIT_NAMES = {"validation": ("validation", "valid", "dev", "val"), "test": ("test",), "train": ("train",)}
FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


@dataclass(frozen=True)
class HubDataset:
    repo: str
    config: str | None
    split: str

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo}" + (f":{self.config}" if self.config else "") + f"@{self.split}"


def parse(name, default_split: str) -> HubDataset | None:
    """`hf:REPO[:CONFIG][@SPLIT]` -> HubDataset; None for anything else (a local path)."""
    text = str(name)
    if not text.startswith(PREFIX):
        return None
    m = _NAME.match(text[len(PREFIX):])
    if m is None:
        raise ModelError(f"{text!r} is not a Hugging Face dataset name; write hf:OWNER/NAME, hf:OWNER/NAME:CONFIG "
                         f"or hf:OWNER/NAME:CONFIG@SPLIT (e.g. hf:nyu-mll/glue:sst2)")
    return HubDataset(m["repo"], m["config"], m["split"] or default_split)


def local_file(path, default_split: str) -> Path:
    """A local file for `path`: itself, or the cached JSON Lines copy of a named Hub dataset split."""
    ds = parse(path, default_split)
    if ds is None:
        return Path(path)
    target = cache_dir() / f"{ds.repo.replace('/', '--')}--{ds.config or 'default'}--{ds.split}.jsonl"
    if target.is_file():
        return target
    if _offline():
        raise ModelError(f"cannot download the Hugging Face dataset {ds}: this machine is offline (HF_HUB_OFFLINE or "
                         f"HF_DATASETS_OFFLINE is set). Download the split elsewhere and pass it as a file, e.g. "
                         f"--train train.jsonl (CSV, TSV or JSON Lines) with --text-column / --label-column")
    rows = _with_datasets(ds) if _has_datasets() else _with_hub(ds)
    if not rows:
        raise ModelError(f"the Hugging Face dataset {ds} has no rows")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
    os.replace(tmp, target)
    return target


def cache_dir() -> Path:
    return Path(os.environ.get("LMFORGE_HOME", Path.home() / ".lmforge")).expanduser() / "cache" / "datasets"


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _has_datasets() -> bool:
    try:
        import datasets  # noqa: F401
    except ImportError:
        return False
    return True


def _unreachable(ds: HubDataset, e: Exception) -> ModelError:
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    return ModelError(f"cannot download the Hugging Face dataset {ds} ({detail}); check the name, or download the "
                      f"split elsewhere and pass it as a file (--train train.jsonl, CSV, TSV or JSON Lines)")


def _with_datasets(ds: HubDataset) -> list[dict]:
    import datasets

    try:
        data = datasets.load_dataset(ds.repo, ds.config, split=ds.split)
    except Exception as e:  # noqa: BLE001 (any failure: unknown repo, config or split; no network)
        raise _unreachable(ds, e) from None
    return list(data)


def _with_hub(ds: HubDataset) -> list[dict]:
    """The split's data files from the repo, found by name as `datasets` finds them (`train-0000.csv`,
    `sst2/validation.jsonl`, `data/dev.tsv`), downloaded and read."""
    from huggingface_hub import hf_hub_download, list_repo_files

    try:
        files = list_repo_files(ds.repo, repo_type="dataset")
        chosen = data_files(files, ds.config, ds.split)
        if not chosen:
            shown = ", ".join([f for f in files if f.endswith(FORMATS)][:12]) or "none"
            raise ModelError(f"the Hugging Face dataset {ds.repo} has no {ds.split} files"
                             f"{f' for configuration {ds.config}' if ds.config else ''} (its data files: {shown}); "
                             f"name the split with @SPLIT or the configuration with :CONFIG")
        paths = [Path(hf_hub_download(ds.repo, f, repo_type="dataset")) for f in chosen]
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 (any failure: no network, unknown repo, gated dataset)
        raise _unreachable(ds, e) from None
    return [row for p in paths for row in _read(p)]


def data_files(files: list[str], config: str | None, split: str) -> list[str]:
    """The repo files that hold `split` (of `config`, when given): a path component or file name that is the
    split's name (or an alias: dev for validation), followed by nothing, a dot, a dash or an underscore."""
    names = "|".join(SPLIT_NAMES.get(split, (split,)))
    pattern = re.compile(rf"(^|/)({names})([-_.][^/]*)?(/|$)")
    out = []
    for f in sorted(files):
        if not f.endswith(FORMATS) or not pattern.search(f):
            continue
        if config is not None and config not in Path(f).parts[:-1]:
            continue
        out.append(f)
    return out


def _read(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ModelError(f"{path.name} is a Parquet file; install `datasets` or `pyarrow` to read it") from None
        return pq.read_table(path).to_pylist()
    if path.suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8-sig", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]
