"""XLNet (Yang et al., 2019): a Transformer-XL backbone trained with permutation language modelling.

Reference: transformers/models/xlnet/modeling_xlnet.py, which is time-major ([len, batch, ...]) like the
original TensorFlow code. This file is batch-major throughout and computes the same function. How it
differs: the relative position keys are projected once rather than once per batch row, the attention
runs in `scaled_dot_product_attention` with the content term (`ac`) as the dot product and the
position (`bd`), segment (`ef`) and mask terms folded into one additive bias, and `mems` are
batch-major, (B, mlen, d_model), where Hugging Face's are (mlen, B, d_model). In training the dropout
on the position encodings is drawn once for the batch rather than per row (the encodings are shared).

Parameters keep Hugging Face's layout (q, k, v, o, r as [d_model, n_head, d_head]), so the weight
table needs no conversions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import HFConfig, ModelError, ModelOutput, PreTrainedModel
from .layers import ACTIVATIONS
from .heads import TokenClassifier, classification_loss, lm_loss, span_loss, token_loss

SUMMARY_TYPES = ("last", "first", "mean")


@dataclass
class XLNetConfig(HFConfig):
    """Hugging Face's XLNetConfig fields that change the computation; defaults are xlnet-base-cased's."""

    model_type: ClassVar[str] = "xlnet"

    vocab_size: int = 32000
    d_model: int = 768
    n_layer: int = 12
    n_head: int = 12
    d_inner: int = 3072
    ff_activation: str = "gelu"
    # The original code shares r_w/r_r/r_s biases across layers when False; Hugging Face checkpoints
    # always hold one copy per layer (its converter duplicates shared ones), so the flag is only carried.
    untie_r: bool = True
    attn_type: str = "bi"
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    mem_len: int | None = None  # states kept per layer when use_mems=True; None or 0 keeps them all
    reuse_len: int | None = None  # only the first reuse_len tokens of a segment go into the memory
    bi_data: bool = False
    clamp_len: int = -1  # relative distances beyond this share one encoding; -1 = no clamping
    summary_type: str = "last"
    summary_use_proj: bool = True
    summary_activation: str | None = "tanh"
    summary_last_dropout: float = 0.1
    tie_word_embeddings: bool = True
    pad_token_id: int = 5
    bos_token_id: int = 1
    eos_token_id: int = 2
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ModelError(f"d_model {self.d_model} is not a multiple of n_head {self.n_head}")
        if self.attn_type != "bi":
            raise ModelError(f"attn_type {self.attn_type!r} is not supported; lmforge's XLNet supports 'bi'")
        if self.bi_data:
            raise ModelError("bi_data=True (the bidirectional pretraining pipeline) is not supported")
        if self.ff_activation not in ACTIVATIONS:
            raise ModelError(f"ff_activation {self.ff_activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if self.summary_type not in SUMMARY_TYPES:
            raise ModelError(f"summary_type {self.summary_type!r} is not one of {', '.join(SUMMARY_TYPES)}")
        if self.summary_activation not in ("tanh", None):
            raise ModelError(f"summary_activation {self.summary_activation!r} is not 'tanh' or null")
        if not self.tie_word_embeddings:
            raise ModelError("tie_word_embeddings=False is not supported; XLNet's LM head shares the embeddings")

    @classmethod
    def from_hf(cls, d: dict) -> "XLNetConfig":
        config = super().from_hf(d)
        # HFConfig.from_hf skips nulls, but an explicit null activation means "none" here.
        if "summary_activation" in d and d["summary_activation"] is None:
            config.summary_activation = None
        return config

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    @property
    def num_labels(self) -> int:
        return len(self.id2label)


def relative_positions(qlen: int, klen: int, d_model: int, clamp_len: int, device) -> torch.Tensor:
    """Sinusoids (klen + qlen, d_model) for the distances klen, klen-1, ..., 1-qlen (Transformer-XL, 3.3)."""
    pos = torch.arange(klen, -qlen, -1.0, device=device)
    if clamp_len > 0:
        pos = pos.clamp(-clamp_len, clamp_len)
    inv_freq = 1 / torch.pow(10000, torch.arange(0, d_model, 2.0, device=device) / d_model)
    angles = pos[:, None] * inv_freq  # (P, d_model/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def rel_shift(bd: torch.Tensor, klen: int) -> torch.Tensor:
    """Scores against relative distances -> scores against key positions, as a view (Transformer-XL, App. B).

    bd[..., i, p] scores query i against distance klen - p. Key j lies at distance mlen + i - j from
    query i, i.e. at p = qlen - i + j, so row i of the result starts qlen - i columns into row i of bd.
    Dropping the first qlen entries of the flattened rows and re-rowing with one column fewer shifts
    each row left by one more than the row above: exactly that.
    """
    B, nh, Q, P = bd.shape
    bd = bd.flatten(2)[..., Q:].view(B, nh, Q, P - 1)  # (B, nh, Q, P-1), row i now starts at qlen - i
    return bd[..., :klen]  # (B, nh, Q, K)


class RelativeAttention(nn.Module):
    """Relative multi-head attention shared by the content stream h and the query stream g, then add & norm.

    score(i, j) = (q_i + r_w_bias)·k_j          (ac: content)
                + (q_i + r_r_bias)·r_{i-j}      (bd: position)
                + (q_i + r_s_bias)·s_{ij}       (ef: segment, s = seg_embed[same or different segment])
    """

    def __init__(self, config: XLNetConfig):
        super().__init__()
        D, nh, hs = config.d_model, config.n_head, config.d_head
        self.q = nn.Parameter(torch.empty(D, nh, hs))
        self.k = nn.Parameter(torch.empty(D, nh, hs))
        self.v = nn.Parameter(torch.empty(D, nh, hs))
        self.o = nn.Parameter(torch.empty(D, nh, hs))
        self.r = nn.Parameter(torch.empty(D, nh, hs))
        self.r_r_bias = nn.Parameter(torch.empty(nh, hs))
        self.r_s_bias = nn.Parameter(torch.empty(nh, hs))
        self.r_w_bias = nn.Parameter(torch.empty(nh, hs))
        self.seg_embed = nn.Parameter(torch.empty(2, nh, hs))
        self.layer_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    @staticmethod
    def heads(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x (..., T, D) @ w (D, nh, hs) -> (..., nh, T, hs)."""
        return (x @ w.flatten(1)).unflatten(-1, w.shape[1:]).transpose(-3, -2)

    def attend(self, q, k, v, k_r, seg_diff, blocked) -> torch.Tensor:
        """One stream's attention vectors (B, Q, nh*hs).

        q (B, Q, nh*hs); k, v (B, nh, K, hs) over memory + content; k_r (nh, P, hs) over distances;
        seg_diff (B, Q, K) True where query and key lie in different segments; blocked (B, Q, K) True
        where the query may not look.
        """
        hs = k.shape[-1]
        scale = hs**-0.5
        q = q.unflatten(-1, (-1, hs))  # (B, Q, nh, hs)
        # Biases in q's dtype: under autocast q is bf16 and a float32 sum would only be rounded back.
        r_w_bias, r_r_bias, r_s_bias = (b.to(q.dtype) for b in (self.r_w_bias, self.r_r_bias, self.r_s_bias))
        bd = ((q + r_r_bias) * scale).transpose(1, 2) @ k_r.transpose(1, 2)  # (B, nh, Q, P)
        bias = rel_shift(bd, k.shape[2])  # (B, nh, Q, K)
        if seg_diff is not None:
            ef = torch.einsum("bind,snd->bnis", (q + r_s_bias) * scale, self.seg_embed)  # (B, nh, Q, 2)
            bias = bias + torch.where(seg_diff[:, None], ef[..., 1:], ef[..., :1])
        if blocked is not None:
            # Finite, so a row with nothing visible averages all values as Hugging Face's -1e30 does.
            bias = bias.masked_fill(blocked[:, None], torch.finfo(bias.dtype).min / 2)
        y = F.scaled_dot_product_attention(
            (q + r_w_bias).transpose(1, 2),  # (B, nh, Q, hs)
            k,
            v,
            attn_mask=bias,
            dropout_p=self.dropout.p if self.training else 0.0,
            scale=scale,
        )  # (B, nh, Q, hs)
        return y.transpose(1, 2).flatten(2)  # (B, Q, nh*hs)

    def post_attention(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(x + self.dropout(y @ self.o.flatten(1).t()))

    def forward(self, h, g, mem, pos_emb, seg_diff, mask_h, mask_g, target_mapping):
        """h (B, T, D) content stream; g (B, M, D) query stream or None; mem (B, mlen, D) or None."""
        cat = h if mem is None else torch.cat([mem, h], dim=1)  # (B, K, D)
        k = self.heads(cat, self.k)  # (B, nh, K, hs)
        v = self.heads(cat, self.v)  # (B, nh, K, hs)
        k_r = self.heads(pos_emb, self.r)  # (nh, P, hs)

        h_out = self.post_attention(h, self.attend(h @ self.q.flatten(1), k, v, k_r, seg_diff, mask_h))
        if g is None:
            return h_out, None
        # The query stream asks "what is at position l?" for the M targets: scatter its queries to
        # their positions, attend without the target's own content (mask_g), gather the results back.
        q_g = target_mapping.transpose(1, 2) @ (g @ self.q.flatten(1))  # (B, T, nh*hs)
        y_g = target_mapping @ self.attend(q_g, k, v, k_r, seg_diff, mask_g)  # (B, M, nh*hs)
        return h_out, self.post_attention(g, y_g)


class FeedForward(nn.Module):
    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.layer_1 = nn.Linear(config.d_model, config.d_inner)
        self.layer_2 = nn.Linear(config.d_inner, config.d_model)
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.act = ACTIVATIONS[config.ff_activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.layer_2(self.dropout(self.act(self.layer_1(x)))))
        return self.layer_norm(x + y)


class XLNetLayer(nn.Module):
    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.rel_attn = RelativeAttention(config)
        self.ff = FeedForward(config)

    def forward(self, h, g, *args):
        h, g = self.rel_attn(h, g, *args)
        return self.ff(h), (None if g is None else self.ff(g))


class XLNetBackbone(nn.Module):
    """Embeddings and layers; returns the last hidden states of the query stream if there is one, else of h."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        self.word_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.mask_emb = nn.Parameter(torch.empty(1, 1, config.d_model))
        self.layer = nn.ModuleList(XLNetLayer(config) for _ in range(config.n_layer))
        self.dropout = nn.Dropout(config.dropout)

    def masks(self, attention_mask, perm_mask, B: int, T: int, mlen: int, device):
        """Blocked-attention masks (B, T, mlen + T), True = may not attend, for the content and query streams.

        A key is blocked if it is padding or if perm_mask[b, i, j] = 1 (in XLNet pretraining: j does not
        come before i in the factorisation order). The memory is visible unless attention_mask, (B, mlen + T),
        covers it too (left-padded memories of rows decoded together). The content stream h_i also sees its own
        token (the diagonal), the query stream g_i must not: that is the only difference.

            perm order 2,0,1   query stream (g)   content stream (h)   (x = blocked)
                     keys:      0 1 2              0 1 2
               query 0          x x .              . x .
               query 1          . x .              . . .
               query 2          x x x              x x .
        """
        if attention_mask is None and perm_mask is None:
            return None, None
        blocked = torch.zeros(B, T, T, dtype=torch.bool, device=device)
        mem_blocked = blocked.new_zeros(B, T, mlen)
        if attention_mask is not None and mlen and attention_mask.shape[1] == mlen + T:
            # A mask over memory and tokens: padding in the memories of rows of different lengths.
            mem_blocked |= (attention_mask[:, :mlen] == 0)[:, None, :]
            attention_mask = attention_mask[:, mlen:]
        if attention_mask is not None:
            blocked |= (attention_mask == 0)[:, None, :]
        if perm_mask is not None:
            blocked |= perm_mask > 0
        blocked = torch.cat([mem_blocked, blocked], dim=2)  # (B, T, K)
        own = torch.eye(T, dtype=torch.bool, device=device)
        own = torch.cat([own.new_zeros(T, mlen), own], dim=1)  # (T, K), True at (i, mlen + i)
        return blocked & ~own, blocked

    def cache(self, h: torch.Tensor, mem: torch.Tensor | None) -> torch.Tensor:
        """The next segment's memory for one layer: its input states appended to the old memory, last mem_len."""
        if self.config.reuse_len:
            h = h[:, : self.config.reuse_len]
        if mem is not None:
            h = torch.cat([mem, h], dim=1)
        if self.config.mem_len:
            h = h[:, -self.config.mem_len :]
        return h.detach()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, perm_mask=None, target_mapping=None,
                mems=None, use_mems=False):
        B, T = input_ids.shape
        c = self.config
        if mems is not None and len(mems) != c.n_layer:
            raise ModelError(f"mems has {len(mems)} entries but the model has {c.n_layer} layers")
        if perm_mask is not None and perm_mask.shape != (B, T, T):
            raise ModelError(f"perm_mask has shape {list(perm_mask.shape)}, expected {[B, T, T]}")
        if target_mapping is not None and (target_mapping.dim() != 3 or target_mapping.shape[::2] != (B, T)):
            raise ModelError(f"target_mapping has shape {list(target_mapping.shape)}, expected [{B}, num_predict, {T}]")
        mlen = mems[0].shape[1] if mems is not None else 0
        device = input_ids.device

        mask_h, mask_g = self.masks(attention_mask, perm_mask, B, T, mlen, device)
        seg_diff = None
        if token_type_ids is not None:
            # The memory counts as segment 0 (Hugging Face pads it with zeros).
            key_types = F.pad(token_type_ids, (mlen, 0))  # (B, K)
            seg_diff = token_type_ids[:, :, None] != key_types[:, None, :]  # (B, T, K)

        h = self.dropout(self.word_embedding(input_ids))  # (B, T, D)
        g = None
        if target_mapping is not None:
            target_mapping = target_mapping.to(h.dtype)
            g = self.dropout(self.mask_emb.expand(B, target_mapping.shape[1], -1))  # (B, M, D)
        pos_emb = relative_positions(T, mlen + T, c.d_model, c.clamp_len, device).to(h.dtype)
        pos_emb = self.dropout(pos_emb)  # (P, D) with P = mlen + 2T

        new_mems = []
        for i, layer in enumerate(self.layer):
            mem = None if mems is None else mems[i]
            if use_mems:
                new_mems.append(self.cache(h, mem))
            h, g = layer(h, g, mem, pos_emb, seg_diff, mask_h, mask_g, target_mapping)
        return self.dropout(h if g is None else g), (new_mems if use_mems else None)


class LMHead(nn.Module):
    """`lm_loss`: a Linear whose weight is the word embedding, with its own bias."""

    def __init__(self, config: XLNetConfig, word_embedding: nn.Embedding):
        super().__init__()
        self.lm_loss = nn.Linear(config.d_model, config.vocab_size)
        self.lm_loss.weight = word_embedding.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_loss(hidden)


class SummaryHead(nn.Module):
    """XLNet's `sequence_summary` (pick a token, project, tanh, dropout) followed by `logits_proj`.

    "last" pools position T-1 whatever the mask says, as Hugging Face does: XLNet pads on the left.
    """

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.summary_type = config.summary_type
        self.summary = nn.Linear(config.d_model, config.d_model) if config.summary_use_proj else nn.Identity()
        self.activation = nn.Tanh() if config.summary_activation == "tanh" else nn.Identity()
        self.dropout = nn.Dropout(config.summary_last_dropout)
        self.logits_proj = nn.Linear(config.d_model, config.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.summary_type == "last":
            x = hidden[:, -1]
        elif self.summary_type == "first":
            x = hidden[:, 0]
        else:
            x = hidden.mean(1)
        return self.logits_proj(self.dropout(self.activation(self.summary(x))))


class SpanHead(nn.Module):
    """`qa_outputs`: start and end logits per token."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.qa_outputs = nn.Linear(config.d_model, 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.qa_outputs(hidden)


class XLNetModel(PreTrainedModel):
    """XLNet with the head for `task`: base, lm (permutation LM), classification, qa (span extraction) or
    token_classification (a tag per token)."""

    family = "xlnet"
    config_class = XLNetConfig
    architectures = {
        "base": "XLNetModel",
        "lm": "XLNetLMHeadModel",
        "classification": "XLNetForSequenceClassification",
        "qa": "XLNetForQuestionAnsweringSimple",
        "token_classification": "XLNetForTokenClassification",
    }
    base_prefix = "transformer."
    ignored_hf_keys = (r"lm_loss\.weight",)  # tied to transformer.word_embedding.weight

    def __init__(self, config: XLNetConfig, task: str = "base"):
        super().__init__(config, task)
        self.transformer = XLNetBackbone(config)
        if task == "lm":
            self.head = LMHead(config, self.transformer.word_embedding)
        elif task == "classification":
            self.head = SummaryHead(config)
        elif task == "qa":
            self.head = SpanHead(config)
        elif task == "token_classification":  # transformers adds no dropout of its own: the backbone's output has one
            self.head = TokenClassifier(config.d_model, config.num_labels, 0.0)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """Hugging Face's scheme: every weight matrix and bias vector ~ N(0, initializer_range)."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (RelativeAttention, XLNetBackbone)):
            for p in module.parameters(recurse=False):
                nn.init.normal_(p, std=std)

    def hf_weight_table(self) -> dict[str, str]:
        t = {"transformer.word_embedding.weight": "word_embedding.weight", "transformer.mask_emb": "mask_emb"}
        for i in range(self.config.n_layer):
            ours, hf = f"transformer.layer.{i}.", f"layer.{i}."
            for name in ("q", "k", "v", "o", "r", "r_r_bias", "r_s_bias", "r_w_bias", "seg_embed"):
                t[f"{ours}rel_attn.{name}"] = f"{hf}rel_attn.{name}"
            for name in ("rel_attn.layer_norm", "ff.layer_norm", "ff.layer_1", "ff.layer_2"):
                t[f"{ours}{name}.weight"] = f"{hf}{name}.weight"
                t[f"{ours}{name}.bias"] = f"{hf}{name}.bias"
        if self.task == "lm":
            t["head.lm_loss.bias"] = "lm_loss.bias"  # its weight is the word embedding
        elif self.task == "classification":
            if self.config.summary_use_proj:
                t["head.summary.weight"] = "sequence_summary.summary.weight"
                t["head.summary.bias"] = "sequence_summary.summary.bias"
            t["head.logits_proj.weight"] = "logits_proj.weight"
            t["head.logits_proj.bias"] = "logits_proj.bias"
        elif self.task == "qa":
            t["head.qa_outputs.weight"] = "qa_outputs.weight"
            t["head.qa_outputs.bias"] = "qa_outputs.bias"
        elif self.task == "token_classification":
            t["head.classifier.weight"] = "classifier.weight"
            t["head.classifier.bias"] = "classifier.bias"
        return t

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        perm_mask: torch.Tensor | None = None,
        target_mapping: torch.Tensor | None = None,
        mems: list[torch.Tensor] | None = None,
        use_mems: bool = False,
        labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Hugging Face's inputs, batch-first.

        perm_mask (B, T, T): 1 where token i may NOT attend to token j. target_mapping (B, M, T): one-hot
        rows choosing the M positions the query stream predicts; with it the hidden states and logits
        are (B, M, ...) and lm labels are (B, M). mems: per layer (B, mlen, D) from an earlier call with
        use_mems=True, which returns the next ones, detached, in `.mems`. attention_mask is (B, T), or
        (B, mlen + T) to mask padding in the memory as well.
        """
        hidden, new_mems = self.transformer(
            input_ids, attention_mask, token_type_ids, perm_mask, target_mapping, mems, use_mems
        )
        loss = None
        if self.task == "base":
            logits = hidden
        else:
            logits = self.head(hidden)
            if labels is not None:
                loss_fn = {"lm": lm_loss, "classification": classification_loss, "qa": span_loss,
                           "token_classification": token_loss}[self.task]
                loss = loss_fn(logits, labels)
        return ModelOutput(logits=logits, loss=loss, last_hidden_state=hidden, mems=new_mems)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.transformer(input_ids, attention_mask)[0]
