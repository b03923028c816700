"""What three or more families share verbatim."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x): the fast GELU approximation of OpenAI's CLIP, as transformers defines it."""
    return x * torch.sigmoid(1.702 * x)


# config.json activation names (transformers' ACT2FN) -> functions. "gelu_new", "gelu_fast" and
# "gelu_accurate" are the tanh approximation (GPT-2, T5 v1.1) written three ways; one kernel serves all three.
_GELU_TANH = partial(F.gelu, approximate="tanh")
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_python": F.gelu,
    "gelu_new": _GELU_TANH,
    "gelu_pytorch_tanh": _GELU_TANH,
    "gelu_fast": _GELU_TANH,
    "gelu_accurate": _GELU_TANH,
    "quick_gelu": quick_gelu,
    "relu": F.relu,
    "relu6": F.relu6,
    "leaky_relu": F.leaky_relu,
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "linear": lambda x: x,
}
