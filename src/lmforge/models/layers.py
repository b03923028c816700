"""What three or more families share verbatim."""
from __future__ import annotations

from functools import partial

import torch.nn.functional as F

# config.json activation names -> functions; "gelu_new" is the tanh approximation GPT-2 and T5 v1.1 use.
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}
