"""Llama (Touvron et al., 2023) and its close relatives Mistral and Qwen2: a pre-RMSNorm causal decoder with
rotary positions, grouped-query attention and a SwiGLU MLP.

Read top to bottom: configs, rotary embeddings, attention, MLP, block, the model with its heads and Hugging
Face weight table. References: transformers/models/{llama,mistral,qwen2}/modeling_*.py and
modeling_rope_utils.py. The three model types are one model; their configs say what differs:

    model_type  q/k/v bias      o_proj bias      MLP bias   sliding window
    llama       attention_bias  attention_bias   mlp_bias   never
    mistral     no              no               no         `sliding_window` (null: none), every layer
    qwen2       always          no               no         if `use_sliding_window`: layers >= max_window_layers
                                                            (or as `layer_types` lists them)

Projections are fused for speed: one `qkv` Linear (q, k, v rows stacked) and one `gate_up` Linear; the weight
table splits them into Hugging Face's q_proj/k_proj/v_proj and gate_proj/up_proj on save and concatenates on
load (`Fused`).

KV cache: as GPT-2's. `past_key_values` is a list with one `(k, v)` pair per layer, each
(B, n_kv_heads, T_past, head_dim), keys already rotated. Feed it back with only the new tokens and an
`attention_mask` over past + new tokens; with left padding pass `position_ids` (B, T) too. A sliding window
keeps the whole cache and masks the keys that fell out of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from . import heads
from .base import Fused, HFConfig, ModelError, ModelOutput, PreTrainedModel
from .gpt2 import KVCache, attention_mask_for_sdpa
from .layers import ACTIVATIONS

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")
# What each rope_type needs in `rope_parameters` besides rope_type and rope_theta (as transformers validates).
ROPE_REQUIRED = {
    "linear": ("factor",),
    "dynamic": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings"),
}


def _architectures(name: str) -> dict[str, str]:
    return {"base": f"{name}Model", "lm": f"{name}ForCausalLM", "classification": f"{name}ForSequenceClassification"}


ARCHITECTURES = {"llama": _architectures("Llama"), "mistral": _architectures("Mistral"),
                 "qwen2": _architectures("Qwen2")}


@dataclass
class LlamaFamilyConfig(HFConfig):
    """The config.json fields llama, mistral and qwen2 share; defaults are transformers' LlamaConfig's.

    `rope_parameters` is kept as transformers 5 writes it ({"rope_type", "rope_theta", and the scaling
    fields}); `from_hf` also reads the older top-level `rope_theta` and `rope_scaling` ({"type": ...}).
    """

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: as many as query heads (no grouping)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    rope_parameters: dict = field(default_factory=lambda: {"rope_type": "default", "rope_theta": 10000.0})
    attention_dropout: float = 0.0
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @classmethod
    def from_hf(cls, d: dict) -> LlamaFamilyConfig:
        config = super().from_hf(d)
        # transformers reads `rope_scaling` first, then `rope_parameters`; the theta may sit outside either.
        rope = dict(d.get("rope_scaling") or d.get("rope_parameters") or {})
        rope.setdefault("rope_type", rope.pop("type", "default"))  # "type": transformers 4's name
        rope.setdefault("rope_theta", d.get("rope_theta") or 10000.0)
        if rope["rope_type"] in ("llama3", "yarn"):
            rope.setdefault("original_max_position_embeddings", config.max_position_embeddings)
        config.rope_parameters = rope
        if "sliding_window" in d and hasattr(config, "sliding_window"):
            config.sliding_window = d["sliding_window"]  # an explicit null means no window, not the default
        return config

    # What the model types differ in (overridden per type).
    @property
    def projection_biases(self) -> tuple[bool, bool, bool]:
        """Whether the q/k/v projections, o_proj and the MLP projections have biases."""
        return False, False, False

    def window(self, layer: int) -> int | None:
        """How many keys (itself included) a query of `layer` sees at most; None: all before it."""
        return None

    def check(self) -> None:
        """Refuse what the model cannot be built from, naming the config.json field."""
        if self.num_attention_heads % self.num_key_value_heads:
            raise ModelError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_key_value_heads "
                f"({self.num_key_value_heads}) in config.json"
            )
        if self.head_dim % 2:
            raise ModelError(f"head_dim ({self.head_dim}) must be even for rotary position embeddings")
        if self.hidden_act not in ACTIVATIONS:
            raise ModelError(f"hidden_act {self.hidden_act!r} is not supported; use one of {', '.join(ACTIVATIONS)}")
        kind = self.rope_parameters.get("rope_type")
        if kind not in ROPE_TYPES:
            raise ModelError(
                f"rope_parameters.rope_type {kind!r} in config.json is not supported; lmforge knows "
                f"{', '.join(ROPE_TYPES)}"
            )
        missing = [k for k in ROPE_REQUIRED.get(kind, ()) if self.rope_parameters.get(k) is None]
        if missing:
            raise ModelError(f"rope_parameters of rope_type {kind!r} in config.json lacks {', '.join(missing)}")
        if self.rope_parameters.get("partial_rotary_factor", 1.0) != 1.0:
            raise ModelError("rope_parameters.partial_rotary_factor other than 1.0 is not supported")


@dataclass
class LlamaConfig(LlamaFamilyConfig):
    """transformers' LlamaConfig: optional biases on every projection, no sliding window."""

    model_type: ClassVar[str] = "llama"
    attention_bias: bool = False
    mlp_bias: bool = False

    @property
    def projection_biases(self) -> tuple[bool, bool, bool]:
        return self.attention_bias, self.attention_bias, self.mlp_bias


@dataclass
class MistralConfig(LlamaFamilyConfig):
    """transformers' MistralConfig: no biases; every layer sees at most `sliding_window` keys (null: all)."""

    model_type: ClassVar[str] = "mistral"
    sliding_window: int | None = 4096

    def window(self, layer: int) -> int | None:
        return self.sliding_window


@dataclass
class Qwen2Config(LlamaFamilyConfig):
    """transformers' Qwen2Config: q/k/v biases always; the window only with `use_sliding_window`, and then in
    the layers `layer_types` marks "sliding_attention" (by default those from `max_window_layers` on)."""

    model_type: ClassVar[str] = "qwen2"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    use_sliding_window: bool = False
    sliding_window: int | None = 4096
    max_window_layers: int = 28
    layer_types: list[str] | None = None

    @property
    def projection_biases(self) -> tuple[bool, bool, bool]:
        return True, False, False

    def window(self, layer: int) -> int | None:
        if not self.use_sliding_window or self.sliding_window is None:
            return None
        if self.layer_types is not None:
            return self.sliding_window if self.layer_types[layer] == "sliding_attention" else None
        return self.sliding_window if layer >= self.max_window_layers else None


# ------------------------------------------------------------------------------------------ positions


def rope_frequencies(config: LlamaFamilyConfig, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """The rotary inverse frequencies (head_dim/2,) in float32 and the factor cos/sin are scaled by, computed
    as transformers' modeling_rope_utils.py does for each rope_type (same operations, same rounding)."""
    p = config.rope_parameters
    kind, base, dim = p["rope_type"], p["rope_theta"], config.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim  # (dim/2,)
    if kind == "dynamic":
        # NTK-aware scaling: a larger base once the sequence outgrows max_position_embeddings.
        max_pos, factor = config.max_position_embeddings, p["factor"]
        seq_len = max(seq_len or 0, max_pos)
        base = base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    if kind == "yarn":
        return _yarn_frequencies(p, base ** exponents, dim)
    inv_freq = 1.0 / (base**exponents)
    if kind == "linear":
        return inv_freq / p["factor"], 1.0
    if kind == "llama3":
        return _llama3_frequencies(p, inv_freq), 1.0
    return inv_freq, 1.0


def _llama3_frequencies(p: dict, inv_freq: torch.Tensor) -> torch.Tensor:
    """Llama 3.1: long wavelengths slowed by `factor`, short ones kept, the band between interpolated."""
    factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old_context = p["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def _yarn_frequencies(p: dict, pos_freqs: torch.Tensor, dim: int) -> tuple[torch.Tensor, float]:
    """YaRN (Peng et al., 2023): interpolate the low frequencies, extrapolate the high ones, with a linear ramp
    between the dimensions that turn beta_fast and beta_slow times over the original context; cos and sin are
    scaled by 0.1 ln(factor) + 1 (or the given attention_factor)."""
    base, factor, original = p["rope_theta"], p["factor"], p["original_max_position_embeddings"]

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = p.get("attention_factor")
    if attention_factor is None:
        if p.get("mscale") and p.get("mscale_all_dim"):
            attention_factor = float(mscale(factor, p["mscale"]) / mscale(factor, p["mscale_all_dim"]))
        else:
            attention_factor = mscale(factor)

    def correction_dim(rotations):  # the dimension that turns `rotations` times over the original context
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(p.get("beta_fast") or 32), correction_dim(p.get("beta_slow") or 1)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # no division by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp  # 1: keep the original frequency, 0: divide it by factor
    interpolated, extrapolated = 1.0 / (factor * pos_freqs), 1.0 / pos_freqs
    return interpolated * (1 - extrapolation) + extrapolated * extrapolation, attention_factor


class RotaryEmbedding(nn.Module):
    """cos and sin (B or 1, 1, T, head_dim) for the given positions; Llama rotates the two halves of each head
    (`rotate_half`), not interleaved pairs as the paper (and llama.cpp's GGUF layout) does."""

    def __init__(self, config: LlamaFamilyConfig):
        super().__init__()
        self.config = config
        # A plain attribute, not a buffer, so that it stays float32 when the model is cast to bfloat16.
        self.inv_freq, self.scaling = rope_frequencies(config)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self.inv_freq.device != position_ids.device:
            self.inv_freq = self.inv_freq.to(position_ids.device)
        inv_freq = self.inv_freq
        if self.config.rope_parameters["rope_type"] == "dynamic":
            # transformers grows the base with the longest position seen so far and keeps it until a call
            # fits the original context again; here each call uses its own longest position (no state).
            seq_len = int(position_ids.max()) + 1
            if seq_len > self.config.max_position_embeddings:
                inv_freq = rope_frequencies(self.config, seq_len)[0].to(position_ids.device)
        freqs = position_ids[..., None].float() * inv_freq  # (B, T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, hd)
        return (emb.cos() * self.scaling).to(dtype), (emb.sin() * self.scaling).to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def attention_mask_with_window(
    attention_mask: torch.Tensor | None, T: int, P: int, device: torch.device, window: int | None
) -> tuple[torch.Tensor | None, bool]:
    """GPT-2's causal + padding mask (gpt2.attention_mask_for_sdpa), and with a window also key j > i - window
    for query i, counted in cache positions as transformers' sliding_window_overlay does (left padding counts):

        window=2, P=0, T=4   keys 0 1 2 3
                  query 0:        x . . .
                  query 1:        x x . .
                  query 2:        . x x .
                  query 3:        . . x x
    """
    if window is None or P + T <= window:  # the window never binds
        return attention_mask_for_sdpa(attention_mask, T, P, device)
    q_pos = torch.arange(P, P + T, device=device)[:, None]
    k_pos = torch.arange(P + T, device=device)
    mask = (k_pos <= q_pos) & (k_pos > q_pos - window)  # (T, P+T)
    if attention_mask is not None and not bool(attention_mask.all()):
        mask = mask & attention_mask.bool()[:, None, None, :]  # (B, 1, T, P+T)
        mask = mask | ~mask.any(-1, keepdim=True)  # a padding query attends everywhere (see gpt2.py)
    return mask, False


# ------------------------------------------------------------------------------------------ layers


class RMSNorm(nn.Module):
    """x / rms(x) * weight, the mean of squares taken in float32 (as LlamaRMSNorm, whatever the model dtype)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's fused kernel: one op instead of five, which counts at one decode token (30 layers x 2 norms)
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)


class Attention(nn.Module):
    """Grouped-query attention: n_head query heads share n_kv_head key/value heads (n_head / n_kv_head each).
    SDPA's `enable_gqa` lets each group read its K/V head without copying it; for one decode token on CPU
    that is 3x faster than expanding K/V to n_head heads, with equal results."""

    def __init__(self, config: LlamaFamilyConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        qkv_bias, o_bias, _ = config.projection_biases
        self.sizes = [self.n_head * self.hd, self.n_kv_head * self.hd, self.n_kv_head * self.hd]
        self.qkv = nn.Linear(config.hidden_size, sum(self.sizes), bias=qkv_bias)
        self.o_proj = nn.Linear(self.n_head * self.hd, config.hidden_size, bias=o_bias)
        self.dropout = config.attention_dropout

    def forward(self, x, rope, mask, is_causal, past):
        B, T, _ = x.shape
        qk, v = self.qkv(x).split([self.sizes[0] + self.sizes[1], self.sizes[2]], dim=-1)
        qk = qk.view(B, T, self.n_head + self.n_kv_head, self.hd).transpose(1, 2)  # (B, nh + nkv, T, hd)
        v = v.view(B, T, self.n_kv_head, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        cos, sin = rope
        qk = qk * cos + rotate_half(qk) * sin  # q and k rotated together: half the ops of one decode step
        q, k = qk.split([self.n_head, self.n_kv_head], dim=1)  # (B, nh, T, hd), (B, nkv, T, hd)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, nkv, T_past + T, hd)
            v = torch.cat([past[1], v], dim=2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal,
            scale=self.hd**-0.5, enable_gqa=self.n_kv_head != self.n_head,
        )  # (B, nh, T, hd)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.hd)  # (B, T, nh * hd)
        return self.o_proj(y), (k, v)


class MLP(nn.Module):
    """SwiGLU (Shazeer, 2020): down(act(gate(x)) * up(x)), gate and up as one Linear."""

    def __init__(self, config: LlamaFamilyConfig):
        super().__init__()
        bias = config.projection_biases[2]
        self.gate_up = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=bias)
        self.act = ACTIVATIONS[config.hidden_act]
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down_proj(self.act(gate) * up)


class DecoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, config: LlamaFamilyConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, rope, mask, is_causal, past):
        a, kv = self.self_attn(self.input_layernorm(x), rope, mask, is_causal, past)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), kv


# ------------------------------------------------------------------------------------------ the model


class LlamaModel(PreTrainedModel):
    """Llama/Mistral/Qwen2 backbone (`model.*`) with one head chosen by `task`:

    base -> last hidden states (also returned as `logits`); lm -> next-token logits (`lm_head`, or the
    embedding itself when tie_word_embeddings); classification -> `score` over the last real token.
    `architectures` follows the config's model_type, so a saved Mistral folder names MistralForCausalLM.
    """

    family = "llama"
    config_class: ClassVar[type[LlamaFamilyConfig]] = LlamaConfig
    architectures = ARCHITECTURES["llama"]
    base_prefix = "model."
    ignored_hf_keys = (
        r"lm_head\.weight",  # the tied copy of embed_tokens (an untied head is in the table, so consumed)
        r"(model\.)?layers\.\d+\.self_attn\.rotary_emb\.inv_freq",  # old checkpoints' constant buffers
    )

    def __init__(self, config: LlamaFamilyConfig, task: str = "lm"):
        super().__init__(config, task)
        config.check()
        self.architectures = ARCHITECTURES[config.model_type]
        self.model = nn.ModuleDict(
            dict(
                embed_tokens=nn.Embedding(config.vocab_size, config.hidden_size),
                layers=nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers)),
                norm=RMSNorm(config.hidden_size, config.rms_norm_eps),
            )
        )
        self.rotary = RotaryEmbedding(config)
        if task == "lm":
            self.head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            if config.tie_word_embeddings:
                self.head.weight = self.model.embed_tokens.weight  # one Parameter, listed once
        elif task == "classification":
            self.head = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' init: N(0, initializer_range) weights, zero biases, unit RMSNorm gains."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def hf_weight_table(self) -> dict:
        c = self.config
        q, kv, inner = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim, c.intermediate_size
        qkv_bias, o_bias, mlp_bias = c.projection_biases
        t = {"model.embed_tokens.weight": "embed_tokens.weight", "model.norm.weight": "norm.weight"}
        for i in range(c.num_hidden_layers):
            ours, hf = f"model.layers.{i}.", f"layers.{i}."
            attn, mlp = hf + "self_attn.", hf + "mlp."
            t |= {
                ours + "input_layernorm.weight": hf + "input_layernorm.weight",
                ours + "post_attention_layernorm.weight": hf + "post_attention_layernorm.weight",
                ours + "self_attn.o_proj.weight": attn + "o_proj.weight",
                ours + "mlp.down_proj.weight": mlp + "down_proj.weight",
            }
            for p in ["weight", "bias"] if qkv_bias else ["weight"]:
                t[ours + f"self_attn.qkv.{p}"] = Fused(tuple(attn + f"{n}_proj.{p}" for n in "qkv"), (q, kv, kv))
            if o_bias:
                t[ours + "self_attn.o_proj.bias"] = attn + "o_proj.bias"
            for p in ["weight", "bias"] if mlp_bias else ["weight"]:
                t[ours + f"mlp.gate_up.{p}"] = Fused((mlp + f"gate_proj.{p}", mlp + f"up_proj.{p}"), (inner, inner))
            if mlp_bias:
                t[ours + "mlp.down_proj.bias"] = mlp + "down_proj.bias"
        if self.task == "lm" and not c.tie_word_embeddings:
            t["head.weight"] = "lm_head.weight"
        elif self.task == "classification":
            t["head.weight"] = "score.weight"
        return t

    def backbone(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Final-norm hidden states (B, T, C) and the per-layer (k, v) covering past + new tokens."""
        B, T = input_ids.shape
        P = past_key_values[0][0].shape[2] if past_key_values else 0
        if attention_mask is not None and attention_mask.shape != (B, P + T):
            raise ModelError(
                f"attention_mask has shape {list(attention_mask.shape)} but must cover the {P} cached and "
                f"{T} new tokens: [{B}, {P + T}]"
            )
        if position_ids is None:
            position_ids = torch.arange(P, P + T, device=input_ids.device)  # broadcast over B
        position_ids = position_ids.view(-1, T)  # (B or 1, T)
        x = self.model.embed_tokens(input_ids)  # (B, T, C)
        rope = self.rotary(position_ids, x.dtype)
        windows = [self.config.window(i) for i in range(self.config.num_hidden_layers)]
        masks = {w: attention_mask_with_window(attention_mask, T, P, input_ids.device, w) for w in set(windows)}
        cache = []
        for i, layer in enumerate(self.model.layers):
            x, kv = layer(x, rope, *masks[windows[i]], past_key_values[i] if past_key_values else None)
            cache.append(kv)
        return self.model.norm(x), cache

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


class MistralModel(LlamaModel):
    """Registered for model_type "mistral": the same model, Hugging Face's Mistral class names."""

    config_class = MistralConfig
    architectures = ARCHITECTURES["mistral"]


class Qwen2Model(LlamaModel):
    """Registered for model_type "qwen2": the same model, Hugging Face's Qwen2 class names."""

    config_class = Qwen2Config
    architectures = ARCHITECTURES["qwen2"]
