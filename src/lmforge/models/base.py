"""What every family shares: the output record, the model base class and the weight-table vocabulary.

Each family file declares, as data, how its parameters are named in a Hugging Face checkpoint
(`hf_weight_table`); `hf_io` does the reading, writing and strict checking once for all families.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, NamedTuple

import torch
from torch import nn


class ModelError(ValueError):
    """A checkpoint, config or input that lmforge cannot use; the message is one sentence for the user."""


@dataclass
class ModelOutput:
    """What a forward pass returns. `logits` always; the rest when the family and inputs produce them."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    past_key_values: Any = None  # GPT-2 / T5 decoder cache, feed back to continue decoding
    mems: list[torch.Tensor] | None = None  # XLNet segment-recurrence memory
    encoder_last_hidden_state: torch.Tensor | None = None  # T5


class Convert(NamedTuple):
    """A pair of inverse tensor maps between the checkpoint's layout and ours."""

    load: Callable[[torch.Tensor], torch.Tensor]  # checkpoint -> ours
    save: Callable[[torch.Tensor], torch.Tensor]  # ours -> checkpoint


# GPT-2 stores its projections as Conv1D ([in, out]); ours are nn.Linear ([out, in]).
TRANSPOSE = Convert(lambda t: t.t().contiguous(), lambda t: t.t().contiguous())


class Fused(NamedTuple):
    """One parameter of ours stored as several checkpoint tensors, concatenated along `dim` in `keys` order:
    Llama's fused q/k/v projection is q_proj, k_proj and v_proj stacked row-wise. `sizes` are each tensor's
    extent along `dim`; loading fills the slices (each key consumed and shape-checked), saving splits them."""

    keys: tuple[str, ...]
    sizes: tuple[int, ...]
    dim: int = 0


@dataclass
class HFConfig:
    """Base for family configs: fields named as in Hugging Face's config.json unless `hf_renames` says otherwise."""

    hf_renames: ClassVar[dict[str, str]] = {}  # our field -> config.json key
    model_type: ClassVar[str] = ""

    @classmethod
    def from_hf(cls, d: dict) -> "HFConfig":
        """Read the fields we know from a config.json dict; unknown keys are ignored like transformers does."""
        kwargs = {}
        for f in fields(cls):
            key = cls.hf_renames.get(f.name, f.name)
            if key in d and d[key] is not None:
                kwargs[f.name] = d[key]
        if "id2label" in kwargs:
            kwargs["id2label"] = {int(k): v for k, v in kwargs["id2label"].items()}
        return cls(**kwargs)

    def to_hf(self) -> dict:
        d = {self.hf_renames.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}
        if "id2label" in d:
            d["id2label"] = {str(k): v for k, v in d["id2label"].items()}
            d["label2id"] = {v: int(k) for k, v in d["id2label"].items()}
        d["model_type"] = self.model_type
        return d


class PreTrainedModel(nn.Module):
    """Base for the five families: one class per family, the head chosen by `task`.

    Subclasses set `family`, `config_class`, `architectures` (task -> Hugging Face class name),
    `base_prefix` (the backbone's key prefix in headed checkpoints) and implement `hf_weight_table`.
    """

    family: ClassVar[str]
    config_class: ClassVar[type[HFConfig]]
    architectures: ClassVar[dict[str, str]]
    base_prefix: ClassVar[str] = ""
    # checkpoint keys that carry no information for us (tied copies, constant buffers): regexes
    ignored_hf_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: HFConfig, task: str):
        super().__init__()
        if task not in self.architectures:
            raise ModelError(
                f"{self.family} has no task {task!r}; choose one of {', '.join(self.architectures)}"
            )
        self.config = config
        self.task = task

    @classmethod
    def hf_prefix(cls, task: str) -> str:
        """Key prefix of the backbone in a checkpoint saved for `task` (Hugging Face's `base_model_prefix`)."""
        return "" if task == "base" else cls.base_prefix

    @classmethod
    def adapt_config_to_weights(cls, config: HFConfig, state: dict[str, torch.Tensor]) -> None:
        """Settle what config.json leaves to the weights themselves (T5's tied head); nothing by default."""

    def hf_weight_table(self) -> dict[str, str | tuple[str, Convert] | Fused]:
        """Our parameter name -> checkpoint key (without `base_prefix` for backbone keys), optionally with a
        Convert, or the several keys a fused parameter is stored as (`Fused`)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, folder) -> None:
        """Write config.json + model.safetensors that `transformers` and `lmforge.load` both read."""
        from .hf_io import save_pretrained

        save_pretrained(self, folder)

    @torch.no_grad()
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean-pooled, L2-normalised sentence vectors from the last hidden layer (sentence-transformers' recipe)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encode(input_ids, attention_mask)  # (B, T, H)
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=-1)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden states (B, T, H) of the backbone (the encoder for T5)."""
        raise NotImplementedError
