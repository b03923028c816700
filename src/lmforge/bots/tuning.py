"""Fine-tuning MiniLM on a bot's examples, the Train button's option for bots with many examples: sentence
embeddings (mean-pooled, normalised) into a cosine-softmax head started from the intents' centroids,
cross-entropy. On CLINC150 it lifts in-scope accuracy and, more usefully, widens the gap between in-scope
and out-of-scope confidences (docs/results.md). The tuned encoder (about 42 MB in float16) is stored with
the bot's matcher, so the bot embeds questions with its own encoder."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .embed import MiniLMEmbedder

PREFIX = "enc:"  # the encoder's tensors in the matcher's npz


def tune(texts: list[str], labels: np.ndarray, epochs: int = 1, seed: int = 0, batch_size: int = 32,
         min_steps: int = 30, progress: Callable[[float], None] | None = None) -> MiniLMEmbedder:
    """An embedder whose MiniLM is fine-tuned on (texts, labels): AdamW (encoder 5e-5, head 1e-2), linear
    decay, `epochs` passes (at least `min_steps` steps, so small bots get some training)."""
    torch.manual_seed(seed)
    base = MiniLMEmbedder(batch_size=128)
    model, tok = base.load_fresh()
    n_classes = int(labels.max()) + 1
    y = torch.as_tensor(labels)
    v0 = torch.from_numpy(base.encode(texts))
    w = torch.nn.Parameter(F.normalize(torch.stack([v0[y == c].mean(0) for c in range(n_classes)]), dim=-1))
    per_epoch = (len(texts) + batch_size - 1) // batch_size
    steps = max(epochs * per_epoch, min_steps)
    opt = torch.optim.AdamW([{"params": model.parameters(), "lr": 5e-5}, {"params": [w], "lr": 1e-2}],
                            weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    model.train()
    step = 0
    while step < steps:
        for idx in torch.randperm(len(texts)).split(batch_size):
            b = tok([texts[j] for j in idx], padding=True, truncation=True, max_length=64)
            # model.embed runs without gradients (it is for inference): pool encode()'s states here instead
            hidden = model.encode(b["input_ids"], b["attention_mask"])  # (B, T, H)
            m = b["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            v = F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
            loss = F.cross_entropy(16 * v @ F.normalize(w, dim=-1).T, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step / steps)
            if step == steps:
                break
    model.eval()
    return MiniLMEmbedder(batch_size=128, model=model, tokenizer=tok)


def encoder_arrays(embedder: MiniLMEmbedder) -> dict[str, np.ndarray]:
    model, _ = embedder.load()
    return {PREFIX + k: v.detach().to(torch.float16).numpy() for k, v in model.state_dict().items()}


def encoder_from_arrays(arrays) -> MiniLMEmbedder | None:
    """The tuned embedder stored in a matcher's arrays, or None if it has none."""
    keys = [k for k in arrays if k.startswith(PREFIX)]
    if not keys:
        return None
    model, tok = MiniLMEmbedder().load_fresh()
    state = {k[len(PREFIX):]: torch.from_numpy(np.asarray(arrays[k], dtype=np.float32)) for k in keys}
    model.load_state_dict(state)
    return MiniLMEmbedder(model=model.eval(), tokenizer=tok)

