"""Train's "fine-tune the language model" option: MiniLM tuned on a bot's examples, stored with the matcher
(float16) and used to embed the bot's questions."""
import numpy as np
import pytest
import torch

from lmforge.bots.embed import MiniLMEmbedder
from lmforge.bots.matcher import Matcher, dumps, loads
from lmforge.bots.runtime import Brain, understand

from .test_bots import PAIRS

pytestmark = pytest.mark.slow  # fine-tunes the 22M-parameter MiniLM for 30 steps: about half a minute


def test_tuned_encoder_is_trained_stored_and_used():
    torch.set_num_threads(1)
    shared = MiniLMEmbedder()
    m = Matcher.train(PAIRS, shared, tune_epochs=1)
    assert m.encoder is not None and m.kind == "head"
    tuned_model, _ = m.encoder.load()
    base_model, _ = shared.load()
    moved = [k for k, v in tuned_model.state_dict().items() if not torch.equal(v, base_model.state_dict()[k])]
    assert len(moved) > 50  # the encoder changed (and the shared one did not: it is a separate copy)
    questions = ["when do you open", "where's my order", "i'd like a refund please"]
    q = m.encoder.encode(questions)
    pred, conf, _ = m.scores(q, questions)
    assert [m.intents[i] for i in pred] == ["hours", "order", "returns"]
    again = Matcher.from_arrays(loads(dumps(m.arrays())))  # float16 weights: close, not identical
    np.testing.assert_allclose(again.scores(again.encoder.encode(questions), questions)[1], conf, atol=0.02)
    brain = Brain(again, None, {"hours": "Nine to five.", "order": "Track it online.", "returns": "30 days."}, 1)
    reply = understand(brain, shared, "where's my order", threshold=0.0)
    assert reply.intent == "order" and abs(reply.confidence - conf[1]) < 0.02  # matched in the tuned space
