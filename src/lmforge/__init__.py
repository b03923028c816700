"""lmforge: BERT, RoBERTa, GPT-2, XLNet and T5 in one compact codebase, with Hugging Face checkpoints."""
from .hub import load, load_model, load_tokenizer
from .models import ModelError, ModelOutput

__version__ = "0.1.0"
__all__ = ["ModelError", "ModelOutput", "load", "load_model", "load_tokenizer", "__version__"]
