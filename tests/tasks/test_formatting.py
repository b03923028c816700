"""QA windows: long questions, small --max-length and large strides give windows or a clear error, never a crash."""
import pytest

import lmforge
from lmforge.models import ModelError
from lmforge.tasks import formatting as fm

CONTEXT = "The café was opened by Ann Lee in 1901, and it closed in 1955 after a long winter of rain."


@pytest.fixture(scope="module")
def tok():
    return lmforge.load_tokenizer("all-MiniLM-L6-v2")


def qa(question, answer="Ann Lee"):
    return {"question": question, "context": CONTEXT, "answers": [{"text": answer, "start": CONTEXT.index(answer)}],
            "where": "dev.jsonl, line 7"}


def test_stride_larger_than_the_room_left_by_a_long_question_is_cut(tok):
    question = "who was it that opened the little café on the corner of the street in that town?"
    room = fm.context_room(tok, qa(question), 32)
    assert room < 16  # the default stride (64) and even 16 would not fit
    feats = fm.span_features(tok, [qa(question)], max_length=32, stride=64, train=False)
    assert len(feats) > 2 and all(len(f.input_ids) <= 32 for f in feats)
    starts = [min(o for o, c in zip(f.offsets, f.is_context) if c)[0] for f in feats]
    assert starts == sorted(set(starts))  # every window moves on through the context
    # Training windows keep only those that hold the whole answer, with its token span.
    train = fm.span_features(tok, [qa(question)], max_length=32, stride=64, train=True)
    assert train and all(CONTEXT[f.offsets[f.start][0]:f.offsets[f.end][1]] == "Ann Lee" for f in train)


def test_question_that_fills_the_window_names_the_example(tok):
    with pytest.raises(ModelError, match=r"dev.jsonl, line 7: the question takes \d+ tokens, which leaves no room "
                                         r"for the context in --max-length 16; raise --max-length"):
        fm.span_features(tok, [qa("who opened the café on the corner of the street in the old town")], 16, 8, True)
