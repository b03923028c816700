"""Hugging Face dataset names (hf:REPO[:CONFIG][@SPLIT]): parsing, file choice, the offline error, the cache.
Nothing here downloads; the network path is exercised only up to the offline check."""
import json

import pytest

from lmforge.models import ModelError
from lmforge.tasks import hub_data
from lmforge.tasks.finetune import load_examples
from lmforge.tasks.registry import get_task


@pytest.mark.parametrize("name, split, want", [
    ("hf:stanfordnlp/imdb", "train", ("stanfordnlp/imdb", None, "train")),
    ("hf:nyu-mll/glue:sst2", "validation", ("nyu-mll/glue", "sst2", "validation")),
    ("hf:nyu-mll/glue:sst2@test", "train", ("nyu-mll/glue", "sst2", "test")),
    ("hf:imdb@unsupervised", "train", ("imdb", None, "unsupervised")),
])
def test_names_parse(name, split, want):
    ds = hub_data.parse(name, split)
    assert (ds.repo, ds.config, ds.split) == want
    assert hub_data.parse(str(ds), "other") == ds  # str() round-trips, split included


@pytest.mark.parametrize("name", ["hf:", "hf:a/b/c", "hf:glue sst2", "hf:glue:sst2:x", "hf:glue@"])
def test_bad_names_say_what_to_write(name):
    with pytest.raises(ModelError, match="is not a Hugging Face dataset name; write hf:OWNER/NAME"):
        hub_data.parse(name, "train")


def test_local_paths_are_not_hub_names(tmp_path):
    assert hub_data.parse(tmp_path / "train.csv", "train") is None
    assert hub_data.local_file(tmp_path / "train.csv", "train") == tmp_path / "train.csv"


def test_split_files_are_found_by_name():
    files = ["README.md", "sst2/train-00000-of-00001.parquet", "sst2/validation-00000-of-00001.parquet",
             "cola/train-00000-of-00001.parquet", "data/dev.tsv", "data/training_notes.csv", "train.jsonl"]
    assert hub_data.data_files(files, "sst2", "train") == ["sst2/train-00000-of-00001.parquet"]
    assert hub_data.data_files(files, None, "validation") == ["data/dev.tsv", "sst2/validation-00000-of-00001.parquet"]
    assert hub_data.data_files(files, None, "train") == ["cola/train-00000-of-00001.parquet",
                                                         "sst2/train-00000-of-00001.parquet", "train.jsonl"]
    assert hub_data.data_files(files, "mnli", "train") == []


def test_offline_is_a_clear_error_naming_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"cannot download the Hugging Face dataset hf:nyu-mll/glue:sst2@train: this "
                                         r"machine is offline .* pass it as a file, e.g. --train train.jsonl"):
        load_examples(get_task("sst2"), "train", "hf:nyu-mll/glue:sst2", {"text": "sentence"})


def test_a_split_fetched_before_is_read_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = hub_data.cache_dir() / "nyu-mll--glue--sst2--validation.jsonl"
    cached.parent.mkdir(parents=True)
    cached.write_text("".join(json.dumps({"sentence": s, "label": y, "idx": i}) + "\n"
                              for i, (s, y) in enumerate([("a fine film", 1), ("dull", 0)])))
    got = load_examples(get_task("sst2"), "validation", "hf:nyu-mll/glue:sst2@validation", {"text": "sentence"})
    assert [(x["text"], x["label"]) for x in got] == [("a fine film", "positive"), ("dull", "negative")]
    assert got[0]["where"].endswith("nyu-mll--glue--sst2--validation.jsonl, line 1")
