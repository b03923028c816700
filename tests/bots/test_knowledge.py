"""The knowledge base's reader: which span it picks among the retrieved passages, what it quotes, and when it
falls back to the best sentence. A fake reader stands in for the QA model (its contract: Predictor.answer)."""
from lmforge.bots.embed import HashingEmbedder
from lmforge.bots.knowledge import KnowledgeIndex, format_answer

EMB = HashingEmbedder()
DOCS = [("returns.md", ("# Returns\nReturns are free of charge. You can return items within 30 days of delivery. "
                        "Refunds reach your card in five working days.")),
        ("shipping.md", "# Shipping\nParcels about returns ship from Berlin.")]


class FakeReader:
    """Answers `span` (score from `scores`, by a word the context must contain) where it occurs, else no span."""

    def __init__(self, span: str, scores: dict[str, float]):
        self.span, self.scores, self.contexts = span, scores, []

    def answer(self, questions, contexts):
        self.contexts += contexts
        out = []
        for c in contexts:
            score = max((s for word, s in self.scores.items() if word in c), default=float("-inf"))
            found = c.find(self.span) if self.span else -1
            out.append({"text": self.span, "score": score, "start": found} if found >= 0
                       else {"text": "", "score": float("-inf"), "start": 0})
        return out


def _ask(index, question, reader):
    return index.answer(question, EMB.encode([question])[0], reader, min_similarity=0.05)


def test_reader_span_is_quoted_with_its_sentence_and_document():
    index = KnowledgeIndex.build(DOCS, EMB)
    reader = FakeReader("30 days", {"Berlin": 1.0, "30 days": 7.0})
    hit = _ask(index, "returns free of charge?", reader)
    # the most similar sentence is "Returns are free of charge."; the span lies in its neighbour, which the
    # reader saw because it reads each sentence with its neighbours
    assert hit.span == "30 days" and hit.document == "returns.md"
    assert hit.quote == "You can return items within 30 days of delivery."
    assert format_answer(hit) == '30 days (from "returns.md": "You can return items within 30 days of delivery.")'
    assert any("Returns are free of charge. You can return items" in c for c in reader.contexts)


def test_reader_picks_the_best_scoring_passage_not_the_most_similar():
    index = KnowledgeIndex.build(DOCS, EMB)
    reader = FakeReader("Berlin", {"Berlin": 9.0, "Refunds": 2.0})
    hit = _ask(index, "where are returns from", reader)
    assert index.search(EMB.encode(["where are returns from"])[0], 0.05).document == "returns.md"
    assert (hit.document, hit.span, hit.quote) == ("shipping.md", "Berlin", "Parcels about returns ship from Berlin.")


def test_no_span_or_no_reader_quotes_the_best_sentence():
    index = KnowledgeIndex.build(DOCS, EMB)
    q = "returns free of charge?"
    best = index.search(EMB.encode([q])[0], 0.05)
    assert _ask(index, q, FakeReader("", {})) == best
    assert _ask(index, q, None) == best and best.span is None
    assert format_answer(best).startswith('From "returns.md": "Returns are free of charge.')
    assert _ask(index, "zzz qqq", FakeReader("30 days", {"30": 1.0})) is None  # nothing similar: not read
