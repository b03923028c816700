"""Tiny random models with tokenizers trained on a synthetic corpus (fixtures for the task tests)."""
import random
from pathlib import Path

import pytest
import torch
from .synthetic_data import MARKER, WORDS, marker_sentence

from lmforge.models.hf_io import model_class
from lmforge.models.presets import TINY, make_config
from lmforge.tokenizer import train_tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models are fastest on one thread, and the suite shares a small machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(0)
    lines = [marker_sentence(rng, i % 2 == 0) + " yes no" for i in range(300)]
    lines += [" ".join(WORDS), MARKER]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, corpus):
    """tiny_model(family, task) -> a folder with a tiny random model and a tokenizer of its family."""
    made = {}

    def make(family: str, task: str = "base") -> Path:
        if (family, task) not in made:
            torch.manual_seed(0)
            tok = train_tokenizer(family, [corpus], vocab_size=300)
            config = make_config(family, **{**TINY, "vocab": len(tok)})
            model = model_class(family)(config, task)
            folder = tmp_path_factory.mktemp(f"{family}-{task}")
            model.save_pretrained(folder)
            tok.save_pretrained(folder)
            made[family, task] = folder
        return made[family, task]

    return make
