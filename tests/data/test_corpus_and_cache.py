import json

import numpy as np
import pytest

from lmforge.data import DataError, build_cache, read_documents
from lmforge.tokenizer import train_tokenizer

TEXT = "the cat sat on the mat .\nthe dog ran .\n\na bird sings in the tree .\n" * 20


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "train.txt"
    path.write_text(TEXT * 5)
    return {f: train_tokenizer(f, [str(path)], vocab_size=120) for f in ("gpt2", "bert")}


def test_formats_give_documents_of_segments(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_bytes("\ufeffline one\r\nline two\r\n\r\n\r\nnext doc\n".encode())
    assert list(read_documents(txt)) == [["line one", "line two"], ["next doc"]]
    jl = tmp_path / "b.jsonl"
    jl.write_text(json.dumps({"text": "para one\npara two", "id": 1}) + "\n\n" + json.dumps({"text": "x"}) + "\n")
    assert list(read_documents(jl)) == [["para one", "para two"], ["x"]]


@pytest.mark.parametrize("content, where, reason", [
    (b'{"text": "fine"}\n{"text": "fine"}\n{"text": oops}\n', ":3:", "not valid JSON"),
    (b'{"text": "fine"}\n["a list"]\n', ":2:", "\"text\" field"),
    (b'{"text": 5}\n', ":1:", "not a string"),
])
def test_malformed_jsonl_names_file_line_and_reason(tmp_path, tokenizers, content, where, reason):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        build_cache([path], tokenizers["gpt2"], tmp_path / "cache")
    assert f"{path}{where}" in str(e.value) and reason in str(e.value)
    assert not any((tmp_path / "cache").iterdir())  # nothing half-written


def test_non_utf8_names_the_line(tmp_path, tokenizers):
    path = tmp_path / "latin1.txt"
    path.write_bytes("good line\nstill good\nca\xf1on in latin-1\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{path}:3: not valid UTF-8 \(byte 0xf1 at column 3"):
        build_cache([path], tokenizers["gpt2"], tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


def test_empty_corpus(tmp_path, tokenizers):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    with pytest.raises(DataError, match="empty"):
        build_cache([empty], tokenizers["gpt2"], tmp_path / "cache")
    with pytest.raises(DataError, match="no such file"):
        build_cache([tmp_path / "missing.txt"], tokenizers["gpt2"], tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


def test_cache_is_reused_and_a_new_tokenizer_invalidates_it(tmp_path, tokenizers):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    first = build_cache([path], tokenizers["gpt2"], tmp_path / "cache")
    stamp = (first.folder / "tokens.bin").stat().st_mtime_ns
    again = build_cache([path], tokenizers["gpt2"], tmp_path / "cache")
    assert again.folder == first.folder and (again.folder / "tokens.bin").stat().st_mtime_ns == stamp
    # The cache holds exactly the tokenizer's ids, segment by segment.
    tok = tokenizers["gpt2"]
    seg = again.segments
    assert again.tokens[seg[0] : seg[1]].tolist() == tok.encode("the cat sat on the mat .\n")
    assert again.num_documents == 21 and again.tokens.dtype == np.uint16  # "C" joins the next repeat's "A B"
    other = build_cache([path], tokenizers["bert"], tmp_path / "cache")
    assert other.folder != first.folder and first.folder.exists()  # another family's cache stays
    retrained = train_tokenizer("gpt2", [str(path)], vocab_size=300)
    newer = build_cache([path], retrained, tmp_path / "cache")
    assert newer.folder != first.folder and not first.folder.exists()  # the stale gpt2 cache is gone
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([other.folder.name, newer.folder.name])
    # Changing the corpus builds a new cache too.
    path.write_text(TEXT + "one more line .\n")
    assert build_cache([path], tokenizers["bert"], tmp_path / "cache").num_tokens > other.num_tokens


def test_hf_dataset_folder_is_recognised(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{}")
    (folder / "state.json").write_text("{}")
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="pip install datasets"):
            list(read_documents(folder))
        return
    ds = datasets.Dataset.from_dict({"text": ["one line\ntwo lines", "", "third"]})
    ds.save_to_disk(str(tmp_path / "real"))
    assert list(read_documents(tmp_path / "real")) == [["one line", "two lines"], ["third"]]
