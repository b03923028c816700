"""T5 (Raffel et al., 2020): an encoder-decoder with RMS norms, unscaled attention and relative position buckets.

Read top to bottom: config, the bucket function, norm / attention / feed-forward, block, stack, the model
with its heads and Hugging Face weight table. Reference: transformers/models/t5/modeling_t5.py.

Two generations share this code:
- v1.0 (`t5-small` …): ReLU feed-forward, LM head tied to the shared embedding, decoder output rescaled by
  d_model**-0.5 before that head (Mesh TensorFlow's convention for tied embeddings).
- v1.1 / FLAN-T5: gated-GELU feed-forward, a separate `lm_head`, no rescaling (`tie_word_embeddings: false`).

Attention has no 1/sqrt(d_kv) factor: the paper folds it into the initialisation of q. Positions enter only
as a learned bias per head and distance bucket, computed once per stack (Hugging Face stores it in block 0)
and shared by every layer, together with the masks: one additive tensor per stack, handed to SDPA as is.

Decoder cache: `past_key_values` is a list with one `(k, v, cross_k, cross_v)` tuple per decoder layer, each
(B, nh, len, d_kv). Self-attention k/v grow by the new tokens; cross-attention k/v are computed from the
encoder output on the first call and reused. Continue decoding with only the new `decoder_input_ids`, the
cache, `encoder_outputs` (the encoder's last hidden state, a (B, S, d_model) tensor, e.g.
`out.encoder_last_hidden_state`) and the encoder `attention_mask`; a `decoder_attention_mask`, if any, must
cover past + new tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import heads
from .base import HFConfig, ModelError, ModelOutput, PreTrainedModel
from .layers import ACTIVATIONS

KVCache = list[tuple[torch.Tensor, ...]]



@dataclass
class T5Config(HFConfig):
    """Hugging Face's T5Config fields; defaults are `t5-small`'s (v1.0)."""

    model_type = "t5"

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64  # per-head width; d_kv * num_heads need not equal d_model
    d_ff: int = 2048
    num_layers: int = 6  # encoder
    num_decoder_layers: int | None = None  # None means num_layers
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    classifier_dropout: float = 0.0
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    feed_forward_proj: str = "relu"  # "relu" (v1.0) or "gated-gelu" (v1.1); "gated-silu", "gelu", … too
    tie_word_embeddings: bool = True  # the LM head shares `shared.weight`
    scale_decoder_outputs: bool | None = None  # d_model**-0.5 before the LM head; None: as tie_word_embeddings
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0  # T5 starts decoding from the pad token
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})

    def __post_init__(self):
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        if self.scale_decoder_outputs is None:  # Hub configs: v1.0 tied and rescaled, v1.1 neither
            self.scale_decoder_outputs = self.tie_word_embeddings
        if self.activation not in ACTIVATIONS:
            raise ModelError(
                f"feed_forward_proj {self.feed_forward_proj!r} is not supported; use 'relu', 'gated-gelu' or "
                f"'[gated-]ACT' with ACT one of {', '.join(ACTIVATIONS)}"
            )

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        # Hugging Face reads "gated-gelu" as the tanh approximation, for checkpoints converted from Mesh TF.
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.removeprefix("gated-")



def relative_position_bucket(
    relative_position: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> torch.Tensor:
    """The bucket of each distance `key - query` (Mesh TensorFlow's `_relative_position_bucket`).

    Half the buckets hold exact distances 0, 1, …; the other half grow logarithmically up to `max_distance`,
    beyond which distances share the last bucket. Bidirectional (encoder): the first half of the buckets is
    for keys at or before the query, the second half for keys after it. Causal (decoder): only keys at or
    before the query get distinct buckets; later keys (masked anyway) fall in bucket 0.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        n = relative_position.abs()
    else:
        n = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    # The clamp only keeps log() finite for the small distances, which take the exact branch below.
    log_ratio = torch.log(n.float().clamp(min=max_exact) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(n < max_exact, n, large)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype attention will run in: autocast's when it is on, else the tensor's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class RMSNorm(nn.Module):
    """T5's LayerNorm: scale only, no mean subtraction, no bias; statistics in float32 as the reference does."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps)
        # float32 weights keep the residual stream in float32 (as the reference); half weights give half outputs
        return y.to(self.weight.dtype)


class Attention(nn.Module):
    """Multi-head attention with no 1/sqrt(d_kv) scaling; `bias` carries relative positions and masks."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.n_heads, self.d_kv = config.num_heads, config.d_kv
        inner = config.num_heads * config.d_kv
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        self.dropout = config.dropout_rate

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.n_heads, self.d_kv).transpose(1, 2)  # (B, nh, T, d_kv)

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.k(x)), self.heads(self.v(x))

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = x.shape
        y = F.scaled_dot_product_attention(
            self.heads(self.q(x)), k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0, scale=1.0
        )  # (B, nh, T, d_kv)
        return self.o(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, d_model)


class FeedForward(nn.Module):
    """wo(act(wi x)) in v1.0; wo(act(wi_0 x) * wi_1 x) in v1.1 (gated, Shazeer 2020)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.act = ACTIVATIONS[config.activation]
        self.gated = config.is_gated
        if self.gated:
            self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
            self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        else:
            self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
        return self.wo(self.dropout(h))


class Block(nn.Module):
    """Pre-norm residual sublayers: self-attention, cross-attention (decoder only), feed-forward."""

    def __init__(self, config: T5Config, is_decoder: bool):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.attn = Attention(config)
        if is_decoder:
            self.cross_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
            self.cross_attn = Attention(config)
        self.ff_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.ff = FeedForward(config)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.is_decoder = is_decoder

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | None,
        enc: torch.Tensor | None = None,
        cross_bias: torch.Tensor | None = None,
        past: tuple[torch.Tensor, ...] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        h = self.attn_norm(x)
        k, v = self.attn.kv(h)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, nh, T_past + T, d_kv)
            v = torch.cat([past[1], v], dim=2)
        x = x + self.dropout(self.attn(h, k, v, bias))
        cache = (k, v)
        if self.is_decoder:
            h = self.cross_norm(x)
            ck, cv = past[2:] if past is not None else self.cross_attn.kv(enc)  # (B, nh, S, d_kv) each
            x = x + self.dropout(self.cross_attn(h, ck, cv, cross_bias))
            cache += (ck, cv)
        x = x + self.dropout(self.ff(self.ff_norm(x)))
        return x, cache


class Stack(nn.Module):
    """The encoder or the decoder: blocks sharing one relative position bias, then a final RMS norm."""

    def __init__(self, config: T5Config, is_decoder: bool):
        super().__init__()
        self.config = config
        self.is_decoder = is_decoder
        n_layers = config.num_decoder_layers if is_decoder else config.num_layers
        self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, config.num_heads)
        self.block = nn.ModuleList(Block(config, is_decoder) for _ in range(n_layers))
        self.final_layer_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def self_attention_bias(
        self, T: int, P: int, attention_mask: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """Position bias plus masks for T queries after P cached keys: (1 or B, nh, T, P + T).

        Masked entries hold the dtype's minimum (not -inf), so a query with nothing to see gets finite
        garbage instead of NaN. Decoder, P=2, T=2, attention_mask [0 1 1 1]:

                        keys 0 1 2 3
            query 0 (pos 2):   . b b .      b = bias[bucket(key - query)], . = masked
            query 1 (pos 3):   . b b b
        """
        device = self.relative_attention_bias.weight.device
        q_pos = torch.arange(P, P + T, device=device)[:, None]
        k_pos = torch.arange(P + T, device=device)[None, :]
        buckets = relative_position_bucket(
            k_pos - q_pos,  # (T, P + T)
            bidirectional=not self.is_decoder,
            num_buckets=self.config.relative_attention_num_buckets,
            max_distance=self.config.relative_attention_max_distance,
        )
        bias = self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0).to(dtype)  # (1, nh, T, P+T)
        keep = (k_pos <= q_pos) if self.is_decoder and T > 1 else None  # (T, P + T)
        if attention_mask is not None:
            pad = attention_mask[:, None, None, :].bool()  # (B, 1, 1, P + T)
            keep = pad if keep is None else keep & pad
        if keep is None:
            return bias
        return torch.where(keep, bias, torch.finfo(dtype).min)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        enc: torch.Tensor | None = None,
        enc_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """x: embedded tokens (B, T, d_model); masks (B, len) with 1 = keep. Returns hidden states and the cache."""
        T = x.shape[1]
        P = past_key_values[0][0].shape[2] if past_key_values else 0
        dtype = compute_dtype(x)
        bias = self.self_attention_bias(T, P, attention_mask, dtype)
        cross_bias = None
        if enc_mask is not None:
            cross_bias = torch.zeros(enc_mask.shape, dtype=dtype, device=x.device)
            cross_bias = cross_bias.masked_fill(~enc_mask.bool(), torch.finfo(dtype).min)[:, None, None, :]

        x = self.dropout(x)
        cache = []
        for i, block in enumerate(self.block):
            x, kv = block(x, bias, enc, cross_bias, past_key_values[i] if past_key_values else None)
            cache.append(kv)
        return self.dropout(self.final_layer_norm(x)), cache


def real_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """None for an all-ones mask, so SDPA gets a batch-broadcast bias and no masking work."""
    return None if mask is None or bool(mask.all()) else mask


class T5Model(PreTrainedModel):
    """T5 encoder-decoder with one head chosen by `task`:

    base -> decoder hidden states (also returned as `logits`); lm -> vocabulary logits (B, T_dec, V);
    encoder -> the encoder alone (`logits` = its hidden states, for embeddings); classification -> the
    decoder state at each row's last eos token through dense-tanh-out_proj; qa -> start/end logits
    (B, T_dec, 2) over the decoder output. classification and qa decode the inputs shifted right, as
    Hugging Face does, unless `decoder_input_ids` are given.
    """

    family = "t5"
    config_class = T5Config
    architectures = {
        "base": "T5Model",
        "lm": "T5ForConditionalGeneration",
        "encoder": "T5EncoderModel",
        "classification": "T5ForSequenceClassification",
        "qa": "T5ForQuestionAnswering",
    }
    base_prefix = "transformer."  # only T5ForSequenceClassification nests the model (see hf_prefix)
    ignored_hf_keys = (
        r"(transformer\.)?(encoder|decoder)\.embed_tokens\.weight",  # copies of shared.weight
        r"lm_head\.weight",  # the tied copy of shared.weight (v1.0); v1.1's own lm_head is in the table
        # an unused bias that old checkpoints carry (cross-attention has no position bias)
        r"(transformer\.)?decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",
    )

    def __init__(self, config: T5Config, task: str = "lm"):
        super().__init__(config, task)
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = Stack(config, is_decoder=False)
        if task != "encoder":
            self.decoder = Stack(config, is_decoder=True)
        if task == "lm":
            self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
            if config.tie_word_embeddings:
                self.head.weight = self.shared.weight  # one Parameter, listed once as shared.weight
        elif task == "classification":
            self.head = heads.ClassifierHead(config.d_model, config.num_labels, config.classifier_dropout)
        elif task == "qa":
            self.head = nn.Linear(config.d_model, 2)
        self.apply(self._init_weights)

    @classmethod
    def hf_prefix(cls, task: str) -> str:
        return cls.base_prefix if task == "classification" else ""

    @classmethod
    def adapt_config_to_weights(cls, config: T5Config, state: dict[str, torch.Tensor]) -> None:
        """transformers 5 writes `tie_word_embeddings: true` for every T5 and ties the head unless the checkpoint
        holds an `lm_head.weight` that differs from `shared.weight`; do the same."""
        head, shared = state.get("lm_head.weight"), state.get("shared.weight")
        if config.tie_word_embeddings and head is not None and shared is not None and not torch.equal(head, shared):
            config.tie_word_embeddings = False

    def _init_weights(self, module: nn.Module) -> None:
        """Mesh TensorFlow's init (as Hugging Face's `_init_weights`): N(0, 1/sqrt(fan-in)), q also / sqrt(d_kv)."""
        c, f = self.config, self.config.initializer_factor
        if isinstance(module, nn.Embedding):
            std = 1.0 if module is self.shared else c.d_model**-0.5  # the relative position biases
            nn.init.normal_(module.weight, 0.0, f * std)
        elif isinstance(module, Attention):
            nn.init.normal_(module.q.weight, 0.0, f * (c.d_model * c.d_kv) ** -0.5)
            nn.init.normal_(module.k.weight, 0.0, f * c.d_model**-0.5)
            nn.init.normal_(module.v.weight, 0.0, f * c.d_model**-0.5)
            nn.init.normal_(module.o.weight, 0.0, f * (c.num_heads * c.d_kv) ** -0.5)
        elif isinstance(module, FeedForward):
            for wi in (module.wi_0, module.wi_1) if module.gated else (module.wi,):
                nn.init.normal_(wi.weight, 0.0, f * c.d_model**-0.5)
            nn.init.normal_(module.wo.weight, 0.0, f * c.d_ff**-0.5)
        elif isinstance(module, heads.ClassifierHead):
            for lin in (module.dense, module.out_proj):
                nn.init.normal_(lin.weight, 0.0, f * c.d_model**-0.5)
                nn.init.zeros_(lin.bias)
        elif module is getattr(self, "head", None) and isinstance(module, nn.Linear):
            if self.task == "qa":
                nn.init.normal_(module.weight, 0.0, f * c.d_model**-0.5)
                nn.init.zeros_(module.bias)
            elif not c.tie_word_embeddings:
                nn.init.normal_(module.weight, 0.0, f)

    def hf_weight_table(self) -> dict:
        t = {"shared.weight": "shared.weight"}
        stacks = ["encoder"] + (["decoder"] if self.task != "encoder" else [])
        for stack in stacks:
            t[f"{stack}.relative_attention_bias.weight"] = (
                f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
            )
            t[f"{stack}.final_layer_norm.weight"] = f"{stack}.final_layer_norm.weight"
            for i in range(len(getattr(self, stack).block)):
                ours, hf = f"{stack}.block.{i}.", f"{stack}.block.{i}.layer."
                ff = hf + ("2." if stack == "decoder" else "1.")
                t[ours + "attn_norm.weight"] = hf + "0.layer_norm.weight"
                for p in "qkvo":
                    t[ours + f"attn.{p}.weight"] = hf + f"0.SelfAttention.{p}.weight"
                if stack == "decoder":
                    t[ours + "cross_norm.weight"] = hf + "1.layer_norm.weight"
                    for p in "qkvo":
                        t[ours + f"cross_attn.{p}.weight"] = hf + f"1.EncDecAttention.{p}.weight"
                t[ours + "ff_norm.weight"] = ff + "layer_norm.weight"
                for p in ("wi_0", "wi_1", "wo") if self.config.is_gated else ("wi", "wo"):
                    t[ours + f"ff.{p}.weight"] = ff + f"DenseReluDense.{p}.weight"
        if self.task == "lm" and not self.config.tie_word_embeddings:
            t["head.weight"] = "lm_head.weight"
        elif self.task == "classification":
            for p in ("dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias"):
                t[f"head.{p}"] = f"classification_head.{p}"
        elif self.task == "qa":
            t |= {"head.weight": "qa_outputs.weight", "head.bias": "qa_outputs.bias"}
        return t

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(self.shared(input_ids), real_mask(attention_mask))[0]

    def shift_right(self, ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing decoder inputs: decoder_start_token_id, then ids[:-1], with -100 turned into pad."""
        shifted = F.pad(ids[:, :-1], (1, 0), value=self.config.decoder_start_token_id)
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        encoder_outputs: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
    ) -> ModelOutput:
        """lm labels (B, T_dec) are the targets themselves; without decoder_input_ids they are shifted right
        to make them (as Hugging Face does). `encoder_outputs` is our encoder's last hidden state tensor."""
        attention_mask = real_mask(attention_mask)
        if encoder_outputs is None:
            if input_ids is None:
                raise ModelError("T5 needs input_ids, or encoder_outputs from an earlier call")
            encoder_outputs = self.encoder(self.shared(input_ids), attention_mask)[0]  # (B, S, d_model)
        enc = encoder_outputs
        if self.task == "encoder":
            return ModelOutput(logits=enc, last_hidden_state=enc, encoder_last_hidden_state=enc)

        if decoder_input_ids is None:
            if self.task == "lm" and labels is not None:
                decoder_input_ids = self.shift_right(labels)
            elif self.task in ("classification", "qa") and input_ids is not None:
                decoder_input_ids = self.shift_right(input_ids)
            else:
                raise ModelError("T5 needs decoder_input_ids (for the lm task, labels alone will do)")
        P = past_key_values[0][0].shape[2] if past_key_values else 0
        B, T = decoder_input_ids.shape
        if decoder_attention_mask is not None and decoder_attention_mask.shape != (B, P + T):
            raise ModelError(
                f"decoder_attention_mask has shape {list(decoder_attention_mask.shape)} but must cover the {P} "
                f"cached and {T} new tokens: [{B}, {P + T}]"
            )
        h, cache = self.decoder(
            self.shared(decoder_input_ids), real_mask(decoder_attention_mask), enc, attention_mask, past_key_values
        )  # (B, T_dec, d_model)

        loss = None
        if self.task == "base":
            logits = h
        elif self.task == "lm":
            # v1.0 rescales before the tied head (Mesh TF); v1.1's untied head was trained without it.
            logits = self.head(h * self.config.d_model**-0.5 if self.config.scale_decoder_outputs else h)
            if labels is not None:
                loss = heads.lm_loss(logits, labels)
        elif self.task == "classification":
            logits = self.head(heads.last_token(h, self.eos_mask(input_ids, h)))  # (B, num_labels)
            if labels is not None:
                loss = heads.classification_loss(logits, labels)
        else:  # qa
            logits = self.head(h)  # (B, T_dec, 2)
            if labels is not None:
                loss = heads.span_loss(logits, labels)
        return ModelOutput(
            logits=logits,
            loss=loss,
            last_hidden_state=h,
            encoder_last_hidden_state=enc,
            past_key_values=cache if use_cache else None,
        )

    def eos_mask(self, input_ids: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
        """Where input_ids hold eos; classification pools the decoder state at each row's last one."""
        if input_ids is None or input_ids.shape != h.shape[:2]:
            raise ModelError("T5 classification needs input_ids with the decoder's length to find the eos tokens")
        mask = input_ids == self.config.eos_token_id
        if not bool(mask.any(1).all()):
            raise ModelError(f"T5 classification needs an eos token (id {self.config.eos_token_id}) in every row")
        return mask
