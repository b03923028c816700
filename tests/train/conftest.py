import random

import pytest

from lmforge.tokenizer import train_tokenizer

SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the king", "a small bird", "the teacher", "our friend"]
VERBS = ["sees", "likes", "finds", "carries", "watches", "follows", "calls", "helps"]
OBJECTS = ["the ball", "a red apple", "the little house", "a green tree", "the river", "an open door", "a book"]
PLACES = ["in the garden", "near the sea", "at home", "under the bridge", "on the hill", "in the morning"]


def grammar_corpus(docs: int = 300, seed: int = 0) -> str:
    """A synthetic corpus a tiny model learns in a few dozen steps: sentences from a small grammar,
    blank lines between documents."""
    rng = random.Random(seed)
    lines = []
    for _ in range(docs):
        for _ in range(rng.randint(2, 6)):
            lines.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)} .")
        lines.append("")
    return "\n".join(lines)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(grammar_corpus())
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus):
    """A small trained tokenizer per family, saved once for the session."""
    root = tmp_path_factory.mktemp("tokenizers")

    def get(family: str):
        folder = root / family
        if not folder.exists():
            train_tokenizer(family, [str(corpus)], vocab_size=200).save_pretrained(folder)
        return folder

    return get


@pytest.fixture(scope="session")
def tiny():
    """Run options for a tiny, fast, deterministic model."""
    return dict(layers=2, hidden=64, heads=2, ffn=128, block_size=32, micro_batch=16, lr=3e-3, precision="fp32",
                dropout=0.0, threads=1, progress=False, eval_blocks=64, log_every=5)
