"""Task heads and losses shared by the families.

Conventions (the forward contract of every family):
- classification: `logits` (B, num_labels); `labels` (B,) class ids, or floats when num_labels == 1 (regression).
- qa (span extraction): `logits` (B, T, 2) with start logits in [..., 0] and end logits in [..., 1];
  `labels` (B, 2) holding the start and end token index of the answer.
- lm: `logits` (B, T, vocab); `labels` use -100 for positions that carry no loss.
- token_classification (tagging, e.g. NER): `logits` (B, T, num_labels); `labels` (B, T) tag ids, -100 where
  a position carries no loss (special tokens, padding, a word's second and later sub-tokens).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClassifierHead(nn.Module):
    """dropout -> dense -> tanh -> dropout -> out_proj, as RoBERTa and T5 classify (names match their checkpoints)."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.dense(self.dropout(x)))
        return self.out_proj(self.dropout(x))


class TokenClassifier(nn.Module):
    """dropout -> classifier over every token's hidden state: BERT/RoBERTa/XLNet `...ForTokenClassification`
    (`classifier` is the checkpoint name in all three)."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(h))  # (B, T, num_labels)


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The hidden state (B, H) of each row's last real token; right padding assumed unless the mask says left."""
    if attention_mask is None:
        return hidden[:, -1]
    # Position of the last 1 in each row works for left and right padding alike.
    T = attention_mask.shape[1]
    idx = T - 1 - attention_mask.flip(1).to(torch.long).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def span_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of start and end cross-entropies; answer positions outside the sequence are ignored (clamped to T)."""
    T = logits.shape[1]
    labels = labels.clamp(0, T)
    start = F.cross_entropy(logits[..., 0], labels[:, 0], ignore_index=T)
    end = F.cross_entropy(logits[..., 1], labels[:, 1], ignore_index=T)
    return (start + end) / 2


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not -100 (transformers' token classification)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


def decoder_outputs(model, h: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    labels: torch.Tensor | None, logits_to_keep: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits and loss of a decoder-only family's heads (GPT-2, Llama) over its final hidden states (B, T, C):

    base -> the hidden states; lm -> next-token logits, of the last `logits_to_keep` positions only when > 0
    (decoding needs one, and the head is a prompt's largest matmul), lm labels being the inputs themselves,
    shifted here; classification -> the last real token's class logits, as Hugging Face finds it (the last
    token that is not pad_token_id; the mask says the same when given); qa -> start/end logits (B, T, 2).
    """
    loss = None
    if model.task == "base":
        return h, None
    if model.task == "lm":
        logits = model.head(h[:, -logits_to_keep:] if logits_to_keep else h)  # (B, T or logits_to_keep, vocab)
        if labels is not None:
            # Token t predicts token t+1: shift the labels, not the (much larger) logits.
            loss = lm_loss(logits, F.pad(labels[:, 1:], (0, 1), value=-100))
    elif model.task == "classification":
        pool_mask = None if attention_mask is None else attention_mask[:, -h.shape[1]:]
        if pool_mask is None and model.config.pad_token_id is not None:
            pool_mask = input_ids != model.config.pad_token_id
        logits = model.head(last_token(h, pool_mask))  # (B, num_labels)
        if labels is not None:
            loss = classification_loss(logits, labels)
    else:  # qa
        logits = model.head(h)  # (B, T, 2)
        if labels is not None:
            loss = span_loss(logits, labels)
    return logits, loss

