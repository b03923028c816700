"""Named entities: tag schemes, CoNLL and span readers, word-piece alignment, seqeval scores, fine-tuning."""
import json
import random
import unicodedata
from pathlib import Path

import pytest

import lmforge
from lmforge.evaluation.metrics import entity_scores
from lmforge.models import ModelError
from lmforge.tasks import FinetuneArgs, Predictor, finetune, get_task
from lmforge.tasks import tagging
from lmforge.tasks.readers import read_conll, read_entity_jsonl, read_task_split

from .synthetic_data import WORDS, write_jsonl

# A hand-written CoNLL-2003-style file (4 columns, IOB1): two documents, the second sentence has two adjacent
# LOC entities (so the second needs B-LOC in IOB1) and a tag after an O that starts with I-.
CONLL = """\
-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

Paris NNP I-NP I-LOC
Texas NNP I-NP B-LOC
and CC O O
New NNP I-NP I-LOC
York NNP I-NP I-LOC
. . O O


"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ schemes


def test_iob1_to_iob2_by_hand():
    iob1 = ["I-ORG", "O", "I-MISC", "O", "I-PER", "I-PER", "I-LOC", "B-LOC", "I-LOC", "O", "I-PER"]
    iob2 = ["B-ORG", "O", "B-MISC", "O", "B-PER", "I-PER", "B-LOC", "B-LOC", "I-LOC", "O", "B-PER"]
    assert tagging.iob_to_iob2(iob1) == iob2
    assert tagging.convert(iob1, "iob2") == iob2
    assert tagging.iob_to_iob2(iob2) == iob2  # the identity on IOB2


def test_bioes_round_trip_and_spans():
    iob2 = ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O", "B-ORG"]
    bioes = ["B-PER", "I-PER", "E-PER", "O", "S-LOC", "B-LOC", "E-LOC", "O", "S-ORG"]
    assert tagging.convert(iob2, "bioes") == bioes
    assert tagging.convert(bioes, "iob2") == iob2
    assert tagging.spans(iob2) == tagging.spans(bioes) == [("PER", 0, 3), ("LOC", 4, 5), ("LOC", 5, 7), ("ORG", 8, 9)]


def test_lenient_decoding_of_invalid_sequences():
    """As conlleval: an I- that cannot continue starts an entity; a type change splits; E-/S- close."""
    assert tagging.spans(["O", "I-PER", "I-PER"]) == [("PER", 1, 3)]
    assert tagging.spans(["B-ORG", "I-PER"]) == [("ORG", 0, 1), ("PER", 1, 2)]
    assert tagging.spans(["S-PER", "I-PER"]) == [("PER", 0, 1), ("PER", 1, 2)]
    assert tagging.spans(["B-LOC", "E-LOC", "E-LOC"]) == [("LOC", 0, 2), ("LOC", 2, 3)]


def test_tag_names_and_scheme_of():
    assert tagging.tag_names(["PER", "ORG"], "iob2") == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    assert tagging.tag_names(["PER"], "bioes") == ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
    assert tagging.scheme_of(["O", "B-PER", "I-PER"]) == "iob2"
    assert tagging.scheme_of(["O", "S-PER"]) == "bioes"
    with pytest.raises(ValueError, match="'X-PER' is not O or B-/I-/E-/S-"):
        tagging.split_tag("X-PER")


# ------------------------------------------------------------------ readers


def test_conll_reader(tmp_path):
    ex = read_conll(write(tmp_path / "a.conll", CONLL))
    assert [e["text"] for e in ex] == ["EU rejects German call .", "Peter Blackburn", "Paris Texas and New York ."]
    assert ex[0]["tags"] == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert ex[2]["tags"] == ["B-LOC", "B-LOC", "O", "B-LOC", "I-LOC", "O"]
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in ex[2]["entities"]] == [
        ("LOC", "Paris", 0, 5), ("LOC", "Texas", 6, 11), ("LOC", "New York", 16, 24)]
    assert ex[1]["where"].endswith("a.conll, line 9") and ex[2]["where"].endswith("line 14")


def test_conll_reader_two_columns_and_bioes(tmp_path):
    ex = read_conll(write(tmp_path / "b.txt", "New S-LOC\nYork O\n\nAnn B-PER\nLee E-PER\nsaid O\n"))
    assert [x["tags"] for x in ex] == [["B-LOC", "O"], ["B-PER", "I-PER", "O"]]


@pytest.mark.parametrize("text,message", [
    ("EU I-ORG\nrejects\n", "b.conll, line 2: one column"),
    ("EU X-ORG\n", "b.conll, line 1, field 'tag': tag 'X-ORG' is not O or B-/I-/E-/S-"),
    ("-DOCSTART- -X- O O\n\n", "b.conll has no sentences"),
])
def test_conll_reader_errors(tmp_path, text, message):
    with pytest.raises(ModelError, match=message.replace("(", r"\(")):
        read_conll(write(tmp_path / "b.conll", text))


def test_conll_reader_closed_types(tmp_path):
    with pytest.raises(ModelError, match=r"line 1, field 'tag': entity type 'GPE' did not occur in the training data \(PER\)"):
        read_conll(write(tmp_path / "d.conll", "Rome B-GPE\n"), types=["PER"])


def test_jsonl_spans_reader(tmp_path):
    rows = [{"text": "Ann Lee moved to the Paris-based Acme Corp.",
             "entities": [{"start": 0, "end": 7, "label": "PER"}, [21, 26, "LOC"], {"start": 33, "end": 42, "label": "ORG"}]},
            {"text": "Nothing here.", "entities": []}]
    ex = read_entity_jsonl(write_jsonl(tmp_path / "s.jsonl", rows), {"text": "text", "entities": "entities"})
    words = [ex[0]["text"][a:b] for a, b in ex[0]["offsets"]]
    assert words == ["Ann", "Lee", "moved", "to", "the", "Paris", "-", "based", "Acme", "Corp", "."]  # cut at "Paris"
    assert ex[0]["tags"] == ["B-PER", "I-PER", "O", "O", "O", "B-LOC", "O", "O", "B-ORG", "I-ORG", "O"]
    assert [(e["type"], e["text"]) for e in ex[0]["entities"]] == [("PER", "Ann Lee"), ("LOC", "Paris"),
                                                                   ("ORG", "Acme Corp")]
    assert ex[1]["tags"] == ["O", "O", "O"]


@pytest.mark.parametrize("entities,message", [
    ([[0, 99, "PER"]], r"s.jsonl, line 1, field 'entities'\[0\]: span 0-99 is outside the text"),
    ([[0, 3, "PER"], [2, 7, "PER"]], "entities 0 \\(0-3\\) and 1 \\(2-7\\) overlap"),
    ([{"begin": 0}], r"field 'entities'\[0\]: an entity is"),
    ([[0, 3, "B-PER"]], "label 'B-PER' is not an entity type"),
])
def test_jsonl_spans_errors(tmp_path, entities, message):
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": "Ann Lee left.", "entities": entities}])
    with pytest.raises(ModelError, match=message):
        read_entity_jsonl(path, {"text": "text", "entities": "entities"})


def test_jsonl_missing_column_names_the_flag(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"sentence": "Ann left.", "entities": []}])
    with pytest.raises(ModelError, match="no column 'text' .*--text-column.*the file has: sentence, entities"):
        read_entity_jsonl(path, {"text": "text", "entities": "entities"})


def test_registry_task_reads_a_conll_folder(tmp_path):
    folder = tmp_path / "conll2003"
    folder.mkdir()
    for name in ("train.txt", "dev.txt", "test.txt"):
        write(folder / name, CONLL)
    spec = get_task("conll2003")
    assert spec.kind == "ner" and spec.label_names() == ["PER", "ORG", "LOC", "MISC"]
    assert len(read_task_split(spec, "test", tmp_path)) == 3


# ------------------------------------------------------------------ word pieces


def _example(words, tags):
    text, offsets, pos = " ".join(words), [], 0
    for w in words:
        offsets.append((pos, pos + len(w)))
        pos += len(w) + 1
    return {"text": text, "offsets": offsets, "tags": tags}


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "roberta"])
def test_first_sub_token_carries_the_tag(name):
    """Word pieces after a word's first get -100, as do the special tokens; every word gets exactly one label."""
    from importlib.resources import files

    tok = lmforge.load_tokenizer(name if name != "roberta" else files("lmforge") / "demo_models" / "roberta")
    words = ["Schwarzenegger", "visited", "Kraków", "yesterday", "."]
    tags = ["B-PER", "O", "B-LOC", "O", "O"]
    ids = {t: i for i, t in enumerate(tagging.tag_names(["PER", "LOC"], "iob2"))}
    (f,) = tagging.features(tok, [_example(words, tags)], 64, ids)
    labelled = [(k, lab) for k, lab in enumerate(f.labels) if lab != -100]
    assert [lab for _, lab in labelled] == [ids[t] for t in tags]
    assert [f.word_of[k] for k, _ in labelled] == list(range(len(words)))
    assert len(f.input_ids) > len(words) + 2  # "Schwarzenegger" and "Kraków" are several pieces
    first_pieces = [tok.decode([f.input_ids[k]]).strip().lower() for k, _ in labelled]
    plain = ["".join(c for c in unicodedata.normalize("NFD", w.lower()) if not unicodedata.combining(c)) for w in words]
    assert all(w.startswith(p) and p for w, p in zip(plain, first_pieces)), first_pieces
    specials = set(tok.all_special_ids)
    assert all(lab == -100 for i, lab in zip(f.input_ids, f.labels) if i in specials)


def test_long_sentence_is_split_between_words():
    tok = lmforge.load_tokenizer("all-MiniLM-L6-v2")
    words = [f"w{i}" for i in range(40)]  # "w", "##0": two pieces a word
    tags = ["B-PER" if i % 7 == 0 else "O" for i in range(40)]
    ids = {t: i for i, t in enumerate(tagging.tag_names(["PER"], "iob2"))}
    feats = tagging.features(tok, [_example(words, tags)], 20, ids)
    assert len(feats) > 1 and all(len(f.input_ids) <= 20 for f in feats)
    covered = [w for f in feats for w in f.word_of if w >= 0]
    assert covered == list(range(40))  # every word once, in order
    got = [lab for f in feats for lab in f.labels if lab != -100]
    assert got == [ids[t] for t in tags]


# ------------------------------------------------------------------ scores


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-PER"]]
    # gold: PER x2, LOC, ORG; predicted: PER x2 (both right), ORG x2 (one right)
    m = entity_scores(pred, gold)
    assert m["precision"] == pytest.approx(3 / 4) and m["recall"] == pytest.approx(3 / 4)
    assert m["PER_f1"] == 1 and m["LOC_recall"] == 0 and m["ORG_precision"] == pytest.approx(0.5)
    assert m["PER_support"] == 2 and m["LOC_support"] == 1
    # strict: a boundary error is a miss and a false alarm
    m = entity_scores([["B-PER", "O"]], [["B-PER", "I-PER"]])
    assert m["f1"] == 0
    bioes = entity_scores([tagging.convert(p, "bioes") for p in pred], [tagging.convert(g, "bioes") for g in gold],
                          "bioes")
    assert bioes["f1"] == pytest.approx(3 / 4)


# ------------------------------------------------------------------ fine-tuning


def ner_rows(n: int, seed: int) -> list[dict]:
    """Sentences of filler words with names (two words from one list: PER) and places (one word: LOC)."""
    rng = random.Random(seed)
    first, last, places, filler = WORDS[:3], WORDS[3:6], WORDS[6:9], WORDS[9:]
    rows = []
    for _ in range(n):
        parts, ents = [], []
        for _ in range(rng.randint(3, 6)):
            r = rng.random()
            start = sum(len(p) + 1 for p in parts)
            if r < 0.2:
                word = f"{rng.choice(first)} {rng.choice(last)}"
                ents.append([start, start + len(word), "PER"])
            elif r < 0.35:
                word = rng.choice(places)
                ents.append([start, start + len(word), "LOC"])
            else:
                word = rng.choice(filler)
            parts.append(word)
        rows.append({"text": " ".join(parts), "entities": ents})
    return rows


@pytest.mark.parametrize("family,scheme", [("bert", "iob2"), ("roberta", "bioes"), ("xlnet", "iob2")])
def test_tagger_learns_names_and_places(family, scheme, tiny_model, tmp_path):
    rows = ner_rows(300, seed=0)
    train, dev = write_jsonl(tmp_path / "train.jsonl", rows[:260]), write_jsonl(tmp_path / "dev.jsonl", rows[260:])
    r = finetune(FinetuneArgs(model=str(tiny_model(family)), task="ner", out=tmp_path / "out", train=train,
                              validation=dev, batch_size=16, lr=3e-3, max_length=32, max_steps=150,
                              warmup_ratio=0.1, tag_scheme=scheme))
    assert r.mode == "tag"
    assert r.metrics["f1"] >= 0.9 and r.metrics["PER_f1"] >= 0.9, r.metrics
    model, _ = lmforge.load(tmp_path / "out")
    assert model.task == "token_classification"
    assert set(model.config.id2label.values()) == set(tagging.tag_names(["PER", "LOC"], scheme))
    p = Predictor.load(tmp_path / "out")
    text = f"{WORDS[10]} {WORDS[0]} {WORDS[4]} {WORDS[11]} {WORDS[7]}"
    got = p.tag(text)
    assert [(e["type"], e["text"]) for e in got] == [("PER", f"{WORDS[0]} {WORDS[4]}"), ("LOC", WORDS[7])], got
    assert all(text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1 for e in got)
    meta = json.loads((tmp_path / "out" / "lmforge_task.json").read_text())
    assert meta["task"]["labels"] == {"PER": "PER", "LOC": "LOC"} and meta["mode"] == "tag"


def test_ner_needs_an_encoder(tiny_model, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", ner_rows(4, 0))
    with pytest.raises(ModelError, match="token-classification head over an encoder .* gpt2 has none"):
        finetune(FinetuneArgs(model=str(tiny_model("gpt2")), task="ner", out=tmp_path / "o", train=path))


def test_cli_finetune_conll2003_and_eval_with_offsets(tiny_model, tmp_path, monkeypatch):
    """`lmforge finetune --task conll2003 --data-dir` on a hand-written copy, then `lmforge eval --split test`."""
    from typer.testing import CliRunner

    from lmforge.cli import app

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data" / "conll2003"
    folder.mkdir(parents=True)
    for name in ("train.txt", "dev.txt", "test.txt"):
        write(folder / name, CONLL)
    runner = CliRunner()
    out = tmp_path / "tagger"
    result = runner.invoke(app, ["finetune", "--model", str(tiny_model("bert")), "--task", "conll2003", "--data-dir",
                                 str(tmp_path / "data"), "--out", str(out), "--max-steps", "3", "--max-length", "32",
                                 "--tag-scheme", "bioes"])
    assert result.exit_code == 0, result.output
    assert "fine-tuned bert (tag) on 3 examples: 3 steps" in " ".join(result.output.split())
    metrics = json.loads((out / "eval_results.json").read_text())["metrics"]
    assert {"precision", "recall", "f1", "PER_f1", "LOC_support"} <= set(metrics) and metrics["LOC_support"] == 3
    model, _ = lmforge.load(out)
    assert len(model.config.id2label) == 1 + 4 * 4  # O + B/I/E/S of PER, ORG, LOC, MISC

    result = runner.invoke(app, ["eval", "--model", str(out), "--split", "test", "--data-dir", str(tmp_path / "data"),
                                 "--predictions", "preds.jsonl"])
    assert result.exit_code == 0, result.output
    preds = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert len(preds) == 3 and preds[2]["reference"][2] == {"type": "LOC", "start": 16, "end": 24, "text": "New York"}
    for p in preds:
        assert all(p["text"][e["start"]:e["end"]] == e["text"] for e in p["prediction"])

    result = runner.invoke(app, ["finetune", "--model", str(tiny_model("bert")), "--task", "ner", "--train",
                                 str(folder / "train.txt"), "--out", str(tmp_path / "x"), "--tag-scheme", "bilou"])
    assert result.exit_code == 1 and "--tag-scheme must be one of iob2, bioes, not 'bilou'" in result.output
