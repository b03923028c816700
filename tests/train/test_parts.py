import math

import pytest
import torch
from typer.testing import CliRunner

from lmforge.cli import app
from lmforge.data import DataError
from lmforge.models import ModelError
from lmforge.models.hf_io import model_class
from lmforge.models.presets import make_config
from lmforge.train import Args, pretrain
from lmforge.train.checkpoint import load_checkpoint, save_checkpoint
from lmforge.train.optim import lr_factor, make_optimizer, make_scheduler, param_groups


def test_weight_decay_groups_skip_biases_and_norms():
    model = model_class("bert")(make_config("bert", layers=1, hidden=16, heads=2, ffn=32, vocab=50), "lm")
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() == 2 for p in decay["params"]) and decay["weight_decay"] == 0.01
    assert no_decay["weight_decay"] == 0.0
    skipped = [names[id(p)] for p in no_decay["params"]]
    assert "embeddings.norm.weight" in skipped and "layers.0.query.bias" in skipped
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_cosine_or_linear():
    f = [lr_factor(s, 10, 110, "cosine", 0.1) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warmup to the peak
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.55) and f[109] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    lin = [lr_factor(s, 0, 100, "linear") for s in range(100)]
    assert lin[50] == pytest.approx(0.5)
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(model, 1.0, 0.0)
    sched = make_scheduler(opt, 10, 110, "cosine", 0.1)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(f[:20])
    with pytest.raises(ValueError):
        make_scheduler(opt, 1, 10, "exponential")


def test_a_crash_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 3)
    opt = make_optimizer(model, 0.1, 0.0)
    sched = make_scheduler(opt, 1, 10)
    save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, step=5, position=40, args={"a": 1})

    def crash(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, step=6, position=48, args={})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left
    state = load_checkpoint(tmp_path)
    assert state["step"] == 5 and state["position"] == 40 and set(state["rng"]) == {"python", "numpy", "torch"}
    assert {"model", "optimizer", "scheduler", "args"} <= set(state)


@pytest.mark.parametrize("content, suffix, match", [
    (b'{"text": "ok"}\n{"text": broken\n', ".jsonl", r":2: not valid JSON"),
    (b"caf\xe9\n", ".txt", r":1: not valid UTF-8"),
    (b"\n\n", ".txt", "empty"),
])
def test_malformed_input_stops_before_writing(tmp_path, tokenizer_dir, content, suffix, match):
    path = tmp_path / f"corpus{suffix}"
    path.write_bytes(content)
    args = Args(family="gpt2", data=[path], out=tmp_path / "run", tokenizer=tokenizer_dir("gpt2"),
                cache_dir=tmp_path / "cache", steps=2, progress=False)
    with pytest.raises(DataError, match=match) as e:
        pretrain(args)
    assert str(path) in str(e.value) or match == "empty"
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_block_larger_than_positions(tmp_path, corpus, tokenizer_dir):
    args = Args(family="bert", data=[corpus], out=tmp_path / "run", tokenizer=tokenizer_dir("bert"),
                cache_dir=tmp_path / "cache", block_size=600, max_positions=512, steps=2, progress=False)
    with pytest.raises(ModelError, match="block size 600 is larger than the 512 positions"):
        pretrain(args)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_cli_pretrain_end_to_end(tmp_path, corpus, tokenizer_dir):
    out = tmp_path / "run"
    opts = ["--family", "roberta", "--data", str(corpus), "--out", str(out), "--layers", "1", "--hidden", "32",
            "--heads", "2", "--ffn", "64", "--block-size", "32", "--steps", "6", "--eval-every", "3",
            "--save-every", "3", "--vocab-size", "300", "--cache-dir", str(tmp_path / "cache"), "--threads", "1",
            "--no-progress", "--precision", "fp32"]
    result = CliRunner().invoke(app, ["pretrain", *opts])
    assert result.exit_code == 0, result.output
    assert "validation loss" in result.output
    import lmforge

    model, tok = lmforge.load(out)  # a tokenizer was trained on the corpus and saved with the model
    assert model.family == "roberta" and tok.vocab_size <= 300
    assert math.isfinite(model(torch.tensor([[0, 5, 2]])).logits.sum().item())
    bad = CliRunner().invoke(app, ["pretrain", *opts[:-2], "--precision", "fp64"])
    assert bad.exit_code == 1 and "precision" in bad.output and "Traceback" not in bad.output
