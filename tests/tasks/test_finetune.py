"""End-to-end fine-tuning of tiny random models on small synthetic tasks that are learnable."""
import random

import torch

import pytest
from .synthetic_data import MARKER, WORDS, marker_rows, write_csv, write_jsonl

import lmforge
from lmforge.models import ModelError
from lmforge.tasks import FinetuneArgs, Predictor, finetune


@pytest.fixture(scope="module")
def marker_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("marker")
    rows = marker_rows(360, seed=1)
    return (write_csv(d / "train.csv", ["review", "stars"], rows[:320]),
            write_csv(d / "dev.csv", ["review", "stars"], rows[320:]))


def _args(model, out, **kw):
    base = dict(model=str(model), out=out, batch_size=16, lr=2e-3, max_length=32, warmup_ratio=0.1)
    return FinetuneArgs(**{**base, **kw})


@pytest.mark.parametrize("family", ["bert", "roberta", "xlnet", "gpt2"])
def test_encoder_head_learns_marker_task(family, tiny_model, marker_files, tmp_path):
    train, dev = marker_files
    r = finetune(_args(tiny_model(family), tmp_path / "out", task="classification", train=train, validation=dev,
                       columns={"text": "review", "label": "stars"}, max_steps=100))
    assert r.mode == "classify"
    assert r.metrics["accuracy"] >= 0.95, r.metrics
    # The label set was inferred, sorted, and saved with the model: transformers-style id2label.
    model, _ = lmforge.load(tmp_path / "out")
    assert model.task == "classification" and model.config.id2label == {0: "no", 1: "yes"}
    p = Predictor.load(tmp_path / "out")
    got = p.classify([f"alpha {MARKER} bravo charlie delta", "alpha bravo charlie delta echo"])
    assert [g["label"] for g in got] == ["yes", "no"] and all(0.5 < g["score"] <= 1 for g in got)


def test_t5_text_to_text_classification(tiny_model, marker_files, tmp_path):
    train, dev = marker_files
    r = finetune(_args(tiny_model("t5", "lm"), tmp_path / "out", task="classification", train=train,
                       validation=dev, columns={"text": "review", "label": "stars"}, max_steps=120, lr=3e-3,
                       max_length=64, target_max_length=8))  # T5's tiny vocabulary spells words out: room for all
    assert r.mode == "text2text"
    assert r.metrics["accuracy"] >= 0.95, r.metrics


def test_t5_learns_a_text_to_text_mapping(tiny_model, tmp_path):
    """A word-for-word lexicon (`translate: alpha` -> `india`) learned to exact match >= 0.9."""
    rng = random.Random(0)
    lexicon = dict(zip(WORDS[:8], WORDS[8:16]))
    rows = [{"source": w, "target": lexicon[w]} for w in (rng.choice(WORDS[:8]) for _ in range(340))]
    train, dev = write_jsonl(tmp_path / "train.jsonl", rows[:300]), write_jsonl(tmp_path / "dev.jsonl", rows[300:])
    r = finetune(_args(tiny_model("t5", "lm"), tmp_path / "out", task="translation", train=train, validation=dev,
                       max_steps=100, lr=5e-3, target_max_length=12))
    preds = r.predictor.translate([x["source"] for x in rows[300:]])
    exact = sum(p == x["target"] for p, x in zip(preds, rows[300:])) / len(preds)
    assert exact >= 0.9, list(zip(preds, rows[300:]))[:5]
    assert r.metrics["chrf"] >= 90
    assert Predictor.load(tmp_path / "out").translate("alpha") == lexicon["alpha"]


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_extractive_qa_learns_the_span(family, tiny_model, tmp_path):
    """The answer is the word after the marker; exact match well above chance (1 in 6 positions). GPT-2's
    byte-level offsets count the space before a word into it: the answer must come without it."""
    rng = random.Random(0)
    rows = []
    for _ in range(260):
        words = rng.sample(WORDS, 6)
        i = rng.randrange(5)
        words.insert(i, MARKER)
        rows.append({"question": f"what follows {MARKER}", "context": " ".join(words), "answer": words[i + 1]})
    train, dev = write_jsonl(tmp_path / "train.jsonl", rows[:220]), write_jsonl(tmp_path / "dev.jsonl", rows[220:])
    r = finetune(_args(tiny_model(family), tmp_path / "out", task="qa", train=train, validation=dev, max_steps=300,
                       lr=2e-3, max_length=48))
    assert r.mode == "span"
    assert r.metrics["exact_match"] >= 70, r.metrics
    got = Predictor.load(tmp_path / "out").answer("what follows zulu", "kilo zulu lima mike")
    assert got["text"] == "lima" and got["start"] == 10


def test_gpt2_language_model_on_running_text(tiny_model, tmp_path):
    text = "\n".join(" ".join(WORDS) for _ in range(60))  # a repeated sequence: perplexity must fall near 1
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "dev.txt").write_text(text[:2000])
    r = finetune(_args(tiny_model("gpt2", "lm"), tmp_path / "out", task="generation", train=tmp_path / "train.txt",
                       validation=tmp_path / "dev.txt", max_steps=100, lr=3e-3))
    assert r.mode == "causal" and r.metrics["perplexity"] < 3, r.metrics


def test_gpt2_prompt_mode_summarization_runs(tiny_model, tmp_path):
    rows = [{"text": " ".join(random.Random(i).sample(WORDS, 6)), "target": "short"} for i in range(40)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    r = finetune(_args(tiny_model("gpt2", "lm"), tmp_path / "out", task="summarization", train=train,
                       validation=train, max_steps=30, lr=3e-3, target_max_length=6, max_eval_examples=4))
    assert r.mode == "prompt" and set(r.metrics) == {"rouge1", "rouge2", "rougeL"}
    assert isinstance(r.predictor.summarize("alpha bravo"), str)


@pytest.mark.parametrize("family, task, message", [
    ("bert", "translation", "bert is an encoder-only model and cannot translate; use t5 or gpt2"),
    ("roberta", "summarization", "cannot summarise"),
    ("xlnet", "generation", "for classification and qa only"),
    ("t5", "generation", "use gpt2"),
])
def test_meaningless_combinations_say_so(family, task, message, tiny_model, tmp_path):
    rows = [{"text": "alpha", "target": "bravo", "source": "alpha"}] * 4
    train = write_jsonl(tmp_path / "train.jsonl", rows) if task != "generation" else tmp_path / "t.txt"
    if task == "generation":
        train.write_text("alpha bravo charlie")
    with pytest.raises(ModelError, match=message):
        finetune(_args(tiny_model(family), tmp_path / "out", task=task, train=train, max_steps=1))


class Interrupt(Exception):
    pass


def _stop_at(step_to_stop):
    def progress(step, total, loss):
        if step == step_to_stop:
            raise Interrupt
    return progress


@pytest.mark.parametrize("family, kind", [("bert", "classification"), ("t5", "text2text")])
def test_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(family, kind, tiny_model, marker_files,
                                                                        tmp_path):
    """Dropout is on: equal weights need the batch order replayed and the random state restored as well."""
    train, dev = marker_files
    model = tiny_model(family, "lm" if family == "t5" else "base")
    common = dict(task="classification", train=train, columns={"text": "review", "label": "stars"},
                  max_steps=23, save_every=10, evaluate=False, max_length=64 if family == "t5" else 32)
    whole = finetune(_args(model, tmp_path / "whole", **common))
    assert not (tmp_path / "whole" / "checkpoint.pt").exists()  # a finished run cleans up

    with pytest.raises(Interrupt):
        finetune(_args(model, tmp_path / "cut", **common), progress=_stop_at(15))
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["step"] == 10
    with pytest.raises(ModelError, match="holds an interrupted fine-tuning run.*--resume"):
        finetune(_args(model, tmp_path / "cut", **common))
    steps = []
    resumed = finetune(_args(model, tmp_path / "cut", resume=True, **common),
                       progress=lambda step, total, loss: steps.append(step))
    assert steps == list(range(11, 24)) and resumed.steps == whole.steps == 23
    assert resumed.final_loss == pytest.approx(whole.final_loss, abs=1e-6)
    a, b = whole.predictor.model.state_dict(), resumed.predictor.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()


def test_resume_checks_the_checkpoint_belongs_to_the_run(tiny_model, marker_files, tmp_path):
    train, _ = marker_files
    common = dict(task="classification", train=train, columns={"text": "review", "label": "stars"}, max_steps=12,
                  save_every=5, evaluate=False)
    with pytest.raises(ModelError, match="nothing to resume"):
        finetune(_args(tiny_model("bert"), tmp_path / "out", resume=True, **common))
    with pytest.raises(Interrupt):
        finetune(_args(tiny_model("bert"), tmp_path / "out", **common), progress=_stop_at(7))
    with pytest.raises(ModelError, match="written with lr=0.002 but this run has lr=0.001"):
        finetune(_args(tiny_model("bert"), tmp_path / "out", resume=True, **{**common, "lr": 1e-3}))
    (tmp_path / "out" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="could not read the checkpoint"):
        finetune(_args(tiny_model("bert"), tmp_path / "out", resume=True, **common))


def test_byte_level_answer_spans_come_without_the_leading_space(tiny_model, monkeypatch):
    """GPT-2's offsets count the space before a word into its token: a span that starts on such a token must be
    answered as the word itself, with the word's own start."""
    from lmforge.tasks import formatting as fm
    from lmforge.tasks.finetune import prepare_model
    from lmforge.tasks.registry import get_task

    context = "kilo zulu lima mike"
    model, tok = prepare_model(str(tiny_model("gpt2")), "qa", None)
    p = Predictor(model, tok, get_task("qa"), "span", 48, 16, 16)

    def span_from_the_space_to_lima(logits, f):
        starts = [i for i, ok in enumerate(f.is_context) if ok and f.offsets[i][0] <= 9 < f.offsets[i][1]]
        ends = [i for i, ok in enumerate(f.is_context) if ok and f.offsets[i][1] == 14]
        return 1.0, starts[0], ends[0]

    monkeypatch.setattr(fm, "best_span", span_from_the_space_to_lima)
    assert p.answer("what follows zulu", context) == {"text": "lima", "score": 1.0, "start": 10}
