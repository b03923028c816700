"""Readers: the registry's formats on small synthetic copies, and users' files with clear errors."""
import json

import pytest
from .synthetic_data import write_csv, write_jsonl

from lmforge.models import ModelError
from lmforge.tasks.finetune import infer_labels
from lmforge.tasks.readers import read_task_split, read_user_file, split_names
from lmforge.tasks.registry import get_task


@pytest.fixture
def data_dir(tmp_path):
    """A miniature ../shared/data with the local copies' exact formats (and none of their text)."""
    d = tmp_path / "data"
    (d / "sst2").mkdir(parents=True)
    (d / "sst2" / "train.tsv").write_text('sentence\tlabel\ngood " film \t1\nbad one \t0\n')
    (d / "sst2" / "dev.tsv").write_text("sentence\tlabel\nfine \t1\n")
    (d / "ag_news").mkdir()
    (d / "ag_news" / "test.csv").write_text(
        "".join(f'"{1 + i % 4}","Title {i}","Body, with ""quotes"" {i}"\n' for i in range(20)))
    (d / "mrpc").mkdir()
    (d / "mrpc" / "train.tsv").write_text(
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA cat .\tA cat sat .\n")
    (d / "mrpc" / "dev.tsv").write_text("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t3\t4\tX\tY\n")
    (d / "squad_xquad_en").mkdir()
    para = {"context": "Ann wrote it in 1900.", "qas": [
        {"id": f"q{i}", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 0}]} for i in range(10)]}
    (d / "squad_xquad_en" / "xquad.en.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": [para]}]}))
    (d / "multi30k").mkdir()
    for split in ("train", "val", "test_2016_flickr"):
        (d / "multi30k" / f"{split}.en").write_text("A dog runs.\nTwo cats.\n")
        (d / "multi30k" / f"{split}.de").write_text("Ein Hund rennt.\nZwei Katzen.\n")
    (d / "scitldr").mkdir()
    for split in ("train", "dev", "test"):
        write_jsonl(d / "scitldr" / f"{split}.jsonl",
                    [{"source": ["First sentence.", "Second."], "target": ["Short one.", "Another."]}])
    (d / "tinyshakespeare").mkdir()
    (d / "tinyshakespeare" / "input.txt").write_text("".join(f"line {i}\n" for i in range(100)))
    return d


def test_registry_formats(data_dir):
    sst2 = get_task("sst2")
    train = read_task_split(sst2, "train", data_dir)
    assert [(e["text"], e["label"]) for e in train] == [('good " film', "positive"), ("bad one", "negative")]
    assert sst2.text_input(train[0]) == 'sst2 sentence: good " film'
    assert train[1]["where"].endswith("train.tsv, line 3")

    ag = get_task("ag_news")
    assert split_names(ag) == ["train", "validation"]
    tr, va = read_task_split(ag, "train", data_dir), read_task_split(ag, "validation", data_dir)
    assert (len(tr), len(va)) == (18, 2) and not {e["text"] for e in tr} & {e["text"] for e in va}
    assert tr[0]["text"] == 'Title 0. Body, with "quotes" 0' and tr[0]["label"] == "World"

    mrpc = read_task_split(get_task("mrpc"), "train", data_dir)  # the BOM before 'Quality' is not part of it
    assert mrpc[0]["label"] == "equivalent" and get_task("mrpc").text_input(mrpc[0]) == (
        "mrpc sentence1: A cat . sentence2: A cat sat .")

    squad = read_task_split(get_task("squad"), "validation", data_dir)
    assert len(squad) == 1 and squad[0]["answers"] == [{"text": "Ann", "start": 0}]

    m30k = read_task_split(get_task("multi30k"), "test", data_dir)
    assert m30k[1]["source"] == "Two cats." and m30k[1]["references"] == ["Zwei Katzen."]
    assert get_task("multi30k").text_input(m30k[0]) == "translate English to German: A dog runs."

    tldr = read_task_split(get_task("scitldr"), "validation", data_dir)[0]
    assert tldr["document"] == "First sentence. Second." and tldr["references"] == ["Short one.", "Another."]

    shakes = get_task("tinyshakespeare")
    text_train = read_task_split(shakes, "train", data_dir)[0]["text"]
    text_val = read_task_split(shakes, "validation", data_dir)[0]["text"]
    assert text_train.startswith("line 0") and text_val.strip().endswith("line 99")
    assert "line 50" in text_train and "line 50" not in text_val


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(ModelError, match=r"the rte data is not on this machine .*pass --data-dir"):
        read_task_split(get_task("rte"), "train", tmp_path)


def test_user_csv_tsv_jsonl(tmp_path):
    spec = get_task("classification")
    csv_file = write_csv(tmp_path / "r.csv", ["review", "stars"], [("great, really", "5"), ("meh", "2")])
    ex = read_user_file(csv_file, spec, {"text": "review", "label": "stars"})
    assert [(e["text"], e["label"]) for e in ex] == [("great, really", "5"), ("meh", "2")]
    (tmp_path / "r.tsv").write_text('text\tlabel\nsays "hi\tb\n')
    assert read_user_file(tmp_path / "r.tsv", spec)[0]["text"] == 'says "hi'
    write_jsonl(tmp_path / "r.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 10}, {"text": "c", "label": 2}])
    assert infer_labels(read_user_file(tmp_path / "r.jsonl", spec)) == ["1", "2", "10"]  # numbers by value
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Who?", "context": "It was Ann. Ann!", "answer": "Ann"}])
    assert read_user_file(qa, get_task("qa"))[0]["answers"] == [{"text": "Ann", "start": 7}]
    pairs = write_csv(tmp_path / "p.csv", ["en", "de"], [("dog", "Hund")])
    tr = read_user_file(pairs, get_task("translation"), {"source": "en", "target": "de"})
    assert tr[0]["source"] == "dog" and tr[0]["references"] == ["Hund"]


def test_label_column_that_does_not_exist(tmp_path):
    f = write_csv(tmp_path / "reviews.csv", ["review", "rating"], [("good", "5")])
    with pytest.raises(ModelError) as e:
        read_user_file(f, get_task("classification"), {"text": "review", "label": "stars"})
    msg = str(e.value)
    assert "reviews.csv" in msg and "'stars'" in msg and "--label-column" in msg and "review, rating" in msg


def test_ragged_row(tmp_path):
    f = tmp_path / "reviews.csv"
    f.write_text("review,stars\ngood,5\n\"multi\nline\",4\nbad,1,extra\n")
    with pytest.raises(ModelError, match=r"reviews.csv, line 5: 3 fields but the header has 2 \(review, stars\)"):
        read_user_file(f, get_task("classification"), {"text": "review", "label": "stars"})


def test_qa_answer_not_in_context(tmp_path):
    f = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": "Who?", "context": "Ann wrote it.", "answer": "Ann"},
        {"question": "When?", "context": "Ann wrote it.", "answer": "1900"}])
    with pytest.raises(ModelError, match=r"qa.jsonl, line 2, field 'answer': the answer '1900' does not occur"):
        read_user_file(f, get_task("qa"))
    g = write_csv(tmp_path / "qa.csv", ["q", "c", "a", "s"], [("Who?", "Ann wrote it.", "Ann", "3")])
    with pytest.raises(ModelError, match=r"qa.csv, line 2, field 'a': the answer 'Ann' is not at character 3"):
        read_user_file(g, get_task("qa"), {"question": "q", "context": "c", "answer": "a", "answer_start": "s"})


def test_empty_split_and_empty_fields(tmp_path):
    f = write_csv(tmp_path / "empty.csv", ["text", "label"], [])
    with pytest.raises(ModelError, match=r"empty.csv has no examples"):
        read_user_file(f, get_task("classification"))
    g = write_csv(tmp_path / "blank.csv", ["text", "label"], [("ok", "a"), ("fine", " ")])
    with pytest.raises(ModelError, match=r"blank.csv, line 3, field 'label': empty label"):
        read_user_file(g, get_task("classification"))
    (tmp_path / "nothing.csv").write_text("")
    with pytest.raises(ModelError, match=r"nothing.csv is empty"):
        read_user_file(tmp_path / "nothing.csv", get_task("classification"))


def test_validation_label_outside_the_training_set(tmp_path):
    f = write_csv(tmp_path / "dev.csv", ["text", "label"], [("ok", "pos"), ("hm", "neutral")])
    with pytest.raises(ModelError, match=r"dev.csv, line 3, field 'label': label 'neutral' did not occur"):
        read_user_file(f, get_task("classification"), labels=["neg", "pos"])


def test_bad_jsonl_and_unknown_file_type(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", label}\n')
    with pytest.raises(ModelError, match=r"bad.jsonl, line 2: invalid JSON"):
        read_user_file(tmp_path / "bad.jsonl", get_task("classification"))
    (tmp_path / "data.xlsx").write_text("")
    with pytest.raises(ModelError, match=r"unsupported file type .xlsx"):
        read_user_file(tmp_path / "data.xlsx", get_task("classification"))


def test_benchmark_label_outside_the_task_labels(data_dir):
    (data_dir / "sst2" / "train.tsv").write_text("sentence\tlabel\nok \t1\nodd \t7\n")
    with pytest.raises(ModelError, match=r"train.tsv, line 3, field 'label': label '7' is not one of 0, 1"):
        read_task_split(get_task("sst2"), "train", data_dir)
