"""Bots without HTTP: templates, CSV, matcher, knowledge, runtime order, monitoring helpers."""
import asyncio

import numpy as np
import pytest

from lmforge.bots.embed import HashingEmbedder
from lmforge.bots.knowledge import KnowledgeIndex, split_document
from lmforge.bots.matcher import Matcher, dumps, loads
from lmforge.bots.monitoring import bar_chart
from lmforge.bots.runtime import BotConfig, Brain, respond
from lmforge.bots.schema import (
    BotSpec,
    IntentSpec,
    intents_from_csv,
    intents_to_csv,
    templates,
)

EMB = HashingEmbedder()
PAIRS = [("what are your opening hours", "hours"), ("when are you open", "hours"), ("what time do you close", "hours"),
         ("where is my order", "order"), ("track my package", "order"), ("my parcel has not arrived", "order"),
         ("how do i return an item", "returns"), ("i want a refund", "returns"), ("send something back", "returns")]


def test_templates_are_valid_data():
    t = templates()
    assert {"customer_service", "appointment_booking", "product_information", "blank"} <= set(t)
    assert len(t["customer_service"].intents) >= 5 and t["blank"].intents == []
    assert all(i.answer and len(i.examples) >= 2 for i in t["customer_service"].intents)


def test_schema_rejects_duplicates_and_unknown_fields():
    with pytest.raises(ValueError):
        BotSpec(name="x", intents=[IntentSpec(name="a"), IntentSpec(name="a")])
    with pytest.raises(ValueError):
        BotSpec.model_validate({"name": "x", "colour": "red"})


def test_csv_round_trip_and_errors():
    specs = [IntentSpec(name="hours", examples=["when are you open", "=cmd|' /C calc'!A0"], answer="9 to 5, daily")]
    text = intents_to_csv(specs)
    assert "'=cmd" in text  # a formula is neutralised for spreadsheets
    back = intents_from_csv(text)
    assert back[0].name == "hours" and back[0].answer == "9 to 5, daily" and back[0].examples[0] == "when are you open"
    merged = intents_from_csv("intent,example,answer\nhours,a,\nhours,b,open daily\nnew,c,x\n")
    assert [(s.name, s.examples, s.answer) for s in merged] == [("hours", ["a", "b"], "open daily"), ("new", ["c"], "x")]
    with pytest.raises(ValueError, match="header"):
        intents_from_csv("question,answer\na,b\n")
    with pytest.raises(ValueError, match="line 2"):
        intents_from_csv("intent,example,answer\nbad/name,a,b\n")


@pytest.mark.parametrize("head", [False, True])
def test_matcher_matches_paraphrases_and_serialises(head):
    m = Matcher.train(PAIRS, EMB, head=head)
    assert m.kind == ("head" if head else "nearest")
    q = EMB.encode(["when do you open", "where's my order", "i'd like a refund please"])
    pred, conf, _ = m.scores(q)
    assert [m.intents[i] for i in pred] == ["hours", "order", "returns"]
    assert np.all(conf > 0) and np.all(conf <= 1)
    again = Matcher.from_arrays(loads(dumps(m.arrays())))
    np.testing.assert_allclose(again.scores(q)[1], conf, rtol=1e-6)
    # an unrelated question is less confident than a paraphrase
    other = m.match(EMB.encode(["quantum chromodynamics lecture notes"])[0])
    assert other.confidence < conf.min()


def test_matcher_picks_head_by_number_of_examples():
    assert Matcher.train(PAIRS, EMB).kind == "head"  # 3 per intent
    assert Matcher.train(PAIRS[:1] + PAIRS[3:4], EMB).kind == "nearest"


def test_knowledge_splits_markdown_and_quotes_the_source():
    doc = "# Returns\nYou can return items within 30 days. Refunds take five working days.\n\n# Shipping\n" \
          "- Parcels ship from Berlin.\n- Delivery takes two to three days."
    passages = split_document("policy.md", doc)
    assert [(p.heading, p.text) for p in passages][:2] == [("Returns", "You can return items within 30 days."),
                                                           ("Returns", "Refunds take five working days.")]
    assert passages[2].text == "Parcels ship from Berlin."
    index = KnowledgeIndex.build([("policy.md", doc)], EMB)
    hit = index.search(EMB.encode(["how long does delivery take"])[0], min_similarity=0.2)
    assert hit.document == "policy.md" and "two to three days" in hit.quote
    assert index.search(EMB.encode(["zzz qqq"])[0], min_similarity=0.2) is None


def _brain(docs=()):
    m = Matcher.train(PAIRS, EMB, head=False)
    kb = KnowledgeIndex.build(list(docs), EMB) if docs else None
    return Brain(m, kb, {"hours": "We open at nine.", "order": "Track it online.", "returns": "30 days."}, 1)


def test_runtime_order_intent_then_document_then_generative_then_fallback():
    cfg = BotConfig("help customers", "Sorry!", 0.6)
    brain = _brain([("faq.md", "Our warehouse cat is called Mittens and sleeps on the parcels.")])
    run = lambda text, cfg=cfg, gen=None: asyncio.run(respond(cfg, brain, EMB, text, gen))
    r = run("what are your opening hours")
    assert (r.source, r.intent, r.text) == ("intent", "hours", "We open at nine.")
    r = run("what is the warehouse cat called")
    assert r.source == "document" and r.document == "faq.md" and "Mittens" in r.text
    r = run("xylophone quartz")
    assert (r.source, r.text) == ("fallback", "Sorry!")

    async def gen(model, purpose, question):
        assert model == "tiny" and purpose == "help customers"
        return " generated "

    r = run("xylophone quartz", BotConfig("help customers", "Sorry!", 0.6, "tiny"), gen)
    assert (r.source, r.text) == ("generative", "generated")
    assert asyncio.run(respond(cfg, None, EMB, "anything")).source == "fallback"  # untrained bot


def test_chart_escapes_labels():
    svg = bar_chart(["<b>x</b>", "2024-01-02"], [1, 3], "a <title>")
    assert "<b>" not in svg and "&lt;b&gt;" in svg and svg.startswith("<svg")


def test_words_model_joins_the_head_and_survives_serialisation():
    m = Matcher.train(PAIRS, EMB)
    assert m.kind == "head" and m.lexical is not None
    texts = ["when do you open", "where's my order", "i'd like a refund please"]
    q = EMB.encode(texts)
    pred, conf, _ = m.scores(q, texts)
    assert [m.intents[i] for i in pred] == ["hours", "order", "returns"]
    with_words = m.scores(q, texts)[1]
    without = m.scores(q)[1]
    assert not np.allclose(with_words, without)  # the word model takes part
    again = Matcher.from_arrays(loads(dumps(m.arrays())))
    np.testing.assert_allclose(again.scores(q, texts)[1], with_words, rtol=1e-5)
    assert again.match(q[0], texts[0]).intent == "hours"
