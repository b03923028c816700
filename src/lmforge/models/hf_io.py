"""Read and write Hugging Face model folders (config.json + model.safetensors / pytorch_model.bin).

Loading is strict both ways: every parameter of our model is filled from the checkpoint, and every
checkpoint tensor is consumed, ignored on purpose (a family's `ignored_hf_keys`), or belongs to a
head the caller asked to replace. Anything else is an error that names the file, the key and the shapes.
"""
from __future__ import annotations

import importlib
import itertools
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch

from .base import Convert, Fused, ModelError, PreTrainedModel

log = logging.getLogger(__name__)

# model_type -> "module:Class"; imported lazily so `import lmforge` stays cheap.
FAMILIES = {
    "bert": "lmforge.models.bert:BertModel",
    "roberta": "lmforge.models.bert:RobertaModel",
    "gpt2": "lmforge.models.gpt2:GPT2Model",
    "xlnet": "lmforge.models.xlnet:XLNetModel",
    "t5": "lmforge.models.t5:T5Model",
    "llama": "lmforge.models.llama:LlamaModel",
    "mistral": "lmforge.models.llama:MistralModel",
    "qwen2": "lmforge.models.llama:Qwen2Model",
}

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def model_class(model_type: str, where: str = "config.json") -> type[PreTrainedModel]:
    if model_type not in FAMILIES:
        raise ModelError(
            f"unknown model_type {model_type!r} in {where}; lmforge supports {', '.join(FAMILIES)}"
        )
    module, name = FAMILIES[model_type].split(":")
    return getattr(importlib.import_module(module), name)


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not Path(folder).is_dir():
        raise ModelError(f"{folder} is not a folder; pass a folder that holds config.json and the weights")
    if not path.is_file():
        raise ModelError(f"{folder} has no config.json; is it a Hugging Face model folder?")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(d, dict) or "model_type" not in d:
        raise ModelError(f"{path} has no 'model_type' field, so lmforge cannot tell the model family")
    return d


def read_state_dict(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of the checkpoint, and the file name to quote in errors."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        name = "model.safetensors"
        try:
            return load_file(folder / name), name
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            raise ModelError(f"{folder / name} is not a readable safetensors file ({e})") from None
    if (folder / "model.safetensors.index.json").is_file():
        from safetensors.torch import load_file

        index = json.loads((folder / "model.safetensors.index.json").read_text())
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(folder / shard))
        return state, "model.safetensors.index.json"
    if (folder / "pytorch_model.bin").is_file():
        name = "pytorch_model.bin"
        try:
            return torch.load(folder / name, map_location="cpu", weights_only=True), name
        except Exception as e:
            raise ModelError(f"{folder / name} is not a readable PyTorch checkpoint ({e})") from None
    raise ModelError(f"{folder} has config.json but no weights; expected one of {', '.join(WEIGHT_FILES)}")


def task_of(cls: type[PreTrainedModel], config: dict) -> str | None:
    """The task a checkpoint was saved for, from its `architectures` entry; None for a head lmforge lacks."""
    by_arch = {arch: task for task, arch in cls.architectures.items()}
    archs = config.get("architectures") or []
    for arch in archs:
        if arch in by_arch:
            return by_arch[arch]
    return None if archs else "base"


class _Row(NamedTuple):
    """One checkpoint tensor and what it fills: our parameter `ours`, or its slice `part` = (dim, start, length)."""

    ours: str
    key: str  # the full checkpoint key
    conv: Convert | None
    part: tuple[int, int, int] | None
    is_head: bool  # head params live under `head.`


def _split_table(model: PreTrainedModel, prefix: str) -> list[_Row]:
    """The family's table as one row per checkpoint tensor (a `Fused` entry gives one row per key)."""
    rows = []
    for ours, entry in model.hf_weight_table().items():
        is_head = ours.startswith("head.")
        full = (lambda k: k) if is_head else (lambda k: prefix + k)
        if isinstance(entry, Fused):
            starts = itertools.accumulate(entry.sizes, initial=0)
            rows += [_Row(ours, full(k), None, (entry.dim, start, n), is_head)
                     for k, start, n in zip(entry.keys, starts, entry.sizes)]
        else:
            key, conv = (entry, None) if isinstance(entry, str) else entry
            rows.append(_Row(ours, full(key), conv, None, is_head))
    return rows


def load_model(folder, task: str | None = None, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Build the family's model for `task` (default: the checkpoint's own) and fill it from the folder."""
    folder = Path(folder)
    raw = read_config(folder)
    _check_task(raw, task, folder / "config.json")  # before reading the weights
    state, fname = read_state_dict(folder)
    return build_model(raw, state, folder / fname, task, dtype, config_source=folder / "config.json")


def _check_task(raw: dict, task: str | None, config_source) -> tuple[type[PreTrainedModel], str | None]:
    """The family class and the checkpoint's own task; a head lmforge lacks needs an explicit task."""
    cls = model_class(raw["model_type"], where="config.json" if Path(str(config_source)).name == "config.json"
                      else str(config_source))
    saved_task = task_of(cls, raw)
    if saved_task is None and task is None:
        raise ModelError(
            f"{config_source} names {', '.join(raw['architectures'])}, a head lmforge's {cls.family} does "
            f"not have (it has {', '.join(cls.architectures.values())}); pass a task, e.g. task='base', to load "
            "the backbone alone"
        )
    return cls, saved_task


def build_model(raw: dict, state: dict[str, torch.Tensor], source, task: str | None = None,
                dtype: torch.dtype = torch.float32, config_source=None) -> PreTrainedModel:
    """The strict build step every checkpoint format shares: a config.json-style dict and a state dict under
    Hugging Face's key names (a folder's, or what the GGUF front end produces) -> the family's model for `task`.
    `source` names the weights in error messages, `config_source` the config (default: `source`)."""
    config_source = source if config_source is None else config_source
    cls, saved_task = _check_task(raw, task, config_source)
    config = cls.config_class.from_hf(raw)
    task = task or saved_task
    cls.adapt_config_to_weights(config, state)
    model = cls(config, task)

    # A headed checkpoint prefixes its backbone (`bert.`, `transformer.`); a bare one does not.
    prefix = cls.base_prefix if saved_task is None else cls.hf_prefix(saved_task)
    if prefix and not any(k.startswith(prefix) for k in state):
        prefix = ""  # some headed checkpoints (the original `gpt2`) store the backbone unprefixed, as transformers allows
    table = _split_table(model, prefix)
    params = dict(model.named_parameters())
    consumed: set[str] = set()
    fresh: list[str] = []
    with torch.no_grad():
        for ours, key, conv, part, is_head in table:
            if key not in state and is_head:
                key = _reprefixed(key, cls.hf_prefix(task), prefix)
            if key not in state:
                if is_head and task != saved_task:
                    fresh.append(ours)
                    continue
                raise ModelError(f"{source} lacks weight '{key}' needed by this {cls.family} config")
            p = params[ours] if part is None else params[ours].narrow(*part)
            # Compare in the checkpoint's own layout so the message shows the shapes the user can see.
            expected = conv.save(torch.empty(p.shape, device="meta")).shape if conv else p.shape
            if state[key].shape != expected:
                raise ModelError(
                    f"{source}: weight '{key}' has shape {list(state[key].shape)} but the config implies "
                    f"{list(expected)}"
                )
            p.copy_(conv.load(state[key]) if conv else state[key])
            consumed.add(key)
    missing = set(params) - {row.ours for row in table}
    if missing:  # a bug in the family's table, never the user's fault
        raise RuntimeError(f"{cls.__name__}.hf_weight_table misses {sorted(missing)}")

    leftover = [k for k in state if k not in consumed and not _ignored(cls, k)]
    if task != saved_task:
        # What the checkpoint's own task used and ours does not (its head; T5's decoder for "encoder"),
        # or, for a head lmforge lacks, whatever lies outside the backbone.
        if saved_task is None:
            dropped = [k for k in leftover if prefix and not k.startswith(prefix)]
        else:
            with torch.device("meta"):
                saved_keys = {row.key for row in _split_table(cls(config, saved_task), prefix)}
            dropped = [k for k in leftover if k in saved_keys]
        leftover = [k for k in leftover if k not in dropped]
        if dropped:
            log.info("dropped %d tensors of the checkpoint's %s model to load it for %s", len(dropped),
                     saved_task or raw["architectures"][0], task)
    if leftover:
        raise ModelError(
            f"{source} has {len(leftover)} weights this {cls.family} config does not use, e.g. "
            f"'{leftover[0]}'; is config.json from the same model?"
        )
    if fresh:
        log.warning("new %s head initialised randomly: %s", task, ", ".join(fresh))
    return model.to(dtype).eval()


def _reprefixed(key: str, ours: str, theirs: str) -> str:
    """A head key as a checkpoint of another task stores it: BERT's pooler is `pooler.*` in BertModel
    but `bert.pooler.*` in the headed classes, and should carry over either way."""
    return theirs + key[len(ours):] if ours != theirs and key.startswith(ours) else key


def _ignored(cls: type[PreTrainedModel], key: str) -> bool:
    return any(re.fullmatch(p, key) for p in cls.ignored_hf_keys)


def save_pretrained(model: PreTrainedModel, folder) -> None:
    """Write config.json and model.safetensors; files appear whole or not at all (temp file + rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = model.hf_prefix(model.task)
    params = dict(model.named_parameters())
    tensors = {}
    for ours, key, conv, part, _ in _split_table(model, prefix):
        t = params[ours].detach() if part is None else params[ours].detach().narrow(*part)
        tensors[key] = (conv.save(t) if conv else t).contiguous().cpu()
    config = model.config.to_hf()
    config["architectures"] = [model.architectures[model.task]]
    config["torch_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    _atomic_write(folder / "model.safetensors", lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    _atomic_write(folder / "config.json", lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n"))


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
