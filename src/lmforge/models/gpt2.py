"""GPT-2 (Radford et al., 2019): a pre-LayerNorm causal decoder with learned positions and a tied LM head.

Read top to bottom: config, attention, MLP, block, the model with its heads and Hugging Face weight table.
Reference: transformers/models/gpt2/modeling_gpt2.py. Checkpoints store every projection as `Conv1D`
([in, out]); ours are `nn.Linear` ([out, in]), transposed on import and export by the weight table.

KV cache: `past_key_values` is a list with one `(k, v)` pair per layer, each (B, nh, T_past, hs). Feed the
cache back with only the new tokens and an `attention_mask` that covers past + new tokens (as Hugging Face
does). Position ids default to `T_past + arange(T)`; with left padding pass `position_ids` yourself, e.g.
`(attention_mask.cumsum(-1) - 1).clamp(min=0)` for the prompt and one more per generated token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import heads
from .base import TRANSPOSE, HFConfig, ModelError, ModelOutput, PreTrainedModel
from .layers import ACTIVATIONS

KVCache = list[tuple[torch.Tensor, torch.Tensor]]



@dataclass
class GPT2Config(HFConfig):
    """Hugging Face's GPT2Config fields; defaults are the 124M `gpt2` model's."""

    model_type = "gpt2"

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True  # divide scores by sqrt(head size)
    scale_attn_by_inverse_layer_idx: bool = False  # and by layer index + 1 (Mistral's GPT-2 runs)
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = None
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})

    @property
    def num_labels(self) -> int:
        return len(self.id2label)


class CausalSelfAttention(nn.Module):
    """Multi-head attention over the cache plus the new tokens, with one fused q/k/v projection."""

    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ModelError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        hs = config.n_embd // config.n_head
        self.scale = (hs**-0.5 if config.scale_attn_weights else 1.0) / (
            layer_idx + 1 if config.scale_attn_by_inverse_layer_idx else 1
        )

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, -1).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, -1).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, -1).transpose(1, 2)  # (B, nh, T, hs)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, nh, T_past + T, hs)
            v = torch.cat([past[1], v], dim=2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_pdrop if self.training else 0.0,
            is_causal=is_causal, scale=self.scale,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y)), (k, v)


class MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        if config.activation_function not in ACTIVATIONS:
            raise ModelError(
                f"activation_function {config.activation_function!r} is not supported; "
                f"use one of {', '.join(ACTIVATIONS)}"
            )
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, inner)
        self.act = ACTIVATIONS[config.activation_function]
        self.c_proj = nn.Linear(inner, config.n_embd)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN residual block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, mask, is_causal, past):
        a, kv = self.attn(self.ln_1(x), mask, is_causal, past)
        x = x + a
        return x + self.mlp(self.ln_2(x)), kv


def attention_mask_for_sdpa(
    attention_mask: torch.Tensor | None, T: int, P: int, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """The SDPA mask for T new tokens after P cached ones, and whether SDPA's `is_causal` suffices instead.

    Query i (absolute position P + i) may see key j when j <= P + i and attention_mask[b, j] == 1:

        P=2, T=3, mask [0 1 1 1 1]   keys 0 1 2 3 4
                          query 0:        . x x . .
                          query 1:        . x x x .
                          query 2:        . x x x x

    Returns a bool (B, 1, T, P+T) or (T, P+T) tensor (True = attend), or None. A row with nothing to see
    (a query that is itself left padding) attends everywhere instead: its output is unused, but an empty row
    is NaN in some SDPA kernels, and a NaN would leak into real tokens through the next layer's values.
    """
    # An all-ones mask is no mask. (Right padding alone would not need one either for the real tokens, but the
    # pad positions' outputs would then differ from Hugging Face's, and a QA loss reads them.)
    keep = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.bool()
    if keep is None and P == 0:
        return None, True
    if keep is None and T == 1:
        return None, False  # one new token sees the whole cache
    q_pos = torch.arange(P, P + T, device=device)
    mask = torch.arange(P + T, device=device) <= q_pos[:, None]  # (T, P+T)
    if keep is not None:
        mask = mask & keep[:, None, None, :]  # (B, 1, T, P+T)
        mask = mask | ~mask.any(-1, keepdim=True)
    return mask, False


class GPT2Model(PreTrainedModel):
    """GPT-2 backbone (`transformer.*`) with one head chosen by `task`:

    base -> last hidden states (also returned as `logits`); lm -> next-token logits through the tied
    embedding; classification -> `score` over the last real token; qa -> start/end logits (B, T, 2).
    """

    family = "gpt2"
    config_class = GPT2Config
    architectures = {
        "base": "GPT2Model",
        "lm": "GPT2LMHeadModel",
        "classification": "GPT2ForSequenceClassification",
        "qa": "GPT2ForQuestionAnswering",
    }
    base_prefix = "transformer."
    ignored_hf_keys = (
        r"lm_head\.weight",  # the tied copy of wte
        r"(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)",  # old checkpoints' constant causal-mask buffers
    )

    def __init__(self, config: GPT2Config, task: str = "lm"):
        super().__init__(config, task)
        if not config.tie_word_embeddings:
            raise ModelError("GPT-2 checkpoints with tie_word_embeddings=false are not supported")
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.n_positions, config.n_embd),
                drop=nn.Dropout(config.embd_pdrop),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
            )
        )
        if task == "lm":
            self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.head.weight = self.transformer.wte.weight  # tied: one Parameter, listed once
        elif task == "classification":
            self.head = nn.Linear(config.n_embd, config.num_labels, bias=False)
        elif task == "qa":
            self.head = nn.Linear(config.n_embd, 2)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer) (paper, 2.3)."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, (CausalSelfAttention, MLP)):
            nn.init.normal_(module.c_proj.weight, 0.0, std / math.sqrt(2 * self.config.n_layer))

    def hf_weight_table(self) -> dict:
        t = {
            "transformer.wte.weight": "wte.weight",
            "transformer.wpe.weight": "wpe.weight",
            "transformer.ln_f.weight": "ln_f.weight",
            "transformer.ln_f.bias": "ln_f.bias",
        }
        for i in range(self.config.n_layer):
            ours, hf = f"transformer.h.{i}.", f"h.{i}."
            t |= {
                ours + "ln_1.weight": hf + "ln_1.weight",
                ours + "ln_1.bias": hf + "ln_1.bias",
                ours + "attn.c_attn.weight": (hf + "attn.c_attn.weight", TRANSPOSE),
                ours + "attn.c_attn.bias": hf + "attn.c_attn.bias",
                ours + "attn.c_proj.weight": (hf + "attn.c_proj.weight", TRANSPOSE),
                ours + "attn.c_proj.bias": hf + "attn.c_proj.bias",
                ours + "ln_2.weight": hf + "ln_2.weight",
                ours + "ln_2.bias": hf + "ln_2.bias",
                ours + "mlp.c_fc.weight": (hf + "mlp.c_fc.weight", TRANSPOSE),
                ours + "mlp.c_fc.bias": hf + "mlp.c_fc.bias",
                ours + "mlp.c_proj.weight": (hf + "mlp.c_proj.weight", TRANSPOSE),
                ours + "mlp.c_proj.bias": hf + "mlp.c_proj.bias",
            }
        if self.task == "classification":
            t["head.weight"] = "score.weight"
        elif self.task == "qa":
            t |= {"head.weight": "qa_outputs.weight", "head.bias": "qa_outputs.bias"}
        return t

    def backbone(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Final-LayerNorm hidden states (B, T, C) and the per-layer (k, v) covering past + new tokens."""
        B, T = input_ids.shape
        P = past_key_values[0][0].shape[2] if past_key_values else 0
        if attention_mask is not None and attention_mask.shape != (B, P + T):
            raise ModelError(
                f"attention_mask has shape {list(attention_mask.shape)} but must cover the {P} cached and "
                f"{T} new tokens: [{B}, {P + T}]"
            )
        if position_ids is None:
            if P + T > self.config.n_positions:
                raise ModelError(f"{P + T} tokens exceed GPT-2's n_positions ({self.config.n_positions})")
            position_ids = torch.arange(P, P + T, device=input_ids.device)  # (T,), broadcast over B
        mask, is_causal = attention_mask_for_sdpa(attention_mask, T, P, input_ids.device)

        tr = self.transformer
        x = tr.drop(tr.wte(input_ids) + tr.wpe(position_ids))  # (B, T, C)
        cache = []
        for i, block in enumerate(tr.h):
            x, kv = block(x, mask, is_causal, past_key_values[i] if past_key_values else None)
            cache.append(kv)
        return tr.ln_f(x), cache

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone(input_ids, attention_mask)[0]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        labels: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> ModelOutput:
        """lm labels are the inputs themselves (shifted here, -100 ignored), as in Hugging Face; the heads'
        outputs are `heads.decoder_outputs`'s."""
        h, cache = self.backbone(input_ids, attention_mask, past_key_values, position_ids)
        logits, loss = heads.decoder_outputs(self, h, input_ids, attention_mask, labels, logits_to_keep)
        return ModelOutput(
            logits=logits, loss=loss, last_hidden_state=h, past_key_values=cache if use_cache else None
        )
