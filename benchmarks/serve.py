"""Serving speed, in one run, on GPT-2-small-sized (124M) random weights shared by both implementations:

1. single-stream greedy decode tokens/s, lmforge's engine (the `Batcher` the server runs) against
   `transformers`' `generate`, float32 and bf16, and the fraction of the memory-bandwidth roofline reached:
   tokens/s x bytes of weights read per token / measured read bandwidth;
2. total tokens/s with 16 concurrent streaming clients against 1, through the HTTP server and the
   official `openai` client;
3. p50 / p99 time to first token under that load.

    python benchmarks/serve.py                          # CPU or the first GPU, defaults below
    python benchmarks/serve.py --tokens 128 --device cuda --precisions float32 bf16
    python benchmarks/serve.py --size tiny --tokens 16 --clients 4    # a quick end-to-end check
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers

from lmforge.generate import Batcher, SamplingParams
from lmforge.models import load_model

DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}
SIZES = {"124m": {}, "tiny": dict(n_layer=2, n_embd=128, n_head=4)}  # GPT2Config overrides; 124m is the default


class IdTokenizer:
    """Ids in, no text out: the benchmark measures decoding, and random weights make no readable text."""

    eos_token_id = None
    pad_token_id = None

    def encode(self, text):
        return [int(t) for t in text.split()]

    def decode(self, ids, skip_special_tokens=True):
        return ""

    def __call__(self, *a, **k):
        raise NotImplementedError


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def read_bandwidth(device, dtype) -> float:
    """Bytes/s of a large reduction: what streaming the weights once per token can at best achieve."""
    n = (1 << 28) if device.type == "cuda" else (1 << 26)
    x = torch.ones(n, dtype=dtype, device=device)
    x.sum()
    sync(device)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        x.sum()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return n * x.element_size() / best


def weight_bytes_per_token(model) -> int:
    """Every parameter is read once per decoded token, except the position table (one row)."""
    total = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if "wpe" not in name)
    return total + model.transformer.wpe.weight[0].numel() * model.transformer.wpe.weight.element_size()


def decode_ours(model, prompt, tokens) -> float:
    b = Batcher(model, IdTokenizer())
    b.add("x", prompt, SamplingParams(max_tokens=tokens, temperature=0))
    sync(model.device)
    t = time.perf_counter()
    while b.has_work:
        b.step()
    sync(model.device)
    return tokens / (time.perf_counter() - t)


def decode_hf(model, prompt, tokens) -> float:
    ids = torch.tensor([prompt], device=model.device)
    sync(model.device)
    t = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, min_new_tokens=tokens,
                   do_sample=False, pad_token_id=0)
    sync(model.device)
    return tokens / (time.perf_counter() - t)


def single_stream(folder, device, precision, tokens, repeats) -> dict:
    dtype = DTYPES[precision]
    ours = load_model(folder, dtype=dtype).to(device).eval()
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder, torch_dtype=dtype).to(device).eval()
    prompt = list(range(1, 17))
    with torch.no_grad():
        decode_ours(ours, prompt, 4), decode_hf(hf, prompt, 4)  # warm up
        a = max(decode_ours(ours, prompt, tokens) for _ in range(repeats))
        b = max(decode_hf(hf, prompt, tokens) for _ in range(repeats))
    bw = read_bandwidth(device, dtype)
    per_token = weight_bytes_per_token(ours)
    del hf
    return dict(precision=precision, ours=a, hf=b, roofline_ours=a * per_token / bw, roofline_hf=b * per_token / bw,
                bandwidth=bw, weights=per_token)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def clients(url, key, n, tokens) -> tuple[float, list[float], int]:
    import openai

    client = openai.AsyncOpenAI(api_key=key, base_url=url, max_retries=0, timeout=600)

    async def one(i):
        t0 = time.perf_counter()
        first, count = None, 0
        stream = await client.completions.create(model="gpt2", prompt=[1 + i, 2, 3, 4, 5, 6, 7, 8],
                                                 max_tokens=tokens, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}, logit_bias={"0": -100})
        async for chunk in stream:
            if first is None and chunk.choices:
                first = time.perf_counter() - t0
            if chunk.usage:
                count = chunk.usage.completion_tokens
        return first, count

    t = time.perf_counter()
    results = await asyncio.gather(*[one(i) for i in range(n)])
    elapsed = time.perf_counter() - t
    await client.close()
    return sum(c for _, c in results) / elapsed, [f for f, _ in results], sum(c for _, c in results)


def concurrent(folder, device, tokens, n_clients) -> dict:
    import uvicorn

    from lmforge.serve import Settings, create_app
    from lmforge.serve.auth import create_key
    from lmforge.serve.served import serve_model

    model = load_model(folder).to(device).eval()
    # the server decodes ids into text: a byte-level tokenizer over the first 256 ids is enough to stream
    tok = IdTokenizer()
    tok.decode = lambda ids, skip_special_tokens=True: "".join(chr(32 + i % 90) for i in ids)
    home = tempfile.mkdtemp()
    settings = Settings(home=home, port=free_port(), max_batch_rows=64)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, [serve_model(model, tok, "gpt2")]),
                                           host="127.0.0.1", port=settings.port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    _, key = create_key(server.config.app.state.lmforge.db, "bench")
    url = f"http://127.0.0.1:{settings.port}/v1"
    try:
        asyncio.run(clients(url, key, 1, 4))  # warm up
        one, ttft1, _ = asyncio.run(clients(url, key, 1, tokens))
        many, ttfts, _ = asyncio.run(clients(url, key, n_clients, tokens))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    q = statistics.quantiles(ttfts, n=100, method="inclusive")
    return dict(one=one, many=many, ttft1=ttft1[0], p50=statistics.median(ttfts), p99=q[98], clients=n_clients)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precisions", nargs="+", default=["float32", "bf16"], choices=list(DTYPES))
    ap.add_argument("--tokens", type=int, default=None, help="tokens per stream (default 256 on GPU, 32 on CPU)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", choices=list(SIZES), default="124m", help="GPT-2 size (tiny: a quick check)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    tokens = args.tokens or (256 if device.type == "cuda" else 32)
    torch.manual_seed(0)
    folder = tempfile.mkdtemp()
    transformers.GPT2LMHeadModel(transformers.GPT2Config(**SIZES[args.size])).save_pretrained(folder)  # random

    print(f"device {device}{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}, "
          f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"\nsingle-stream greedy decode, GPT-2 {args.size}, {tokens} new tokens after 16 prompt tokens")
    print("| precision | lmforge tok/s | transformers tok/s | speed-up | lmforge roofline | transformers roofline |")
    print("|---|---|---|---|---|---|")
    rows = []
    for precision in args.precisions:
        r = single_stream(folder, device, precision, tokens, args.repeats)
        rows.append(r)
        print(f"| {precision} | {r['ours']:.1f} | {r['hf']:.1f} | {r['ours'] / r['hf']:.2f}x | "
              f"{r['roofline_ours']:.2f} | {r['roofline_hf']:.2f} |", flush=True)
    for r in rows:
        print(f"({r['precision']} roofline: tok/s x {r['weights'] / 1e6:.0f} MB of weights per token / "
              f"{r['bandwidth'] / 1e9:.1f} GB/s measured read bandwidth)")

    c = concurrent(folder, device, tokens, args.clients)
    print(f"\nHTTP server, streaming completions of {tokens} tokens, float32")
    print("| clients | total tok/s | speed-up | TTFT p50 | TTFT p99 |")
    print("|---|---|---|---|---|")
    print(f"| 1 | {c['one']:.1f} | 1.00x | {c['ttft1'] * 1000:.0f} ms | {c['ttft1'] * 1000:.0f} ms |")
    print(f"| {c['clients']} | {c['many']:.1f} | {c['many'] / c['one']:.2f}x | {c['p50'] * 1000:.0f} ms | "
          f"{c['p99'] * 1000:.0f} ms |")


if __name__ == "__main__":
    sys.exit(main())
