"""BERT (Devlin et al., 2019) and RoBERTa (Liu et al., 2019): one post-norm encoder, two position schemes.

RoBERTa is BERT's network with fairseq's position numbering (real tokens count from `pad_token_id + 1`,
pads keep `pad_token_id`), its own LM and classification heads, and no next-sentence head. Checkpoint
names follow transformers' `modeling_bert.py` / `modeling_roberta.py`; see `hf_weight_table`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import HFConfig, ModelError, ModelOutput, PreTrainedModel
from .layers import ACTIVATIONS
from .heads import ClassifierHead, TokenClassifier, classification_loss, lm_loss, span_loss, token_loss



@dataclass
class BertConfig(HFConfig):
    """Defaults are bert-base-uncased's."""

    model_type: ClassVar[str] = "bert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None  # None: hidden_dropout_prob
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ModelError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ModelError(f"hidden_act {self.hidden_act!r} is not supported; use one of {', '.join(ACTIVATIONS)}")

    @property
    def num_labels(self) -> int:
        return len(self.id2label)


@dataclass
class RobertaConfig(BertConfig):
    """Defaults are roberta-base's."""

    model_type: ClassVar[str] = "roberta"

    vocab_size: int = 50265
    max_position_embeddings: int = 514  # 512 positions after the `pad_token_id + 1` offset
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2


@dataclass
class BertOutput(ModelOutput):
    """ModelOutput plus the two extras BERT computes, under transformers' names."""

    pooler_output: torch.Tensor | None = None  # base: tanh(dense(h[CLS])), (B, H)
    seq_relationship_logits: torch.Tensor | None = None  # pretraining: next-sentence logits, (B, 2)


class Embeddings(nn.Module):
    """word + token type + position embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig, offset_positions: bool):
        super().__init__()
        self.pad = config.pad_token_id
        self.max_positions = config.max_position_embeddings
        self.offset_positions = offset_positions
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=self.pad)
        self.position = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=self.pad if offset_positions else None
        )
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.hidden_dropout_prob)

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(T,) for BERT; (B, T) for RoBERTa, numbered like fairseq's `make_positions`."""
        T = input_ids.shape[1]
        if not self.offset_positions:
            return torch.arange(T, device=input_ids.device)
        real = input_ids.ne(self.pad).int()
        return (torch.cumsum(real, dim=1, dtype=torch.int) * real).long() + self.pad

    def forward(self, input_ids, token_type_ids=None, position_ids=None) -> torch.Tensor:
        if position_ids is None:
            T, first = input_ids.shape[1], self.pad + 1 if self.offset_positions else 0
            if T + first > self.max_positions:
                raise ModelError(f"input has {T} tokens but the model accepts at most {self.max_positions - first}")
            position_ids = self.position_ids(input_ids)
        x = self.word(input_ids)
        # No token types means all zeros: add row 0 instead of a lookup on a zero tensor.
        x = x + (self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids))
        x = x + self.position(position_ids)
        return self.drop(self.norm(x))


class Layer(nn.Module):
    """Post-norm block: x = LN(x + attn(x)); x = LN(x + ffn(x)), as in the original Transformer."""

    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.n_head = config.num_attention_heads
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.attn_out = nn.Linear(H, H)
        self.attn_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(H, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, H)
        self.ffn_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.act = ACTIVATIONS[config.hidden_act]
        self.attn_dropout = config.attention_probs_dropout_prob
        self.drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, H = x.shape
        q = self.query(x).view(B, T, self.n_head, -1).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, self.n_head, -1).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, self.n_head, -1).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, T, H)  # (B, T, H)
        x = self.attn_norm(x + self.drop(self.attn_out(y)))
        return self.ffn_norm(x + self.drop(self.ffn_out(self.act(self.ffn_in(x)))))


def attention_mask_4d(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) 1 = keep -> (B, 1, 1, T) bool for SDPA, or None when nothing is masked (lets SDPA pick flash)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask.bool()
    # A row with no real token attends everywhere (as an additive -inf mask would) instead of to nothing.
    keep = keep | ~keep.any(dim=-1, keepdim=True)
    return keep[:, None, None, :]


class Pooler(nn.Module):
    """tanh(dense(h[CLS])): BERT's sentence vector, trained by next-sentence prediction."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(h[:, 0]))


class MaskedLMHead(nn.Module):
    """dense -> act -> LayerNorm -> decoder; the decoder weight is tied to the word embeddings by the model."""

    def __init__(self, config: BertConfig, act):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = act
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(h))))


class PreTrainingHeads(nn.Module):
    """BERT's two pre-training objectives: masked LM over every token, next-sentence over the pooled [CLS]."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.pooler = Pooler(config.hidden_size)
        self.predictions = MaskedLMHead(config, ACTIVATIONS[config.hidden_act])
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, h: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """MLM logits at every position, or at `keep` (bool (B, T)) only; NSP logits from [CLS]."""
        return self.predictions(h if keep is None else h[keep]), self.seq_relationship(self.pooler(h))


class PooledClassifier(nn.Module):
    """BERT classification: pooler -> dropout -> linear."""

    def __init__(self, config: BertConfig, dropout: float):
        super().__init__()
        self.pooler = Pooler(config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pooler(h)))


class FirstTokenClassifier(ClassifierHead):
    """RoBERTa classification: heads.ClassifierHead over the <s> token's hidden state (no pooler)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return super().forward(h[:, 0])


def _wb(ours: str, hf: str) -> dict[str, str]:
    """Weight and bias of one Linear / LayerNorm."""
    return {f"{ours}.weight": f"{hf}.weight", f"{ours}.bias": f"{hf}.bias"}


def _bert_lm_table(ours: str) -> dict[str, str]:
    return {
        **_wb(f"{ours}.dense", "cls.predictions.transform.dense"),
        **_wb(f"{ours}.norm", "cls.predictions.transform.LayerNorm"),
        f"{ours}.decoder.bias": "cls.predictions.bias",
    }


class BertModel(PreTrainedModel):
    """BERT encoder with one head per task.

    Tasks and outputs (`logits`):
      base            last hidden states (B, T, H), as every family; `pooler_output` (B, H)
      pretraining     MLM logits (B, T, V) + `seq_relationship_logits` (B, 2); loss = MLM + NSP (those given)
      lm              MLM logits (B, T, V)

    `sparse_logits=True` (lm/pretraining, with labels) computes the MLM head only where labels != -100 and
    returns those logits as (N, V), in row-major order of the labelled positions (`logits[i]` belongs to
    `labels[labels != -100][i]`). The loss is the same; the step is cheaper, because the vocabulary projection
    is the biggest matmul of a BERT step and only ~15% of positions carry a loss (sparse prediction, as
    MosaicBERT does). Training uses it; the default keeps the full (B, T, V) logits of transformers.
      classification  (B, num_labels)
      qa              (B, T, 2) start/end logits; `labels` (B, 2)
      token_classification  (B, T, num_labels), one tag per token; `labels` (B, T), -100 where no loss
    """

    family: ClassVar[str] = "bert"
    config_class: ClassVar[type[HFConfig]] = BertConfig
    architectures: ClassVar[dict[str, str]] = {
        "base": "BertModel",
        "pretraining": "BertForPreTraining",
        "lm": "BertForMaskedLM",
        "classification": "BertForSequenceClassification",
        "qa": "BertForQuestionAnswering",
        "token_classification": "BertForTokenClassification",
    }
    base_prefix: ClassVar[str] = "bert."  # hf_io joins it to the key as is, so it carries the dot
    ignored_hf_keys: ClassVar[tuple[str, ...]] = (
        r"(bert\.)?embeddings\.position_ids",  # constant buffer saved by transformers < 4.31
        r"cls\.predictions\.decoder\.(weight|bias)",  # tied copies of the word embeddings / `cls.predictions.bias`
        # bert-base-* ship their MLM checkpoints with the pooler and NSP weights; dropped only when unused
        r"bert\.pooler\.dense\.(weight|bias)",
        r"cls\.seq_relationship\.(weight|bias)",
    )
    offset_positions: ClassVar[bool] = False

    def __init__(self, config: BertConfig, task: str = "base"):
        super().__init__(config, task)
        if task == "qa" and config.num_labels != 2:  # transformers sizes `qa_outputs` by num_labels
            raise ModelError(f"a qa model needs num_labels == 2 (start, end), not {config.num_labels}")
        self.embeddings = Embeddings(config, self.offset_positions)
        self.layers = nn.ModuleList([Layer(config) for _ in range(config.num_hidden_layers)])
        self.head = self._make_head(task)
        self.apply(self._init_weights)
        lm = self.head.predictions if task == "pretraining" else self.head
        if isinstance(lm, MaskedLMHead):
            lm.decoder.weight = self.embeddings.word.weight

    def _classifier_dropout(self) -> float:
        c = self.config
        return c.hidden_dropout_prob if c.classifier_dropout is None else c.classifier_dropout

    def _make_head(self, task: str) -> nn.Module:
        c = self.config
        if task == "base":
            return Pooler(c.hidden_size)
        if task == "pretraining":
            return PreTrainingHeads(c)
        if task == "lm":
            return MaskedLMHead(c, ACTIVATIONS[c.hidden_act])
        if task == "classification":
            return PooledClassifier(c, self._classifier_dropout())
        if task == "token_classification":  # transformers builds this one without the pooler
            return TokenClassifier(c.hidden_size, c.num_labels, self._classifier_dropout())
        return nn.Linear(c.hidden_size, 2)  # qa: start and end logits

    def _head_table(self) -> dict[str, str]:
        """Head params -> absolute checkpoint keys."""
        pooler = f"{self.hf_prefix(self.task)}pooler.dense"
        if self.task == "base":
            return _wb("head.dense", pooler)
        if self.task == "pretraining":
            return {
                **_wb("head.pooler.dense", pooler),
                **_bert_lm_table("head.predictions"),
                **_wb("head.seq_relationship", "cls.seq_relationship"),
            }
        if self.task == "lm":
            return _bert_lm_table("head")
        if self.task == "classification":
            return {**_wb("head.pooler.dense", pooler), **_wb("head.classifier", "classifier")}
        if self.task == "token_classification":
            return _wb("head.classifier", "classifier")
        return _wb("head", "qa_outputs")

    def _init_weights(self, m: nn.Module) -> None:
        """transformers' BERT init: N(0, initializer_range), zero biases and padding rows, unit LayerNorm."""
        std = self.config.initializer_range
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                nn.init.zeros_(m.weight[m.padding_idx])
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def hf_weight_table(self) -> dict[str, str]:
        table = {
            "embeddings.word.weight": "embeddings.word_embeddings.weight",
            "embeddings.position.weight": "embeddings.position_embeddings.weight",
            "embeddings.token_type.weight": "embeddings.token_type_embeddings.weight",
            **_wb("embeddings.norm", "embeddings.LayerNorm"),
        }
        for i in range(self.config.num_hidden_layers):
            ours, hf = f"layers.{i}", f"encoder.layer.{i}"
            table |= {
                **_wb(f"{ours}.query", f"{hf}.attention.self.query"),
                **_wb(f"{ours}.key", f"{hf}.attention.self.key"),
                **_wb(f"{ours}.value", f"{hf}.attention.self.value"),
                **_wb(f"{ours}.attn_out", f"{hf}.attention.output.dense"),
                **_wb(f"{ours}.attn_norm", f"{hf}.attention.output.LayerNorm"),
                **_wb(f"{ours}.ffn_in", f"{hf}.intermediate.dense"),
                **_wb(f"{ours}.ffn_out", f"{hf}.output.dense"),
                **_wb(f"{ours}.ffn_norm", f"{hf}.output.LayerNorm"),
            }
        return table | self._head_table()

    def encode(self, input_ids, attention_mask=None, *, token_type_ids=None, position_ids=None) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, H)
        mask = attention_mask_4d(attention_mask)
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        sparse_logits: bool = False,
    ) -> ModelOutput:
        if next_sentence_label is not None and self.task != "pretraining":
            raise ModelError(f"next_sentence_label needs task 'pretraining', not {self.task!r}")
        if labels is not None and self.task == "base":
            raise ModelError("task 'base' has no loss; labels need a head task such as 'lm' or 'classification'")
        keep = None
        if sparse_logits:
            if labels is None or self.task not in ("lm", "pretraining"):
                raise ModelError("sparse_logits needs labels and task 'lm' or 'pretraining'")
            keep = labels != -100
            labels = labels[keep]
        h = self.encode(input_ids, attention_mask, token_type_ids=token_type_ids, position_ids=position_ids)
        if self.task == "pretraining":
            logits, nsp = self.head(h, keep)
            losses = []
            if labels is not None:
                losses.append(lm_loss(logits, labels))
            if next_sentence_label is not None:
                losses.append(F.cross_entropy(nsp.float(), next_sentence_label.view(-1)))
            loss = sum(losses) if losses else None
            return BertOutput(logits, loss, last_hidden_state=h, seq_relationship_logits=nsp)
        if self.task == "base":
            return BertOutput(h, last_hidden_state=h, pooler_output=self.head(h))
        logits = self.head(h if keep is None else h[keep])
        loss = None
        if labels is not None:
            loss = {"lm": lm_loss, "classification": classification_loss, "qa": span_loss,
                    "token_classification": token_loss}[self.task](logits, labels)
        return ModelOutput(logits, loss, last_hidden_state=h)


class RobertaModel(BertModel):
    """RoBERTa: BERT's encoder with padding-offset positions, a gelu LM head and a [CLS]-token classifier."""

    family: ClassVar[str] = "roberta"
    config_class: ClassVar[type[HFConfig]] = RobertaConfig
    architectures: ClassVar[dict[str, str]] = {
        "base": "RobertaModel",
        "lm": "RobertaForMaskedLM",
        "classification": "RobertaForSequenceClassification",
        "qa": "RobertaForQuestionAnswering",
        "token_classification": "RobertaForTokenClassification",
    }
    base_prefix: ClassVar[str] = "roberta."
    ignored_hf_keys: ClassVar[tuple[str, ...]] = (
        r"(roberta\.)?embeddings\.position_ids",  # constant buffer saved by transformers < 4.31
        r"lm_head\.decoder\.(weight|bias)",  # tied copies of the word embeddings / `lm_head.bias`
        r"roberta\.pooler\.dense\.(weight|bias)",  # roberta-base's MLM checkpoint carries an unused pooler
    )
    offset_positions: ClassVar[bool] = True

    def _make_head(self, task: str) -> nn.Module:
        c = self.config
        if task == "lm":  # RoBERTa's LM head uses gelu whatever hidden_act says
            return MaskedLMHead(c, F.gelu)
        if task == "classification":
            return FirstTokenClassifier(c.hidden_size, c.num_labels, self._classifier_dropout())
        return super()._make_head(task)

    def _head_table(self) -> dict[str, str]:
        if self.task == "lm":
            return {
                **_wb("head.dense", "lm_head.dense"),
                **_wb("head.norm", "lm_head.layer_norm"),
                "head.decoder.bias": "lm_head.bias",
            }
        if self.task == "classification":
            return {**_wb("head.dense", "classifier.dense"), **_wb("head.out_proj", "classifier.out_proj")}
        return super()._head_table()
