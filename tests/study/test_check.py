"""The reproducibility check on synthetic results: which cells agree within the stated spread."""
import copy
import math

import pytest

from lmforge.study.check import compare_results, seed_spread, summary


def family(params=1000, loss=5.0, bpc=2.5, ppl=200.0):
    return {"architecture": {"parameters": params, "attention": "causal"},
            "pretrain": {"steps": 10, "tokens_seen": 2560, "final_val_loss": loss},
            "likelihood": {"bits_per_char": bpc},
            "generation": {"bigram_perplexity": ppl, "distinct_1": 0.5, "distinct_2": 0.9, "repetition_rate": 0.1},
            "cost": {"train_flops_per_token": 3.0e6, "forward_ms": 3.0}}


def results():
    return {
        "families": {"gpt2": family(), "bert": {**family(), "likelihood": None}},
        "tasks": {
            "sst2": {"primary": "accuracy", "kind": "classification", "families": {
                "gpt2": {"n": 3, "eval_examples": 100, "mean": {"accuracy": 0.70, "f1": 0.72},
                         "std": {"accuracy": 0.03, "f1": 0.0}},
                "bert": {"n": 3, "eval_examples": 100, "mean": {"accuracy": 0.75, "f1": 0.74},
                         "std": {"accuracy": 0.0, "f1": 0.0}}}},
            "translation": {"primary": "bleu", "kind": "translation", "families": {
                "gpt2": {"n": 3, "eval_examples": 50, "mean": {"bleu": 4.0}, "std": {"bleu": 0.0}},
                "bert": {"n": 0, "refused": "bert cannot translate"}}},
        },
        "claims": [{"claim": "GPT-2 generates text best", "verdict": "mixed"}],
    }


def cell(cells, table, row, column):
    (c,) = [c for c in cells if (c.table, c.row, c.column) == (table, row, column)]
    return c


def test_identical_results_agree_everywhere():
    cells = compare_results(results(), results())
    assert cells and all(c.agrees for c in cells)
    assert summary(cells) == f"{len(cells)} of {len(cells)} cells agree within the stated spread"
    # bert defines no likelihood, so only gpt2 has that cell; the refused pair is compared by its state.
    assert len([c for c in cells if c.column == "held-out bits per character"]) == 1
    assert cell(cells, "Benchmark performance", "translation bleu", "bert").reference == "refused"


def test_spread_is_twice_the_standard_error_with_a_one_example_floor():
    a = {"n": 3, "std": {"m": 0.03}}
    b = {"n": 3, "std": {"m": 0.04}}
    assert seed_spread(a, b, "m", 1.0, 100) == pytest.approx(2 * math.sqrt(0.03**2 / 3 + 0.04**2 / 3))
    zero = {"n": 3, "std": {"m": 0.0}}
    assert seed_spread(zero, zero, "m", 1.0, 200) == pytest.approx(1 / 200)
    assert seed_spread(zero, zero, "m", 100.0, 50) == pytest.approx(2.0)  # percentages: one example = 2 points


def test_cells_outside_the_spread_are_reported():
    ref, new = results(), copy.deepcopy(results())
    sst = new["tasks"]["sst2"]["families"]
    # gpt2 accuracy: spread 2 * sqrt(2 * 0.03^2 / 3) = 0.049 -> +0.04 agrees, +0.06 does not.
    sst["gpt2"]["mean"]["accuracy"] = 0.74
    sst["gpt2"]["std"]["accuracy"] = 0.03
    # bert accuracy has no seed spread: one example of 100 (0.01) is allowed, two are not.
    sst["bert"]["mean"]["accuracy"] = 0.77
    new["tasks"]["translation"]["families"]["gpt2"]["mean"]["bleu"] = 5.9  # 100 / 50 examples = 2 points
    new["families"]["gpt2"]["architecture"]["parameters"] = 1001
    new["families"]["gpt2"]["pretrain"]["final_val_loss"] = 5.09  # within 2% of 5.0
    new["families"]["bert"]["generation"]["bigram_perplexity"] = 210.0  # 5% off
    new["claims"][0]["verdict"] = "supported"
    new["families"]["bert"]["cost"]["train_flops_per_token"] = 3.1e6  # a count: must be equal
    new["families"]["gpt2"]["cost"]["forward_ms"] = 30.0  # a timing: not compared
    cells = compare_results(ref, new)
    assert cell(cells, "Benchmark performance", "sst2 accuracy", "gpt2").agrees
    assert not cell(cells, "Benchmark performance", "sst2 accuracy", "bert").agrees
    assert cell(cells, "Benchmark performance", "translation bleu", "gpt2").agrees
    assert not cell(cells, "Architecture", "gpt2", "parameters").agrees
    assert cell(cells, "Pretraining", "gpt2", "final validation loss").agrees
    assert not cell(cells, "Generation ability", "bert", "bigram_perplexity").agrees
    assert not cell(cells, "Claims versus measurement", "GPT-2 generates text best", "verdict").agrees
    assert not cell(cells, "Cost", "bert", "training FLOPs per token").agrees
    assert cell(cells, "Cost", "gpt2", "training FLOPs per token").agrees
    assert not [c for c in cells if "forward" in c.column]
    sst["gpt2"]["mean"]["accuracy"] = 0.76
    assert not cell(compare_results(ref, new), "Benchmark performance", "sst2 accuracy", "gpt2").agrees
    assert summary(cells).endswith("; 5 differ")
    assert [c.line().split()[0] for c in cells if not c.agrees] == ["DIFFER"] * 5
