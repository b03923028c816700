"""The five model families and their Hugging Face checkpoint I/O."""
from .base import ModelError, ModelOutput, PreTrainedModel
from .hf_io import FAMILIES, load_model, save_pretrained

__all__ = ["FAMILIES", "ModelError", "ModelOutput", "PreTrainedModel", "load_model", "save_pretrained"]
