"""Bots in the database: one transaction per turn, so a crash mid-request loses only that request."""
import asyncio

import pytest

from lmforge.bots import service
from lmforge.bots.embed import HashingEmbedder


def test_a_crash_mid_request_loses_only_that_request(db):
    emb, cache = HashingEmbedder(), service.BrainCache()
    bot = service.create_bot(db, 1, "customer_service")
    service.update_bot(db, bot, generative_model="some-model")
    bot = service.get_bot(db, 1, bot.id)
    service.start_training(db, bot)
    service.train(db, bot, emb)
    conv = service.conversation(db, bot, "rest")
    asyncio.run(service.chat(db, cache, emb, bot, conv, "where is my order"))

    async def crash(model, purpose, question):
        raise RuntimeError("the process died while generating")

    with pytest.raises(RuntimeError):
        asyncio.run(service.chat(db, cache, emb, bot, conv, "xylophone quartz", crash))
    again = service.conversation(db, bot, "rest", conv.secret)  # the conversation is still there
    assert [m.question for m in service.history(db, again)] == ["where is my order"]


def test_training_failure_is_reported_not_raised(db):
    bot = service.create_bot(db, 1, "customer_service")
    service.start_training(db, bot)
    assert not service.start_training(db, bot)  # one run at a time

    class Broken:
        dim = 8

        def encode(self, texts):
            raise OSError("model files missing")

    service.train(db, bot, Broken())
    state = service.training_state(db, bot)
    assert state.status == "failed" and "model files missing" in state.message
    assert service.start_training(db, bot)  # can be retried
