"""train_tokenizer: the vocabularies it learns, their sizes, and that every run learns the same one."""
import logging
import random
import subprocess
import sys

import pytest
from tokenizers import models, trainers

from lmforge.tokenizer import DEFAULT_OPTIONS, TRAINABLE_FAMILIES, _bert_pipeline, train_tokenizer


def zipf_corpus(path, n_lines=3000, seed=0):
    """Natural-looking text: made-up words of shared syllables, drawn with Zipf frequencies."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(2500)})
    weights = [1 / (i + 1) for i in range(len(words))]
    path.write_text("".join(" ".join(rng.choices(words, weights, k=rng.randint(5, 15))) + ".\n"
                            for _ in range(n_lines)), encoding="utf-8")
    return path


TRAIN_ALL = """
import hashlib, sys
from lmforge.tokenizer import TRAINABLE_FAMILIES, train_tokenizer
for family in TRAINABLE_FAMILIES:
    tok = train_tokenizer(family, [sys.argv[1]], vocab_size=int(sys.argv[2]))
    print(family, hashlib.sha256(tok.backend.to_str().encode()).hexdigest())
"""


def test_every_process_learns_the_same_vocabulary_and_ids(tmp_path):
    """tokenizers' WordPiece and Unigram trainers work in hash-map order, which each process seeds anew: without
    lmforge's canonical order, two processes number (and for WordPiece, pick) the pieces differently."""
    corpus = zipf_corpus(tmp_path / "corpus.txt")
    runs = [subprocess.run([sys.executable, "-c", TRAIN_ALL, str(corpus), "700"], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(3)]
    assert runs[0][::2] == list(TRAINABLE_FAMILIES)
    assert runs[1] == runs[0] and runs[2] == runs[0]


def test_wordpiece_vocabulary_is_wordpiece_trainers_up_to_ties(tmp_path):
    corpus = zipf_corpus(tmp_path / "corpus.txt")
    ours = train_tokenizer("bert", [corpus], vocab_size=700)
    theirs = _bert_pipeline(models.WordPiece(unk_token="[UNK]"), DEFAULT_OPTIONS["bert"])
    theirs.train([str(corpus)], trainers.WordPieceTrainer(
        vocab_size=700, show_progress=False, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    ours_vocab, their_vocab = ours.backend.get_vocab(), theirs.get_vocab()
    assert len(ours_vocab) == len(their_vocab) == 700
    assert len(set(ours_vocab) ^ set(their_vocab)) <= 0.02 * 700
    assert [ours_vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    assert any(t.startswith("##") and len(t) > 3 for t in ours_vocab)
    word = "bapokezu"  # syllables the corpus has, joined into a word it lacks
    assert ours.tokenize(word) == theirs.encode(word, add_special_tokens=False).tokens


@pytest.mark.parametrize("family", ["t5", "xlnet"])
def test_unigram_vocabulary_reaches_the_requested_size(family, tmp_path, caplog):
    corpus = zipf_corpus(tmp_path / "corpus.txt")
    with caplog.at_level(logging.WARNING, "lmforge.tokenizer"):
        tok = train_tokenizer(family, [corpus], vocab_size=1000)
    sentinels = 100 if family == "t5" else 0
    assert 950 <= tok.vocab_size - sentinels <= 1000
    assert not caplog.records
    line = corpus.read_text().splitlines()[7]
    assert tok.decode(tok.encode(line)) == line
    assert len(tok.tokenize(line)) < len(line.replace(" ", "")) / 2  # pieces, not characters


@pytest.mark.parametrize("family", ["t5", "xlnet"])
def test_small_corpus_keeps_whole_words_and_warns(family, tmp_path, caplog):
    """Fifteen words in random order: no word is part of another, so the trainer alone spells them out."""
    rng = random.Random(0)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
             "lima", "mike", "oscar", "papa"]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(" ".join(rng.sample(words, 5)) + "\n" for _ in range(200)), encoding="utf-8")
    with caplog.at_level(logging.WARNING, "lmforge.tokenizer"):
        tok = train_tokenizer(family, [corpus], vocab_size=300)
    assert tok.tokenize("alpha juliet mike") == ["▁alpha", "▁juliet", "▁mike"]
    assert tok.decode(tok.encode("alpha juliet mike")) == "alpha juliet mike"
    assert any("the corpus supports only" in r.getMessage() and "of the 300" in r.getMessage()
               for r in caplog.records)
