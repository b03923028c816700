"""The whole comparative study end to end on synthetic data: a seconds-sized budget, every table and figure."""
import json
import math
import random

import pytest
import torch

from lmforge.study import Budget, StudyArgs, run_study
from lmforge.study.claims import load_claims
from lmforge.study.measure import BigramLM, distinct_n, pattern, repetition_rate

WORDS = ["red", "blue", "green", "small", "big", "old", "new", "cat", "dog", "bird", "tree", "house", "river", "hill", "sees", "likes", "finds", "helps"]
TABLES = ["Architecture", "Pretraining", "Task flexibility", "Benchmark performance", "Generation ability",
          "Sample outputs", "Cost", "Claims versus measurement"]


def sentence(rng, n=6):
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def study_inputs(tmp_path_factory):
    """A corpus and tiny local copies of the six benchmarks, in the shared data's formats."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("study-data")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(sentence(rng) + " ." for _ in range(3)) for _ in range(60)) + "\n")
    data = root / "data"
    for name in ("sst2", "rte", "mrpc", "squad_xquad_en", "scitldr", "multi30k"):
        (data / name).mkdir(parents=True)

    def label_rows(n):
        return [(sentence(rng), int("cat" in s) if (s := None) else rng.randint(0, 1)) for _ in range(n)]

    for split, n in (("train", 24), ("dev", 12)):
        (data / "sst2" / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{s} \t{y}\n" for s, y in label_rows(n)))
        (data / "rte" / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "".join(
            f"{i}\t{sentence(rng)}\t{sentence(rng)}\t{rng.choice(['entailment', 'not_entailment'])}\n"
            for i in range(n)))
        (data / "mrpc" / f"{split}.tsv").write_text("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
            f"{rng.randint(0, 1)}\t{i}\t{i + 1000}\t{sentence(rng)}\t{sentence(rng)}\n" for i in range(n)))
    paragraphs = []
    for p in range(12):
        context = sentence(rng, 12)
        answer = context.split()[3]
        paragraphs.append({"context": context, "qas": [{"id": f"q{p}", "question": f"what is {sentence(rng, 3)} ?",
                                                        "answers": [{"text": answer,
                                                                     "answer_start": context.index(answer)}]}]})
    (data / "squad_xquad_en" / "xquad.en.json").write_text(
        json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    for split, n in (("train", 16), ("dev", 8), ("test", 8)):
        (data / "scitldr" / f"{split}.jsonl").write_text("".join(json.dumps(
            {"source": [sentence(rng), sentence(rng)], "target": [sentence(rng, 4)], "paper_id": str(i),
             "title": "t"}) + "\n" for i in range(n)))
    for split, n in (("train", 16), ("val", 8), ("test_2016_flickr", 8)):
        src = [sentence(rng) for _ in range(n)]
        (data / "multi30k" / f"{split}.en").write_text("".join(s + "\n" for s in src))
        (data / "multi30k" / f"{split}.de").write_text("".join(" ".join(reversed(s.split())) + "\n" for s in src))
    return corpus, data


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_args(corpus, data, out, **kw):
    opts = {"budget": "3k", "corpus": [corpus], "out": out, "tasks": "sst2,rte,mrpc,squad,summarization,translation",
            "seeds": 3, "data_dir": data, "layers": 2, "hidden": 32, "heads": 2, "ffn": 64, "vocab_size": 300,
            "block_size": 32, "micro_batch": 4, "lr": 3e-3, "eval_points": 2, "finetune_examples": 16,
            "eval_examples": 6, "finetune_max_steps": 2, "finetune_batch_size": 8, "max_length": 48,
            "target_max_length": 6, "samples": 2, "sample_tokens": 6, "heldout_chars": 400, "latency_reps": 1,
            "progress": False}
    return StudyArgs(**{**opts, **kw})


def finite_numbers(x):
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return True
    if isinstance(x, (int, float)):
        return math.isfinite(x)
    if isinstance(x, dict):
        return all(finite_numbers(v) for v in x.values())
    return all(finite_numbers(v) for v in x)


def test_whole_study_end_to_end_and_resume(study_inputs, tmp_path):
    corpus, data = study_inputs
    out = tmp_path / "report"
    results = run_study(tiny_args(corpus, data, out))

    # Every table and figure, with finite numbers throughout.
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for title in TABLES:
        assert f"## {title}" in md and f"<h2>{title}</h2>" in html
    for name in ("loss_curves", "benchmarks", "generation"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"figures/{name}.png" in md and f"figures/{name}.png" in html
    saved = json.loads((out / "results.json").read_text())
    assert finite_numbers({k: v for k, v in saved.items() if k != "meta"})
    for cell in ("nan", "inf"):
        assert f"| {cell}" not in md.lower()

    fams = results["families"]
    assert list(fams) == ["bert", "roberta", "gpt2", "xlnet", "t5"]
    # Matched parameters (within 5% of GPT-2's) and matched compute (the same steps and planned tokens).
    ref = fams["gpt2"]["architecture"]["parameters"]
    assert all(abs(v["architecture"]["parameters"] - ref) / ref < 0.05 for v in fams.values())
    assert len({v["pretrain"]["steps"] for v in fams.values()}) == 1
    # The probes find each family's attention pattern.
    assert fams["gpt2"]["architecture"]["attention"] == "causal"
    assert fams["bert"]["architecture"]["attention"] == "bidirectional"
    assert fams["t5"]["architecture"]["layout"] == "encoder-decoder"
    assert "query stream causal" in fams["xlnet"]["architecture"]["attention"]
    assert fams["gpt2"]["visibility"]["right_visible"] == 0 and fams["xlnet"]["visibility"]["right_visible"] > 0
    assert fams["bert"]["likelihood"] is None and fams["gpt2"]["likelihood"]["bits_per_char"] > 0
    assert all(v["generation"]["bigram_perplexity"] > 1 for v in fams.values())
    assert "fluency: samples' bigram perplexity" in md
    # Every loss curve has points; every planned (family, task) has all seeds; refusals are the platform's.
    assert all(len(v["pretrain"]["val_curve"]) >= 2 for v in fams.values())
    for task, t in results["tasks"].items():
        for f, e in t["families"].items():
            assert e["n"] == (0 if e["refused"] else 3), (task, f)
    assert results["tasks"]["translation"]["families"]["bert"]["refused"]
    assert results["tasks"]["squad"]["families"]["xlnet"]["n"] == 3
    assert len(results["claims"]) == len(load_claims())
    assert all(c["verdict"] in ("supported", "not supported", "mixed") for c in results["claims"])
    assert "lmforge compare --budget 3k" in md and "seeds" in md and "hardware" in md

    # Resume: everything is skipped (no stage re-runs), and the report is rewritten from the saved results.
    before = {p: p.stat().st_mtime_ns for p in (out / "work").rglob("*.json") if p.name != "meta.json"}
    again = run_study(tiny_args(corpus, data, out))
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert again["tasks"]["sst2"]["families"]["bert"]["mean"] == results["tasks"]["sst2"]["families"]["bert"]["mean"]
    meta = json.loads((out / "work" / "meta.json").read_text())
    # 5 pretraining runs, 5 measurements, 3 seeds of (3 classification x 5 + squad x 5 + 2 x (gpt2, t5)); the
    # session that only rewrote the report is not part of the run's record.
    assert [s["stages_run"] for s in meta["sessions"]] == [5 + 5 + 3 * (3 * 5 + 5 + 2 + 2)]
    # A lost result is the only stage that runs again.
    (out / "work" / "finetune" / "rte" / "xlnet" / "seed1.json").unlink()
    run_study(tiny_args(corpus, data, out))
    meta = json.loads((out / "work" / "meta.json").read_text())
    assert [s["stages_run"] for s in meta["sessions"]] == [5 + 5 + 3 * (3 * 5 + 5 + 2 + 2), 1]

    # The reproducibility check: the resumed report agrees with the first; a moved cell is caught.
    from typer import Exit

    from lmforge.study.cli import check

    resumed = json.loads((out / "results.json").read_text())
    check(saved, resumed)
    saved["tasks"]["sst2"]["families"]["gpt2"]["mean"]["accuracy"] += 0.5
    with pytest.raises(Exit):
        check(saved, resumed)


def test_budget_parsing_and_changed_options_are_refused(study_inputs, tmp_path):
    assert Budget.parse("600s").seconds == 600 and Budget.parse("10m").seconds == 600
    assert Budget.parse("2M").tokens == 2_000_000 and Budget.parse("200k").tokens == 200_000
    from lmforge.models import ModelError

    with pytest.raises(ModelError):
        Budget.parse("lots")
    corpus, data = study_inputs
    work = tmp_path / "r" / "work"
    work.mkdir(parents=True)
    (work / "plan.json").write_text(json.dumps({"args": {**tiny_args(corpus, data, tmp_path / "r").to_dict(),
                                                         "hidden": 64}, "shapes": {}}))
    with pytest.raises(ModelError, match="hidden"):
        run_study(tiny_args(corpus, data, tmp_path / "r"))


def test_bigram_fluency_judge_by_hand():
    # "a b a b": pairs (a,b) x2, (b,a) x1; c(a) = 2, c(b) = 1; one follower each; continuation counts 1 each,
    # add-one over 2 types + the unknown slot: cont(a) = cont(b) = 2/5, unknown 1/5. With d = 0.75:
    # p(b | a) = (2 - 0.75)/2 + 0.75 * 1/2 * 2/5 = 0.775.
    lm = BigramLM("a b a b")
    assert lm.prob("a", "b") == pytest.approx(0.775)
    for context in ("a", "b", "never seen"):
        assert sum(lm.prob(context, w) for w in ("a", "b", "zzz")) == pytest.approx(1.0)
    assert lm.perplexity(["b"], ["x a"]) == pytest.approx(1 / 0.775)  # conditioned on the prompt's last token
    assert lm.perplexity(["b"]) == pytest.approx(1 / 0.4)
    # Corpus word order is more fluent than the same words shuffled, and punctuation counts as tokens.
    corpus = BigramLM("the cat sat on the mat . the dog sat on the rug . " * 5)
    assert corpus.perplexity(["the cat sat on the rug ."]) < corpus.perplexity(["rug the on sat cat the ."])


def test_text_measures_by_hand():
    assert distinct_n(["a b a b"], 1) == 0.5 and distinct_n(["a b a b"], 2) == 2 / 3
    assert repetition_rate(["a b c d a b c d"], 4) == 1 - 4 / 5
    import numpy as np

    assert pattern(np.tril(np.ones((3, 3), dtype=bool))) == "causal" and pattern(np.ones((3, 3), bool)) == "bidirectional"


def test_cli_registers_compare_and_reports_bad_input(tmp_path):
    from typer.testing import CliRunner

    from lmforge.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["compare", "--help"]).exit_code == 0
    bad = runner.invoke(app, ["compare", "--budget", "lots", "--corpus", str(tmp_path), "--out", str(tmp_path / "o")])
    assert bad.exit_code == 1 and "neither seconds" in bad.output
    missing = runner.invoke(app, ["compare", "--budget", "3k", "--corpus", str(tmp_path), "--out", str(tmp_path / "o"),
                                  "--check-against", str(tmp_path / "none.json")])
    assert missing.exit_code == 1 and "none.json: no such file" in " ".join(missing.output.split())

    from lmforge.study.cli import recorded

    argv = ["compare", "--budget", "3k", "--check-against", "ref.json", "--out", "o", "--check-against=r.json"]
    assert recorded(argv) == ["compare", "--budget", "3k", "--out", "o"]
