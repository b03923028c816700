"""The shipped moderation model: loads without pickle, small, scores hand-written held-out texts as stated,
answers in OpenAI's shape, and policies act as configured."""
from pathlib import Path

import numpy as np
import pytest

from lmforge.safety.moderation import (CATEGORIES, ModerationError, ModerationModel, Policy, check, default_model,
                                       moderation_response)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

# Written for this test, never seen in training. Profanity only; no slurs.
ABUSIVE = ["shut up you stupid bitch", "you are a fucking idiot and a loser", "what a dumb ass move, you moron",
           "go kill yourself you worthless piece of shit", "this bitch is so fucking annoying"]
BENIGN = ["The meeting is moved to Thursday at 3pm", "Thanks for the recipe, the cake turned out great",
          "what a beautiful sunset tonight", "can you send me the report by friday",
          "my teacher gave us so much homework ugh", "How do I reset my router password?",
          "Please book a table for two at eight"]


def test_artifact_is_small_and_has_its_scores():
    root = Path(__file__).resolve().parents[2] / "src" / "lmforge" / "safety" / "data"
    assert sum(p.stat().st_size for p in root.glob("moderation.*")) < 5e6
    m = default_model()
    assert set(m.thresholds) == set(CATEGORIES)
    # the held-out figures recorded by scripts/train_moderation.py (docs/results.md quotes them)
    assert m.metrics["test"]["harassment"]["f1"] >= 0.95
    assert m.metrics["test"]["hate"]["f1"] >= 0.35


def test_scores_hand_written_examples_above_and_below_threshold():
    m = default_model()
    abusive = m.moderate(ABUSIVE)
    benign = m.moderate(BENIGN)
    assert all(r.categories["harassment"] for r in abusive), [r.category_scores for r in abusive]
    assert not any(r.flagged for r in benign), [r.category_scores for r in benign]
    # abuse scores well above ordinary text on average
    assert np.mean([r.category_scores["harassment"] for r in abusive]) > 0.9
    assert np.mean([r.category_scores["harassment"] for r in benign]) < 0.2


def test_openai_response_shape():
    body = moderation_response(["hello there", "you fucking idiot"])
    assert body["id"].startswith("modr-") and body["model"] == "lmforge-moderation-1"
    assert len(body["results"]) == 2
    for r in body["results"]:
        assert set(r) == {"flagged", "categories", "category_scores"}
        assert set(r["categories"]) == set(r["category_scores"]) == set(CATEGORIES)
        assert all(isinstance(v, bool) for v in r["categories"].values())
        assert all(0.0 <= v <= 1.0 for v in r["category_scores"].values())
    assert body["results"][1]["flagged"] and not body["results"][0]["flagged"]
    assert len(moderation_response("one string")["results"]) == 1


@pytest.mark.parametrize("bad", [None, "", [], [1, 2], {"text": "x"}])
def test_bad_input_is_refused(bad):
    with pytest.raises(ModerationError, match="string"):
        moderation_response(bad if bad != "" else [])


def test_policies_block_flag_allow():
    abusive = "you are a fucking idiot and a loser"
    block = Policy.from_dict({"actions": {"harassment": "block"}, "refusal_message": "Not here, friend."})
    d = check(abusive, block)
    assert d.blocked and d.message == "Not here, friend."
    assert check(abusive, Policy.from_dict({"actions": "flag"})).action == "flag"
    assert check(abusive, Policy.from_dict({"actions": "allow"})).action == "allow"
    assert check("have a nice day", block).action == "allow"
    # a threshold override of 1.0 means the category never fires
    assert check(abusive, Policy.from_dict({"actions": "block", "thresholds": {"harassment": 1.0, "hate": 1.0}})).action == "allow"


def test_policy_validation_is_clear(tmp_path):
    with pytest.raises(ModerationError, match="block, flag or allow"):
        Policy.from_dict({"actions": {"hate": "delete"}})
    with pytest.raises(ModerationError, match="unknown category"):
        Policy.from_dict({"actions": {"violence": "block"}})
    with pytest.raises(ModerationError, match="unknown policy keys"):
        Policy.from_dict({"action": "block"})
    f = tmp_path / "p.yaml"
    f.write_text("actions: {hate: block, harassment: flag}\nrefusal_message: No.\n")
    assert Policy.from_file(f).actions == {"hate": "block", "harassment": "flag"}


def test_save_load_round_trip(tmp_path):
    m = default_model()
    m.save(tmp_path)
    again = ModerationModel.load(tmp_path)
    texts = ABUSIVE + BENIGN
    assert np.allclose(m.scores(texts), again.scores(texts), atol=1e-3)
    with pytest.raises(ModerationError, match="train_moderation"):
        ModerationModel.load(tmp_path / "missing")


@pytest.mark.skipif(not (DATA / "hate_speech_offensive" / "labeled_data.csv").is_file(), reason="needs shared/data")
def test_recorded_held_out_scores_reproduce():
    """Re-derive the held-out split and check the shipped model's F1 there equals what it records."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    from lmforge.safety.moderation import read_training_data

    texts, labels, source = read_training_data(DATA)
    strata = labels[:, 0] * 2 + labels[:, 1] + 4 * source
    _, rest = train_test_split(np.arange(len(texts)), test_size=0.2, random_state=0, stratify=strata)
    _, te = train_test_split(rest, test_size=0.5, random_state=0, stratify=strata[rest])
    m = default_model()
    s = m.scores([texts[i] for i in te])
    for j, c in enumerate(CATEGORIES):
        f1 = f1_score(labels[te, j], s[:, j] >= m.thresholds[c])
        assert f1 == pytest.approx(m.metrics["test"][c]["f1"], abs=2e-3)
