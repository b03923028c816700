"""Training checkpoints: one file holding everything a run needs to continue exactly where it stopped.

    <out>/checkpoint.pt   model, optimizer and scheduler state, RNG states (python, numpy, torch), the step,
                          the data position (blocks consumed) and the run's arguments

Saves go to a temporary file in the same folder, are flushed to disk and then renamed over the old file,
so a crash during a save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..models import ModelError

CHECKPOINT = "checkpoint.pt"


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def atomic_save(obj, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(out: Path, *, model, optimizer, scheduler, step: int, position: int, args: dict,
                    extra: dict | None = None) -> Path:
    state = {
        "step": step,
        "position": position,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "args": args,
        **(extra or {}),
    }
    path = Path(out) / CHECKPOINT
    atomic_save(state, path)
    return path


def load_checkpoint(out: Path) -> dict | None:
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def check_same_run(saved: dict, now: dict, may_change: tuple = ()) -> None:
    """Refuse to resume a checkpoint written with other arguments than this run's (except those in `may_change`)."""
    for key, value in saved.items():
        if key not in may_change and now.get(key) != value:
            raise ModelError(f"the checkpoint was written with {key}={value!r} but this run has "
                             f"{key}={now.get(key)!r}; resume with the same arguments")
