"""A fine-tuned model shipped as its difference from the base model it was tuned from.

A fine-tuned MiniLM differs from `all-MiniLM-L6-v2` (which the package already depends on) in its layers and
its new head; its word embeddings, half of the parameters, are frozen in training and so equal the base's.
`write_delta` stores only what changed:

    tensor equal to the base's         nothing (rebuilt from the installed base)
    matrix that changed                (tuned - base) quantized per group of `group` values along each row:
                                       int8 (bits=8) or two int4 values a byte (bits=4), a float16 scale a group
    vector that changed (bias, norm)   (tuned - base) in float16
    tensor the base lacks (the head)   its value in float16

Quantizing the difference rather than the weight keeps the error small: it is a fraction of the (small)
change, not of the weight. `read_delta` rebuilds the full float32 model against the installed base, after
checking that base is the one the delta was made from (a SHA-256 over the base tensors it patches).
The folder holds config.json (the tuned model's, so the head and labels are known), delta.safetensors and
whatever else the caller puts there (lmforge_task.json, the model card).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

from ..models import ModelError

DELTA_FILE = "delta.safetensors"


def _quantize(d: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) float -> integer codes (rows, cols) in [-qmax, qmax] and float16 scales (rows, groups)."""
    rows, cols = d.shape
    groups = math.ceil(cols / group)
    padded = torch.nn.functional.pad(d.float(), (0, groups * group - cols)).view(rows, groups, group)
    qmax = 2 ** (bits - 1) - 1
    scale = (padded.abs().amax(-1) / qmax).clamp(min=1e-12).half()  # (rows, groups)
    codes = torch.round(padded / scale.float()[..., None]).clamp(-qmax, qmax).to(torch.int8)
    return codes.view(rows, groups * group)[:, :cols].contiguous(), scale


def _dequantize(codes: torch.Tensor, scale: torch.Tensor, group: int) -> torch.Tensor:
    rows, cols = codes.shape
    groups = scale.shape[1]
    padded = torch.nn.functional.pad(codes.float(), (0, groups * group - cols)).view(rows, groups, group)
    return (padded * scale.float()[..., None]).view(rows, groups * group)[:, :cols]


def _pack4(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes in [-7, 7] -> uint8, two a byte (low nibble first); an odd length gets a zero pad."""
    flat = (codes.flatten().to(torch.int16) + 8).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, torch.tensor([8], dtype=torch.uint8)])
    return flat[0::2] | (flat[1::2] << 4)


def _unpack4(packed: torch.Tensor, shape) -> torch.Tensor:
    low, high = (packed & 0xF).to(torch.int8) - 8, (packed >> 4).to(torch.int8) - 8
    flat = torch.stack([low, high], 1).flatten()
    return flat[: math.prod(shape)].view(shape)


def _fingerprint(state: dict[str, torch.Tensor], names) -> str:
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode())
        h.update(state[name].detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_delta(tuned, base, folder, *, base_name: str, bits: int = 8, group: int = 128) -> dict:
    """Write config.json and delta.safetensors for `tuned` relative to `base` (a model of the same family whose
    backbone the tuned one started from). Returns a summary: bytes, tensors stored per kind."""
    from safetensors.torch import save_file

    if bits not in (4, 8):
        raise ValueError("bits must be 4 or 8")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ours, theirs = tuned.state_dict(), base.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    kinds = {"same": 0, "quantized": 0, "vector": 0, "new": 0}
    patched = []
    for name, t in ours.items():
        b = theirs.get(name)
        if b is None or b.shape != t.shape:
            tensors[f"new.{name}"] = t.detach().half().contiguous()
            kinds["new"] += 1
            continue
        d = (t.detach().float() - b.detach().float())
        if not d.any():
            kinds["same"] += 1
            continue
        patched.append(name)
        if d.dim() == 2:
            codes, scale = _quantize(d, bits, group)
            tensors[f"q{bits}.{name}"] = _pack4(codes) if bits == 4 else codes
            tensors[f"scale.{name}"] = scale
            kinds["quantized"] += 1
        else:
            tensors[f"d.{name}"] = d.half().contiguous()
            kinds["vector"] += 1
    meta = {"base": base_name, "base_sha256": _fingerprint(theirs, patched), "bits": str(bits), "group": str(group),
            "task": tuned.task, "format": "lmforge-delta-1"}
    save_file(tensors, str(folder / DELTA_FILE), metadata=meta)
    config = tuned.config.to_hf()
    config["architectures"] = [tuned.architectures[tuned.task]]
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"bytes": (folder / DELTA_FILE).stat().st_size, **kinds}


def read_delta(folder, base=None):
    """The full float32 model from `folder` (config.json + delta.safetensors) and the installed base model
    (`base`: a model already loaded, or None to load the one named in the delta)."""
    from safetensors import safe_open

    from ..hub import load
    from ..models.hf_io import model_class, read_config

    folder = Path(folder)
    path = folder / DELTA_FILE
    if not path.is_file():
        raise ModelError(f"{folder} has no {DELTA_FILE}")
    raw = read_config(folder)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "lmforge-delta-1":
            raise ModelError(f"{path} is not an lmforge delta (format {meta.get('format')!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if base is None:
        base, _ = load(meta["base"], task="base")
    cls = model_class(raw["model_type"])
    model = cls(cls.config_class.from_hf(raw), meta["task"])
    state = model.state_dict()
    base_state = base.state_dict()
    patched = [k.split(".", 1)[1] for k in tensors if k.startswith(("q4.", "q8.", "d."))]
    if _fingerprint(base_state, patched) != meta["base_sha256"]:
        raise ModelError(f"{path} was made against another version of {meta['base']} than the one installed; "
                         "the model cannot be rebuilt from it")
    group = int(meta["group"])
    with torch.no_grad():
        for name, t in state.items():
            if f"new.{name}" in tensors:
                t.copy_(tensors[f"new.{name}"].float())
                continue
            if name not in base_state:
                raise ModelError(f"{path} lacks '{name}', which the base model {meta['base']} does not have either")
            value = base_state[name].float()
            for bits in (8, 4):
                if f"q{bits}.{name}" in tensors:
                    codes = tensors[f"q{bits}.{name}"]
                    codes = _unpack4(codes, t.shape) if bits == 4 else codes
                    value = value + _dequantize(codes, tensors[f"scale.{name}"], group)
            if f"d.{name}" in tensors:
                value = value + tensors[f"d.{name}"].float()
            t.copy_(value)
    return model.eval()
