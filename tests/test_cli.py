import pytest
from typer.testing import CliRunner

from lmforge.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["info"], ["embed"], ["convert"], ["demo"], ["generate"], ["tokenizer"], ["tokenizer", "train"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_bad_model_folder_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 1
    assert "has no config.json" in result.output
    assert "Traceback" not in result.output


def test_embed_ranks_paraphrase_above_unrelated():
    result = runner.invoke(app, ["embed", "A cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell today."])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.strip().startswith("│ 0:")]
    sims = [float(x) for x in rows[0].split("│")[2:5]]
    assert sims[0] == pytest.approx(1.0, abs=1e-3)
    assert sims[1] > sims[2] + 0.2


def test_convert_round_trip(tmp_path):
    from lmforge import load_model
    from lmforge.models.presets import TINY, make_config
    from lmforge.models.hf_io import model_class

    model_class("gpt2")(make_config("gpt2", **TINY), "lm").save_pretrained(tmp_path / "a")
    result = runner.invoke(app, ["convert", str(tmp_path / "a"), str(tmp_path / "b"), "--task", "classification"])
    assert result.exit_code == 0, result.output
    assert load_model(tmp_path / "b").task == "classification"


def test_generate_streams_reproducibly_from_the_demo_model(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path))  # it meters and audits there, like the API
    outputs = [runner.invoke(app, ["generate", "ROMEO:", "--model", "demo-gpt2", "--temperature", "0.8", "--max-tokens",
                                   "12", "--seed", seed]) for seed in "1123"]
    assert all(o.exit_code == 0 for o in outputs), outputs[0].output
    assert outputs[0].output == outputs[1].output
    assert all(o.output.rstrip().endswith(("(length)", "(stop)")) for o in outputs)
    assert any(len(o.output.strip().splitlines()) > 1 for o in outputs)  # some seed produced text
    import json

    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["moderation"]["source"] == "cli" and r["prompt"] == "ROMEO:" for r in records)


def test_generate_obeys_the_local_keys_policy(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path))
    assert runner.invoke(app, ["generate", "hi", "--model", "demo-gpt2", "--max-tokens", "2"]).exit_code == 0  # creates the local key
    r = runner.invoke(app, ["keys", "policy", "local-cli", "--input", "block", "--refusal", "Not from the CLI."])
    assert r.exit_code == 0, r.output
    result = runner.invoke(app, ["generate", "you stupid idiot, fuck off", "--model", "demo-gpt2", "--max-tokens", "2"])
    assert result.exit_code == 1 and "Not from the CLI." in result.output


def test_generate_refuses_an_encoder_only_model_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path))
    result = runner.invoke(app, ["generate", "hello", "--model", "demo-bert"])
    assert result.exit_code == 1 and "embedding model and cannot generate" in result.output and "Traceback" not in result.output
