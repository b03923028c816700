"""Model cards: every Mitchell et al. section is present, recorded results appear, missing ones say so."""
from lmforge.safety.model_card import NOT_RECORDED, CardData, render, update_model_card, write_model_card

SECTIONS = ["## Model details", "## Intended use", "## Factors", "## Metrics", "## Evaluation data",
            "## Training data", "## Training procedure", "## Quantitative analyses: bias audit",
            "## Ethical considerations", "## Caveats and recommendations"]

CROWS = {"benchmark": "CrowS-Pairs", "metric": "pseudo-log-likelihood",
         "overall": {"score": 57.25, "ci95": [54.6, 59.8], "n": 1508, "ties": 0},
         "by_category": {"gender": {"score": 55.0, "ci95": [49.2, 61.1], "n": 262, "ties": 0}}}


def test_card_has_all_sections_and_results(tmp_path):
    card = CardData(name="tiny-bert", family="bert", task="lm", parameters=123456, datasets=["tinyshakespeare"],
                    objective="mlm", training={"steps": 1000, "learning_rate": 3e-4},
                    evaluation={"perplexity": 12.5}, bias={"crows_pairs": CROWS},
                    intended_use="Demonstrations of the lmforge pipeline.")
    text = render(card)
    assert text.startswith("---\nlicense: apache-2.0")
    for s in SECTIONS:
        assert s in text, s
    assert "**57.2**" in text or "**57.3**" in text
    assert "| gender | 55.0 | 49.2-61.1 | 262 |" in text
    assert "| steps | 1000 |" in text and "| perplexity | 12.5 |" in text and "123,456" in text


def test_missing_information_is_marked_not_recorded():
    text = render(CardData(name="bare"))
    assert text.count(NOT_RECORDED) >= 5
    assert "lmforge audit bias" in text


def test_update_merges_the_bias_audit(tmp_path):
    write_model_card(tmp_path, CardData(name="m", evaluation={"accuracy": 0.9}))
    update_model_card(tmp_path, bias={"crows_pairs": CROWS})
    text = (tmp_path / "README.md").read_text()
    assert "CrowS-Pairs stereotype score" in text and "| accuracy | 0.9 |" in text
