"""The responsible-AI commands end to end on tiny inputs: scrub, index + detect, audit log, audit bias."""
import json

import torch
from typer.testing import CliRunner

from lmforge.cli import app
from lmforge.models.hf_io import model_class
from lmforge.models.presets import TINY, make_config
from lmforge.safety.audit_log import AuditLog
from lmforge.safety.watermark import WatermarkConfig, WatermarkProcessor
from lmforge.tokenizer import train_tokenizer

runner = CliRunner()


def flat(output):
    """Rich wraps long lines to the terminal width."""
    return " ".join(output.split())


def test_data_scrub_writes_copies_and_report(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.txt").write_text("write to a@example.com\nor 4111 1111 1111 1111\n")
    out = tmp_path / "out"
    r = runner.invoke(app, ["data", "scrub", str(src / "a.txt"), "--out", str(out), "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert (out / "a.txt").read_text() == "write to [EMAIL]\nor [CREDIT_CARD]\n"
    assert json.loads((tmp_path / "r.json").read_text())["entities"] == {"CREDIT_CARD": 1, "EMAIL": 1}
    bad = runner.invoke(app, ["data", "scrub", str(src / "a.txt"), "--out", str(out), "--types", "NAME"])
    assert bad.exit_code == 1 and "unknown PII types" in flat(bad.output)


def test_index_and_detect_copying(tmp_path):
    corpus = tmp_path / "corpus.txt"
    words = [f"word{i % 97}x{i % 13}" for i in range(2000)]
    corpus.write_text(" ".join(words))
    r = runner.invoke(app, ["data", "index", str(corpus), "--out", str(tmp_path / "idx")])
    assert r.exit_code == 0, r.output
    text = "fresh words first " + " ".join(words[500:560]) + " and fresh words after"
    r = runner.invoke(app, ["detect", text, "--index", str(tmp_path / "idx"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)["copying"]
    assert res["flagged"] and res["longest_overlap_words"] == 60


@torch.no_grad()
def test_detect_watermark_on_a_saved_model(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 50)
    tok = train_tokenizer("gpt2", [str(corpus)], vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    model = model_class("gpt2")(make_config("gpt2", **{**TINY, "vocab": tok.vocab_size}), "lm").eval()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    cfg = WatermarkConfig("k3y", tok.vocab_size, delta=6.0)
    proc, g = WatermarkProcessor(cfg), torch.Generator().manual_seed(0)
    ids = torch.tensor([[tok.eos_token_id]])
    for _ in range(60):
        logits = model(ids).logits[:, -1]
        logits[:, tok.eos_token_id] = float("-inf")
        ids = torch.cat([ids, torch.multinomial(proc(ids[:, 1:], logits).softmax(-1), 1, generator=g)], 1)
    text = tok.decode(ids[0, 1:].tolist())
    r = runner.invoke(app, ["detect", text, "--model", str(tmp_path / "m"), "--key", "k3y", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["watermark"]["z_score"] > 4
    r = runner.invoke(app, ["detect", text, "--model", str(tmp_path / "m")], env={"LMFORGE_WATERMARK_KEY": ""})
    assert r.exit_code == 1 and "secret key" in flat(r.output)


def test_audit_log_export_and_verify(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(3):
        log.log_generation(model="m", prompt=f"p{i}", completion="c", key_id="k")
    r = runner.invoke(app, ["audit", "log", "--path", str(path), "--since", "1h"])
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 3
    assert runner.invoke(app, ["audit", "log", "--path", str(path), "--verify"]).exit_code == 0
    path.write_text(path.read_text().replace('"p1"', '"p9"'))
    r = runner.invoke(app, ["audit", "log", "--path", str(path), "--verify"])
    assert r.exit_code == 1 and "line 2" in flat(r.output)
    r = runner.invoke(app, ["audit", "log", "--path", str(path), "--since", "last tuesday"])
    assert r.exit_code == 1 and "ISO date" in flat(r.output)


def test_audit_bias_on_a_tiny_model(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("he said she was a doctor and they were nurses\n" * 30)
    tok = train_tokenizer("bert", [str(corpus)], vocab_size=80, min_frequency=1)
    torch.manual_seed(0)
    model = model_class("bert")(make_config("bert", **{**TINY, "vocab": tok.vocab_size}), "lm")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    data = tmp_path / "pairs.csv"
    data.write_text(",sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer,anon_annotators\n"
                    "0,she was a nurse,he was a nurse,stereo,gender,[],a,[]\n"
                    "1,he was a doctor,she was a doctor,stereo,gender,[],a,[]\n")
    r = runner.invoke(app, ["audit", "bias", "--model", str(tmp_path / "m"), "--data", str(data), "--bootstrap", "200",
                            "--out", str(tmp_path / "bias.json"), "--card", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "bias.json").read_text())
    assert res["overall"]["n"] == 2 and res["metric"] == "pseudo-log-likelihood"
    assert "CrowS-Pairs stereotype score" in (tmp_path / "m" / "README.md").read_text()
    r = runner.invoke(app, ["audit", "bias", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "none.csv")])
    assert r.exit_code == 1 and "not found" in flat(r.output)
