"""The copy check finds a verbatim passage inserted into new text, and nothing in text that is not copied."""
import random

from lmforge.safety.copying import CopyIndex

WORDS = "the a of to and in is was he she it they river stone light house garden door window road tree".split()


def corpus(seed=0, docs=20, length=300):
    r = random.Random(seed)
    return [(f"doc{i}", " ".join(r.choice(WORDS) + r.choice(["", "", ",", "."]) for _ in range(length)))
            for i in range(docs)]


def test_inserted_verbatim_passage_is_found_exactly(tmp_path):
    docs = corpus()
    index = CopyIndex.build(docs, n=6)
    source_words = docs[7][1].split()
    passage = " ".join(source_words[100:140])  # 40 words copied from doc7
    text = "Zebra quokka narwhal axolotl. " + passage.upper() + " Platypus wombat echidna."
    report = index.check(text, threshold=32)
    assert report.flagged and report.longest.words == 40
    assert report.longest.doc_name == "doc7"
    assert report.longest.text.lower().replace(",", "").replace(".", "") == passage.lower().replace(",", "").replace(".", "")
    s, e = report.longest.doc_span
    assert docs[7][1][s:e].lower() == report.longest.text.lower()
    # round trip through disk
    index.save(tmp_path / "idx")
    again = CopyIndex.load(tmp_path / "idx").check(text, threshold=32)
    assert again.longest.words == 40


def test_short_overlaps_are_not_flagged():
    docs = corpus()
    index = CopyIndex.build(docs, n=6)
    short = " ".join(docs[3][1].split()[50:60])  # 10 words
    report = index.check("Unrelated words here. " + short, threshold=32)
    assert not report.flagged and report.longest.words == 10
    nothing = index.check("Zebra quokka narwhal axolotl platypus wombat echidna lemur", threshold=32)
    assert nothing.longest is None and nothing.copied_fraction == 0.0


def test_windows_do_not_cross_documents():
    index = CopyIndex.build([("a", "one two three four"), ("b", "five six seven eight")], n=3)
    assert index.check("three four five six").longest is None
    assert index.check("two three four five").longest.words == 3
