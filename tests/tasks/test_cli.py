"""`lmforge finetune` and `lmforge eval` end to end on a tiny CSV."""
import importlib
import json

from .synthetic_data import marker_rows, write_csv
from typer.testing import CliRunner

from lmforge.cli import app

runner = CliRunner()


def text(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_finetune_then_eval_on_a_csv(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = marker_rows(360, seed=2)
    write_csv(tmp_path / "reviews.csv", ["review", "stars"], rows[:320])
    write_csv(tmp_path / "held.csv", ["review", "stars"], rows[320:])
    out = tmp_path / "model"
    result = runner.invoke(app, [
        "finetune", "--model", str(tiny_model("bert")), "--task", "classification", "--train", "reviews.csv",
        "--validation", "held.csv", "--text-column", "review", "--label-column", "stars", "--out", str(out),
        "--max-steps", "100", "--lr", "2e-3", "--max-length", "32"])
    assert result.exit_code == 0, result.output
    assert "fine-tuned bert (classify) on 320 examples: 100 steps" in text(result)
    assert "accuracy" in result.output and json.loads((out / "eval_results.json").read_text())["metrics"]["accuracy"] >= 0.95
    assert json.loads((out / "lmforge_task.json").read_text())["task"]["labels"] == {"no": "no", "yes": "yes"}

    result = runner.invoke(app, ["eval", "--model", str(out), "--data", "held.csv", "--text-column", "review",
                                 "--label-column", "stars", "--predictions", "preds.jsonl"])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "classification (held.csv, 40 examples" in text(result)
    report = json.loads((tmp_path / "eval-classification-held.json").read_text())
    assert report["examples"] == 40 and report["metrics"]["accuracy"] >= 0.95 and report["model"] == str(out)
    preds = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert len(preds) == 40 and {"text", "prediction", "reference", "score", "where"} <= set(preds[0])
    assert preds[0]["where"].endswith("held.csv, line 2")


def test_cli_errors_are_one_clear_line(tiny_model, tmp_path):
    write_csv(tmp_path / "reviews.csv", ["review", "rating"], [("good", "5"), ("bad", "1")])
    result = runner.invoke(app, ["finetune", "--model", str(tiny_model("bert")), "--task", "classification",
                                 "--train", str(tmp_path / "reviews.csv"), "--text-column", "review",
                                 "--label-column", "stars", "--out", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "reviews.csv: no column 'stars' (the label column, --label-column); the file has: review, rating" in (
        text(result))
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["finetune", "--model", str(tiny_model("bert")), "--task", "translation",
                                 "--train", str(tmp_path / "reviews.csv"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1 and "cannot translate" in text(result)
    result = runner.invoke(app, ["eval", "--model", str(tiny_model("bert"))])
    assert result.exit_code == 1 and "pass --task" in text(result)


def test_eval_a_pretrained_lm_on_a_benchmark_copy(tiny_model, tmp_path):
    """No fine-tuning needed for perplexity: any GPT-2 LM on the (here synthetic) Tiny Shakespeare copy."""
    (tmp_path / "data" / "tinyshakespeare").mkdir(parents=True)
    (tmp_path / "data" / "tinyshakespeare" / "input.txt").write_text("alpha bravo charlie\n" * 200)
    out = tmp_path / "ppl.json"
    result = runner.invoke(app, ["eval", "--model", str(tiny_model("gpt2", "lm")), "--task", "tinyshakespeare",
                                 "--data-dir", str(tmp_path / "data"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["task"] == "tinyshakespeare" and report["split"] == "validation"
    assert report["metrics"]["perplexity"] > 1 and report["metrics"]["tokens"] > 100
    # A random classifier's LABEL_0/LABEL_1 are not SST-2's labels: say so rather than score nonsense.
    result = runner.invoke(app, ["eval", "--model", str(tiny_model("bert")), "--task", "sst2",
                                 "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1 and "has labels LABEL_0, LABEL_1 but sst2 needs negative, positive" in text(result)


def test_finetune_interrupted_by_ctrl_c_resumes_with_resume(tiny_model, tmp_path, monkeypatch):
    ft = importlib.import_module("lmforge.tasks.finetune")  # the package exports a function of that name

    write_csv(tmp_path / "reviews.csv", ["review", "stars"], marker_rows(64, seed=3))
    cmd = ["finetune", "--model", str(tiny_model("bert")), "--task", "classification", "--train",
           str(tmp_path / "reviews.csv"), "--text-column", "review", "--label-column", "stars", "--out",
           str(tmp_path / "model"), "--max-steps", "12", "--save-every", "5", "--max-length", "32", "--no-eval"]
    real_step, calls = ft.optimizer_step, []

    def step_then_ctrl_c(*args):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        real_step(*args)

    monkeypatch.setattr(ft, "optimizer_step", step_then_ctrl_c)
    result = runner.invoke(app, cmd)
    assert result.exit_code == 1
    assert "interrupted" in text(result) and "add --resume to continue" in text(result)
    monkeypatch.setattr(ft, "optimizer_step", real_step)
    result = runner.invoke(app, cmd)
    assert result.exit_code == 1 and "pass --resume to continue it" in text(result)
    result = runner.invoke(app, cmd + ["--resume"])
    assert result.exit_code == 0, result.output
    assert "12 steps" in text(result) and not (tmp_path / "model" / "checkpoint.pt").exists()
