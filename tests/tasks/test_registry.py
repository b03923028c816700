"""The task registry is data checked by a schema; modes say which family meets which task, and how."""
import pytest

from lmforge.models import ModelError
from lmforge.tasks import choose_mode, get_task, registry


def test_every_task_is_valid_and_formats_for_t5_and_gpt2():
    tasks = registry()
    assert {"sst2", "ag_news", "sms_spam", "rte", "mrpc", "squad", "scitldr", "multi30k", "tinyshakespeare",
            "classification", "qa", "summarization", "translation", "generation"} <= set(tasks)
    sst2 = get_task("sst2")
    assert sst2.label_names() == ["negative", "positive"] and sst2.positive_label == "positive"
    assert sst2.text_input({"text": "a fine film"}) == "sst2 sentence: a fine film"
    assert get_task("rte").text_input({"text": "A", "text_pair": "B"}) == "rte sentence1: A sentence2: B"
    assert get_task("squad").text_input({"question": "Who?", "context": "Ann."}) == "question: Who? context: Ann."
    assert get_task("scitldr").prompt({"document": "Long text."}) == "summarize: Long text.\nTL;DR:"
    user = get_task("classification")
    assert user.is_user and user.text_input({"text": "a", "text_pair": "b"}) == "classify sentence1: a sentence2: b"


@pytest.mark.parametrize("entry, message", [
    ("mine: {kind: classification, input: 'x {text}', metrics: [bleu4]}", "task 'mine' is invalid: metrics"),
    ("mine: {kind: qa, input: 'q {text}', metrics: [squad]}", "input uses {text}, not a qa field"),
    ("mine: {kind: sorting, input: 'x', metrics: [accuracy]}", "task 'mine' is invalid: kind"),
    ("mine: {kind: classification, input: 'x', metrics: [accuracy], colour: red}", "colour"),
    ("mine: {kind: translation, metrics: [bleu]}", "needs an 'input' template"),
    (("mine: {kind: classification, input: 'x', metrics: [accuracy], "
      "data: {folder: f, format: csv, header: false, splits: {train: a.csv}}}"),
     "a file without a header needs 'columns'"),
])
def test_a_bad_entry_names_the_task_and_the_field(tmp_path, entry, message):
    path = tmp_path / "tasks.yaml"
    path.write_text(entry + "\n")
    with pytest.raises(ModelError, match=message.replace("{", r"\{").replace("}", r"\}")):
        registry.__wrapped__(path)


def test_unknown_task():
    with pytest.raises(ModelError, match="unknown task 'sst3'; choose one of sst2"):
        get_task("sst3")


@pytest.mark.parametrize("family, kind, mode", [
    ("bert", "classification", "classify"), ("roberta", "qa", "span"), ("xlnet", "qa", "span"),
    ("gpt2", "classification", "classify"), ("gpt2", "summarization", "prompt"), ("gpt2", "generation", "causal"),
    ("t5", "classification", "text2text"), ("t5", "qa", "text2text"), ("t5", "translation", "text2text"),
])
def test_modes(family, kind, mode):
    assert choose_mode(family, kind) == mode


def test_modes_that_do_not_make_sense():
    with pytest.raises(ModelError, match="^bert is an encoder-only model and cannot translate; use t5 or gpt2$"):
        choose_mode("bert", "translation")
    with pytest.raises(ModelError, match="t5 on a classification task can use mode text2text or classify"):
        choose_mode("t5", "classification", "span")
    assert choose_mode("t5", "classification", "classify") == "classify"
