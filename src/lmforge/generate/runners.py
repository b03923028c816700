"""Family runners: each owns the batched model state (caches, masks) of the batcher's rows, in row order.

    prefill(prompts, repeats)  run several prompts in one padded forward pass; prompt i becomes repeats[i]
                               rows (its n choices or beams); returns the part and its next-token logits
    join(part)                 append a prefilled part's rows to the batch
    forward(tokens)            feed one new token per row; returns the next-token logits (rows, V)
    keep(index)                keep rows by index, in that order; an index may repeat (beam search
                               continues one beam as several)

Rows have different lengths. Padding never changes a row's result: caches are left-padded and masked keys
get zero attention weight, GPT-2 and Llama get explicit per-row position ids, and T5's and XLNet's relative
positions depend only on distances, which left padding does not change. So a batch gives each row the tokens it
would get alone (up to float rounding).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F


def _pad(t: torch.Tensor, length: int, dim: int, left: bool) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim) + ([missing, 0] if left else [0, missing])
    return F.pad(t, pad)


def _batch(prompts: list[list[int]], left: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (b, T) padded with 0 and their mask (b, T), 1 = real token."""
    T = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (T - len(p)) + p if left else p + [0] * (T - len(p)) for p in prompts], device=device)
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) if left else [1] * len(p) + [0] * (T - len(p))
                         for p in prompts], device=device)
    return ids, mask


def _first_used(mask: torch.Tensor) -> int:
    """The first column that some row does not mask: the ones before it are padding in every row."""
    return int(mask.any(0).nonzero()[0])


class _CausalRunner:
    """GPT-2 and Llama (Mistral, Qwen2): a KV cache per layer (B, nh, P, hs), a key mask (B, P) and each row's
    next position. The mask is handed to the model only while some row is padded: without it the model needs no
    mask at all (and checking an all-ones mask would cost a device sync every step). A sliding window counts
    cache positions; left padding and trimming leave each row's real tokens contiguous at the end, so a row sees
    the same keys as alone."""

    def __init__(self, model):
        self.model = model
        self.cache = self.mask = self.pos = None
        self.padded = False

    def prefill(self, prompts: list[list[int]], repeats: torch.Tensor):
        ids, mask = _batch(prompts, True, self.model.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(ids, mask, use_cache=True, position_ids=pos, logits_to_keep=1)
        cache = [tuple(t.repeat_interleave(repeats, 0) for t in kv) for kv in out.past_key_values]
        part = cache, mask.repeat_interleave(repeats, 0), (pos[:, -1] + 1).repeat_interleave(repeats, 0)
        return part, out.logits[:, -1].repeat_interleave(repeats, 0)

    def join(self, part) -> None:
        cache, mask, pos = part
        if self.cache is None:
            self.cache, self.mask, self.pos = cache, mask, pos
            self.padded = not bool(mask.all())
            return
        P = max(self.mask.shape[1], mask.shape[1])
        self.cache = [tuple(torch.cat([_pad(a, P, 2, True), _pad(b, P, 2, True)]) for a, b in zip(old, new))
                      for old, new in zip(self.cache, cache)]
        self.mask = torch.cat([_pad(self.mask, P, 1, True), _pad(mask, P, 1, True)])
        self.pos = torch.cat([self.pos, pos])
        self.padded = not bool(self.mask.all())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = F.pad(self.mask, (0, 1), value=1)  # (B, P + 1)
        out = self.model(tokens[:, None], self.mask if self.padded else None, past_key_values=self.cache,
                         use_cache=True, position_ids=self.pos[:, None], logits_to_keep=1)
        self.cache, self.pos = out.past_key_values, self.pos + 1
        return out.logits[:, -1]

    def keep(self, rows: torch.Tensor) -> None:
        if len(rows) == 0:
            self.cache = self.mask = self.pos = None
            return
        self.mask, self.pos = self.mask[rows], self.pos[rows]
        first = _first_used(self.mask)
        self.mask = self.mask[:, first:]
        self.padded = not bool(self.mask.all())
        self.cache = [tuple(t[rows, :, first:] for t in kv) for kv in self.cache]


class _Seq2SeqRunner:
    """T5: per layer (self k, self v, cross k, cross v); decoder key mask (B, P); encoder output and mask (B, S).
    Encoder states are right-padded (their positions are never extended), decoder caches left-padded."""

    def __init__(self, model):
        self.model = model
        self.cache = self.mask = self.enc = self.enc_mask = None

    def prefill(self, prompts: list[list[int]], repeats: torch.Tensor):
        ids, enc_mask = _batch(prompts, False, self.model.device)
        enc = self.model.encode(ids, enc_mask)  # (b, S, d_model)
        start = torch.full((len(prompts), 1), self.model.config.decoder_start_token_id, device=ids.device)
        out = self.model(None, enc_mask, decoder_input_ids=start, encoder_outputs=enc, use_cache=True)
        rep = lambda t: t.repeat_interleave(repeats, 0)
        cache = [tuple(rep(t) for t in layer) for layer in out.past_key_values]
        return (cache, rep(torch.ones_like(start)), rep(enc), rep(enc_mask)), rep(out.logits[:, -1])

    def join(self, part) -> None:
        cache, mask, enc, enc_mask = part
        if self.cache is None:
            self.cache, self.mask, self.enc, self.enc_mask = cache, mask, enc, enc_mask
            return
        P = max(self.mask.shape[1], mask.shape[1])
        S = max(self.enc_mask.shape[1], enc_mask.shape[1])
        self.cache = [
            (torch.cat([_pad(o[0], P, 2, True), _pad(n[0], P, 2, True)]),
             torch.cat([_pad(o[1], P, 2, True), _pad(n[1], P, 2, True)]),
             torch.cat([_pad(o[2], S, 2, False), _pad(n[2], S, 2, False)]),
             torch.cat([_pad(o[3], S, 2, False), _pad(n[3], S, 2, False)]))
            for o, n in zip(self.cache, cache)
        ]
        self.mask = torch.cat([_pad(self.mask, P, 1, True), _pad(mask, P, 1, True)])
        self.enc = torch.cat([_pad(self.enc, S, 1, False), _pad(enc, S, 1, False)])
        self.enc_mask = torch.cat([_pad(self.enc_mask, S, 1, False), _pad(enc_mask, S, 1, False)])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = F.pad(self.mask, (0, 1), value=1)
        out = self.model(None, self.enc_mask, decoder_input_ids=tokens[:, None], decoder_attention_mask=self.mask,
                         encoder_outputs=self.enc, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1]

    def keep(self, rows: torch.Tensor) -> None:
        if len(rows) == 0:
            self.cache = self.mask = self.enc = self.enc_mask = None
            return
        self.mask, self.enc_mask, self.enc = self.mask[rows], self.enc_mask[rows], self.enc[rows]
        first = _first_used(self.mask)
        last = int(self.enc_mask.any(0).nonzero()[-1]) + 1
        self.mask, self.enc_mask, self.enc = self.mask[:, first:], self.enc_mask[:, :last], self.enc[:, :last]
        self.cache = [(k[rows, :, first:], v[rows, :, first:], ck[rows, :, :last], cv[rows, :, :last])
                      for k, v, ck, cv in self.cache]


@contextmanager
def _whole_memory(config):
    """XLNet keeps only the last `mem_len` states in `mems` (and `reuse_len` cuts each segment, a pretraining
    setting); decoding needs them all, so both are switched off for the call."""
    saved = config.mem_len, config.reuse_len
    config.mem_len = config.reuse_len = None
    try:
        yield
    finally:
        config.mem_len, config.reuse_len = saved


class _MemsRunner:
    """XLNet in the left-to-right factorisation order, with Transformer-XL's segment recurrence (`mems`).

    XLNet predicts a token through its query stream: a placeholder appended after the context that no
    position may see (the XLNet paper's generation trick). Here each context token also sees only the tokens
    before it, the order 1, 2, ..., T that the permutation objective trains among all others. Then a token's
    states never change once computed, so each layer's states are kept as `mems` and every step feeds only
    [new token, placeholder]: the same logits as recomputing the whole context with that mask, at the cost of
    one token. (Letting every context token see every other, as Hugging Face's `generate` does, is no
    factorisation order the model was trained on, and no cache can be exact for it: an old token's states
    would change with each new one. HF's mems shortcut re-feeds the last two tokens and is approximate.)

    State: mems per layer (B, M, d_model) left-padded, and their mask (B, M).
    """

    def __init__(self, model):
        self.model = model
        self.mems = self.mask = None

    def _run(self, ids: torch.Tensor, mask: torch.Tensor, mems):
        """ids (B, T) ending in the placeholder; mask (B, M + T) over memory and ids."""
        B, T = ids.shape
        perm = torch.ones(T, T, device=ids.device).triu(1)  # token i does not see tokens after it
        perm[:, -1] = 1.0  # nor the placeholder, which does not see itself either
        target = F.one_hot(torch.full((B, 1), T - 1, device=ids.device), T).float()
        with _whole_memory(self.model.config):
            out = self.model(ids, mask, perm_mask=perm.expand(B, T, T), target_mapping=target, mems=mems,
                             use_mems=True)
        return [m[:, :-1] for m in out.mems], out.logits[:, 0]  # the placeholder's states are not kept

    def prefill(self, prompts: list[list[int]], repeats: torch.Tensor):
        ids, mask = _batch([p + [0] for p in prompts], True, self.model.device)
        mems, logits = self._run(ids, mask, None)
        rep = lambda t: t.repeat_interleave(repeats, 0)
        return ([rep(m) for m in mems], rep(mask[:, :-1])), rep(logits)

    def join(self, part) -> None:
        mems, mask = part
        if self.mems is None:
            self.mems, self.mask = mems, mask
            return
        M = max(self.mask.shape[1], mask.shape[1])
        self.mems = [torch.cat([_pad(a, M, 1, True), _pad(b, M, 1, True)]) for a, b in zip(self.mems, mems)]
        self.mask = torch.cat([_pad(self.mask, M, 1, True), _pad(mask, M, 1, True)])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = F.pad(tokens[:, None], (0, 1))  # (B, 2): the new token, the placeholder
        self.mems, logits = self._run(ids, F.pad(self.mask, (0, 2), value=1), self.mems)
        self.mask = F.pad(self.mask, (0, 1), value=1)
        return logits

    def keep(self, rows: torch.Tensor) -> None:
        if len(rows) == 0:
            self.mems = self.mask = None
            return
        self.mask = self.mask[rows]
        first = _first_used(self.mask)
        self.mask = self.mask[:, first:]
        self.mems = [m[rows, first:] for m in self.mems]


RUNNERS = {"gpt2": _CausalRunner, "llama": _CausalRunner, "t5": _Seq2SeqRunner, "xlnet": _MemsRunner}
