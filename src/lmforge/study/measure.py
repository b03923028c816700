"""The study's measurements of one pretrained model: what its architecture does (probed, not looked up),
what its objective lets a predicted token see, held-out likelihood, samples and their diversity, and cost.

Every number the report shows about a family is computed here or read from the run's own logs.
"""
from __future__ import annotations

import math
import re
import time
from collections import Counter
from contextlib import contextmanager
from itertools import pairwise

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ..models import ModelError

# ------------------------------------------------------------------ architecture, by probing


@torch.no_grad()
def dependency(fn, ids: torch.Tensor, vocab: list[int], seed: int = 0) -> np.ndarray:
    """(T_out, T_in) bool: whether output position i changes when input token j is replaced.

    `fn(ids) -> (1, T_out, D)`. Replacing one token at a time and diffing the outputs measures the
    attention pattern the model actually computes (causal masks, bidirectional encoders, caches…)."""
    g = torch.Generator().manual_seed(seed)
    base = fn(ids)
    T = ids.shape[1]
    dep = np.zeros((base.shape[1], T), dtype=bool)
    for j in range(T):
        changed = ids.clone()
        choices = [v for v in vocab if v != int(ids[0, j])]
        changed[0, j] = choices[int(torch.randint(len(choices), (1,), generator=g))]
        diff = (fn(changed) - base).abs().amax(-1)[0]  # (T_out,)
        dep[:, j] = (diff > 1e-5 * (1 + base.abs().amax())).numpy()
    return dep


def pattern(dep: np.ndarray) -> str:
    """A name for a measured (T, T) dependency matrix."""
    T = dep.shape[0]
    lower = np.tril(np.ones((T, T), dtype=bool))
    if dep.all():
        return "bidirectional"
    if (dep == lower).all() or (dep == np.tril(lower, -1)).all():  # the query stream never sees its own token
        return "causal"
    if not dep[~lower].any():
        return "causal (partly)"
    return f"mixed ({dep.mean():.0%} of pairs)"


def probe_architecture(model, tokenizer, length: int = 12, seed: int = 0) -> dict:
    """Layout, attention pattern (measured), positions and sizes of a model with its pretraining head."""
    model.eval()
    specials = set(tokenizer.all_special_ids)
    vocab = [i for i in range(min(tokenizer.vocab_size, 400)) if i not in specials][:200]
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[vocab[int(k)] for k in torch.randint(len(vocab), (length,), generator=g)]])
    out: dict = {}
    if model.family == "t5":
        enc = lambda x: model.encode(x)
        dec = lambda x: model(ids, decoder_input_ids=x).logits
        cross = lambda x: model(x, decoder_input_ids=ids).logits
        out["layout"] = "encoder-decoder"
        e, d, c = pattern(dependency(enc, ids, vocab)), pattern(dependency(dec, ids, vocab)), \
            pattern(dependency(cross, ids, vocab))
        out["attention"] = f"encoder {e}; decoder {d} over its own tokens, {_cross(c)} over the encoder's"
    else:
        fn = lambda x: model(x).logits
        a = pattern(dependency(fn, ids, vocab))
        out["layout"] = "decoder-only" if a == "causal" else "encoder-only"
        out["attention"] = a
        if model.family == "xlnet":
            # The query stream under a left-to-right factorization order: XLNet's autoregressive side.
            T = ids.shape[1]
            perm = torch.triu(torch.ones(T, T), 0)[None]  # i may not see j >= i
            mapping = torch.eye(T)[None, 1:]  # position 0 has nothing to attend to; predict 1..T-1
            q = lambda x: model(x, perm_mask=perm, target_mapping=mapping).logits
            dep = np.concatenate([np.zeros((1, T), dtype=bool), dependency(q, ids, vocab)])
            out["layout"] = "encoder-only (two streams)"
            out["attention"] = f"content stream {a}; query stream {pattern(dep)} " \
                               "under a left-to-right order (any order under perm_mask)"
    names = dict(model.named_parameters())
    emb = sum(p.numel() for n, p in names.items() if _is_embedding(n, p, model.config.vocab_size))
    out["parameters"] = model.num_parameters()
    out["embedding_parameters"] = emb
    out["positions"] = _positions(model)
    out["vocab_size"] = model.config.vocab_size
    return out


def _cross(name: str) -> str:
    return "all positions" if name == "bidirectional" else name


def _is_embedding(name: str, p, vocab: int) -> bool:
    return p.ndim == 2 and (p.shape[0] == vocab or ("pos" in name and "embed" in name) or name.endswith("wpe.weight")
                            or "position" in name)


def _positions(model) -> str:
    """How the model encodes position, read off its parameters."""
    for name, module in model.named_modules():
        if name.endswith("relative_attention_bias"):
            return f"relative buckets ({module.num_embeddings} buckets, learned bias per head)"
    names = [n for n, _ in model.named_parameters()]
    if any(n.endswith("r_w_bias") for n in names):
        return "relative sinusoidal (content, position and segment terms)"
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) and ("position" in name or name.endswith("wpe")):
            return f"learned absolute ({module.num_embeddings} positions)"
    return "none found"


# ------------------------------------------------------------------ what a predicted token sees


def visibility(family: str, objective, tokenizer, block_size: int, blocks: int = 16, seed: int = 0) -> dict:
    """Measured on a batch the family's own objective builds: the share of positions that carry a loss,
    and for a predicted token the share of the tokens to its left and to its right it can use."""
    from ..objectives.base import Blocks
    from ..objectives.span_corruption import random_spans_noise_mask

    rng = np.random.default_rng(seed)
    specials = set(tokenizer.all_special_ids)
    vocab = np.array([i for i in range(tokenizer.vocab_size) if i not in specials])
    L = block_size
    ids = vocab[rng.integers(len(vocab), size=(blocks, L))]
    left, right, share = [], [], []
    if family == "t5":
        # Span corruption: a noise token is predicted by the decoder, which sees the whole corrupted input
        # (every kept token, both sides) and the noise tokens before it (its own earlier outputs).
        for _ in range(blocks):
            noise = random_spans_noise_mask(L, rng, objective.noise_density, objective.mean_noise_span_length)
            share.append(noise.mean())
            for i in np.flatnonzero(noise):
                if i > 0:
                    left.append(1.0)
                if i < L - 1:
                    right.append((~noise[i + 1:]).mean())
        return _vis(share, left, right)
    batch = objective(Blocks(ids, np.full(blocks, L), np.arange(blocks)))
    labels = batch["labels"]
    if family == "gpt2":
        for b in range(blocks):
            share.append(float((labels[b] != -100).float().mean()) * (L - 1) / L)  # the last token predicts nothing
            left += [1.0] * (L - 1)
            right += [0.0] * (L - 1)
    elif family in ("bert", "roberta"):
        inputs = batch["input_ids"]
        mask_id = tokenizer.mask_token_id
        for b in range(blocks):
            target = (labels[b] != -100).numpy()
            hidden = (inputs[b] == mask_id).numpy()  # what the model cannot read (10% random, 10% kept are read)
            share.append(target.mean())
            for i in np.flatnonzero(target):
                if i > 0:
                    left.append(1 - hidden[:i].mean())
                if i < L - 1:
                    right.append(1 - hidden[i + 1:].mean())
    elif family == "xlnet":
        perm, mapping = batch["perm_mask"], batch["target_mapping"]
        for b in range(blocks):
            targets = mapping[b].argmax(-1)[mapping[b].sum(-1) > 0].tolist()
            share.append(len(targets) / L)
            for i in targets:
                sees = (perm[b, i] == 0).numpy()
                if i > 0:
                    left.append(sees[:i].mean())
                if i < L - 1:
                    right.append(sees[i + 1:].mean())
    else:
        raise ModelError(f"no visibility measurement for {family}")
    return _vis(share, left, right)


def _vis(share, left, right) -> dict:
    return {"loss_share": float(np.mean(share)), "left_visible": float(np.mean(left)) if left else 0.0,
            "right_visible": float(np.mean(right)) if right else 0.0}


# ------------------------------------------------------------------ held-out likelihood


@torch.no_grad()
def heldout_likelihood(model, tokenizer, text: str, block_size: int, batch: int = 8) -> dict | None:
    """Perplexity per token and bits per character of `text`, for the families whose pretraining defines a
    left-to-right likelihood: GPT-2 (causal LM) and XLNet (its permutation LM under the identity order).

    The text is tokenized once and cut into chunks of block_size - 1 tokens, each read after one start token,
    so every token of the text is scored exactly once and bits per character divide by len(text) exactly."""
    if model.family not in ("gpt2", "xlnet"):
        return None
    model.eval()
    ids = tokenizer.encode(text, add_special_tokens=False)
    if model.family == "gpt2":
        start = tokenizer.eos_token_id
    else:
        start = tokenizer.token_to_id("<eod>")
        start = start if start is not None else tokenizer.sep_token_id
    n = block_size - 1
    chunks = [ids[i:i + n] for i in range(0, len(ids), n)]
    total, count = 0.0, 0
    for k in range(0, len(chunks), batch):
        group = chunks[k:k + batch]
        T = max(len(c) for c in group) + 1
        x = torch.full((len(group), T), start, dtype=torch.long)
        mask = torch.zeros_like(x)
        for r, c in enumerate(group):
            x[r, 1:len(c) + 1] = torch.tensor(c)
            mask[r, :len(c) + 1] = 1
        if model.family == "gpt2":
            logits = model(x, attention_mask=mask).logits[:, :-1]  # position t predicts t + 1
            target, keep = x[:, 1:], mask[:, 1:].bool()
        else:
            perm = torch.triu(torch.ones(T, T), 0).expand(len(group), T, T).clone()  # i sees j < i only
            mapping = torch.eye(T)[1:].expand(len(group), T - 1, T)  # predict positions 1..T-1
            logits = model(x, attention_mask=mask, perm_mask=perm, target_mapping=mapping).logits
            target, keep = x[:, 1:], mask[:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
        total += float(nll[keep].sum())
        count += int(keep.sum())
    return {"perplexity": math.exp(total / count), "bits_per_char": total / math.log(2) / len(text),
            "tokens": count, "chars": len(text)}


# ------------------------------------------------------------------ samples


def sample(model, tokenizer, prompt: str, max_tokens: int, seed: int, temperature: float = 0.8,
           top_k: int = 40) -> tuple[str, int, str]:
    """(continuation, tokens generated, method). GPT-2, XLNet and T5 use lmforge.generate; BERT and RoBERTa,
    which it refuses, extend the text by appending a mask token and sampling it, one token at a time."""
    from ..generate import SamplingParams, generate

    if model.family in ("gpt2", "xlnet", "t5"):
        text = prompt
        method = {"gpt2": "left-to-right with KV cache (lmforge.generate)",
                  "xlnet": "left-to-right via an appended query-stream placeholder (lmforge.generate)",
                  "t5": "decoder fills a sentinel placed after the prompt (lmforge.generate)"}[model.family]
        if model.family == "t5":
            text = f"{prompt} <extra_id_0>"
        # Special tokens (end of text, sentinels, separators) are banned, as in the mask-filling loop below:
        # every family writes max_tokens tokens of text, so the diversity measures compare equal lengths.
        ban = {i: -100.0 for i in tokenizer.all_special_ids}
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_k=top_k, seed=seed, logit_bias=ban)
        choice = generate(model, tokenizer, text, params)[0]
        out = choice.text
        return _strip_sentinels(out), len(choice.token_ids), method
    return _mask_fill(model, tokenizer, prompt, max_tokens, seed, temperature, top_k), max_tokens, \
        "append a mask token and sample it, repeatedly (not what MLM trains)"


@torch.no_grad()
def _mask_fill(model, tokenizer, prompt, max_tokens, seed, temperature, top_k) -> str:
    g = torch.Generator().manual_seed(seed)
    ids = tokenizer.encode(prompt)  # [CLS] … [SEP] / <s> … </s>
    body, end = ids[:-1], ids[-1:]
    specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    new = []
    for _ in range(max_tokens):
        x = torch.tensor([body + new + [tokenizer.mask_token_id] + end])
        logits = model(x).logits[0, -2].float()
        logits[specials] = -float("inf")
        logits = logits / temperature
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits[logits < kth] = -float("inf")
        new.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=g)))
    return tokenizer.decode(new)


def _strip_sentinels(text: str) -> str:
    return re.sub(r"\s*<extra_id_\d+>\s*", " ", text).strip()


def words(text: str) -> list[str]:
    return text.lower().split()


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams over all samples / all n-grams (Li et al. 2016), on lower-cased words."""
    grams = [tuple(w[i:i + n]) for w in map(words, texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: list[str], n: int = 4) -> float:
    """seq-rep-n (Welleck et al. 2019): per sample 1 - unique n-grams / n-grams, averaged over samples."""
    rates = []
    for w in map(words, texts):
        grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return float(np.mean(rates)) if rates else 0.0


def lex(text: str) -> list[str]:
    """Lower-cased words and punctuation marks as separate tokens (the fluency model's units)."""
    return re.findall(r"[a-z0-9']+|[^\sa-z0-9']", text.lower())


class BigramLM:
    """Interpolated Kneser-Ney bigram model over `lex` tokens (Chen & Goodman 1998, one discount d).

    The study's fluency judge: fitted on the corpus's training split, it is none of the five families and the
    same for all of them, and it scores text, not tokens, so every family's samples are judged alike. A
    bigram model rewards the corpus's local word order and punctuation ("to be", "my lord ,") and punishes
    word salad and stuttering ("the the", ", : ,"). It does not see beyond one word: long-range sense, and
    repetition of whole phrases (seq-rep-4 measures that), escape it. Unseen words share one unknown slot."""

    def __init__(self, text: str, d: float = 0.75):
        toks = lex(text)
        self.d = d
        self.pairs = Counter(pairwise(toks))
        self.count = Counter(toks[:-1])  # c(v): v as a context
        self.followers = Counter(v for v, _ in self.pairs)  # N1+(v •)
        preceders = Counter(w for _, w in self.pairs)  # N1+(• w)
        # Continuation probability, add-one over the vocabulary plus one unknown slot so no token has p = 0.
        self.types = len(set(toks)) + 1
        self.cont = {w: (n + 1) / (len(self.pairs) + self.types) for w, n in preceders.items()}
        self.unseen = 1 / (len(self.pairs) + self.types)

    def prob(self, v: str, w: str) -> float:
        cont = self.cont.get(w, self.unseen)
        c = self.count.get(v, 0)
        if not c:
            return cont
        return max(self.pairs.get((v, w), 0) - self.d, 0) / c + self.d * self.followers[v] / c * cont

    def perplexity(self, texts: list[str], contexts: list[str] | None = None) -> float:
        """Per-token perplexity of `texts`; each text's first token is conditioned on the last token of its
        context (the prompt it continues), or scored by its continuation probability alone."""
        nll, n = 0.0, 0
        for i, text in enumerate(texts):
            toks = lex(text)
            prev = (lex(contexts[i]) if contexts else [])[-1:] or [None]  # None: no context, p = cont(w)
            for v, w in zip(prev + toks, toks):
                nll -= math.log(self.prob(v, w))
                n += 1
        return math.exp(nll / n) if n else float("nan")


def prompts_from(text: str, count: int, words_per_prompt: int = 6) -> list[str]:
    """`count` prompts: the first words of evenly spaced lines of the held-out text."""
    lines = [ln.strip() for ln in text.splitlines() if len(ln.split()) >= words_per_prompt]
    if not lines:
        lines = [text.strip()] if text.strip() else ["The"]
    step = max(1, len(lines) // count)
    return [" ".join(lines[i].split()[:words_per_prompt]) for i in range(0, step * count, step)][:count]


# ------------------------------------------------------------------ cost

# FlopCounterMode counts scaled_dot_product_attention's CUDA kernels but not the CPU one (torch 2.13); the same
# formulas, by the argument shapes the CPU kernel shares with them, count it.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda grad, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad, q, k, v),
}


@contextmanager
def one_cpu_thread(device: torch.device):
    """Batch-1 latency on CPU at one thread: for models this small, extra threads only add synchronisation, and on
    a shared machine a second thread waiting for a busy core inflated a 3 ms forward pass to 200 ms (measured)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def forward_latency(model, batch: dict, reps: int) -> float:
    """Median seconds of one forward pass (after one warm-up)."""
    model.eval()
    model(**batch)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        model(**batch)
        if batch["input_ids"].is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def training_step_cost(model, batch: dict, train_kwargs: dict | None = None) -> dict:
    """What one training step costs, independently of the machine: bytes of the weights, bytes of the activations
    it keeps for the backward pass (every tensor autograd saves, counted as it is saved), and its floating-point
    operations (FlopCounterMode: matmuls and attention, forward and backward). Plus CUDA's peak where there is one."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    saved = {"bytes": 0}
    seen: set = set()

    def pack(t):
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key not in seen and t.numel():
            seen.add(key)
            saved["bytes"] += t.numel() * t.element_size()
        return t

    model.train()
    cuda = batch["input_ids"].is_cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    flops = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
    with flops, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch, **(train_kwargs or {})).loss
        loss.backward()
    model.zero_grad(set_to_none=True)
    model.eval()
    out = {"weights_bytes": weights, "activation_bytes": saved["bytes"], "train_flops": flops.get_total_flops()}
    if cuda:
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    return out
