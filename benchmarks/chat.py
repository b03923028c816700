"""The bundled chat model (SmolLM2-135M-Instruct) on the CPU, side by side in one run, engines alternating:

1. single-stream greedy decode tokens/s, 128 tokens after a chat prompt, at 1 and 2 threads: lmforge at each
   `--quantize` setting (the `Batcher` the server runs), `transformers` (float32 and bf16, its GGUF loader
   dequantizes) and llama.cpp (`llama-cpp-python`) on the shipped Q4_1 file and on a Q8_0 file of the same
   weights written here with `gguf`'s quantizer (the precision class of lmforge's int8);
2. aggregate tokens/s of 16 concurrent streaming clients through the HTTP API (`lmforge serve` against
   `llama-cpp-python`'s OpenAI server, both driven by the official `openai` client);
3. the quality cost of each setting: perplexity on held-out public-domain text (the end of Treasure Island
   from ../shared/data), and how many of float32's greedy chat-answer tokens keep their argmax.

Decode rate = (tokens - 1) / (time of the last token - time of the first), so prompt processing is left out
for every engine alike; end of sequence is suppressed so that every run makes exactly --tokens tokens.

    python benchmarks/chat.py                                   # everything (about 10 minutes on 2 cores)
    python benchmarks/chat.py --threads 1 --repeats 1 --clients 0 --perplexity-tokens 0   # a quick look
    python benchmarks/chat.py --device cuda --engines lmforge-none,transformers-fp32      # on a GPU

llama-cpp-python is a benchmark-only dependency (pip install 'llama-cpp-python[server]', built from source
here: a few minutes); without it the llama.cpp rows are skipped with a note.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

import lmforge
from lmforge.chat_template import end_of_sequence_ids, template_for
from lmforge.generate import Batcher, SamplingParams
from lmforge.hub import CHAT_MODEL, resolve
from lmforge.models.quantize import quantize

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
HELD_OUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "gutenberg_children" / "pg120_treasure_island.txt"
ENGINES = ("lmforge-none", "lmforge-int8", "transformers-fp32", "transformers-bf16", "llamacpp-q8_0", "llamacpp-q4_1")


def decode_rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


# ------------------------------------------------------------------------------------------- engines


class LmforgeEngine:
    def __init__(self, model, tokenizer, device):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.stop_ids = end_of_sequence_ids(model, tokenizer, template_for(tokenizer, model.family))

    def run(self, ids: list[int], tokens: int) -> list[float]:
        bias = {i: -100.0 for i in self.stop_ids}  # exactly `tokens` tokens
        batcher = Batcher(self.model, self.tokenizer, self.stop_ids)
        batcher.add("0", ids, SamplingParams(max_tokens=tokens, temperature=0, logit_bias=bias))
        times = []
        while batcher.has_work:
            batcher.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter())
        return times[:tokens]


class TransformersEngine:
    def __init__(self, folder: Path, file: str, dtype, device):
        import transformers

        self.model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=dtype).to(device).eval()
        self.device = device
        self.streamer_base = transformers.generation.streamers.BaseStreamer

    def run(self, ids: list[int], tokens: int) -> list[float]:
        times: list[float] = []

        class Clock(self.streamer_base):
            def put(self, value):
                times.append(time.perf_counter())

            def end(self):
                pass

        x = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=tokens, min_new_tokens=tokens,
                                do_sample=False, streamer=Clock(), pad_token_id=0)
        return times[1:]  # the first put is the prompt


class LlamaCppEngine:
    def __init__(self, path: Path, threads: int):
        from llama_cpp import Llama

        self.llm = Llama(str(path), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
        self.eos = self.llm.token_eos()

    def run(self, ids: list[int], tokens: int) -> list[float]:
        self.llm.reset()
        times = []
        for _ in self.llm.create_completion(ids, max_tokens=tokens, temperature=0, stream=True,
                                            logit_bias={self.eos: -100.0}):
            times.append(time.perf_counter())
        return times


def write_q8_0(source: Path, target: Path) -> None:
    """The same weights as `source` in llama.cpp's Q8_0 (what `llama-quantize` would write from them):
    metadata copied, every quantized tensor dequantized and requantized by `gguf`'s own quantizer."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(target, arch)
    for name, f in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
            continue
        value, vtype = f.contents(), f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, value)
        else:
            writer.add_key_value(name, value, vtype)
    for t in reader.tensors:
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
            continue
        weights = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        q = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --------------------------------------------------------------------------------------- measurements


def single_stream(args, gguf_file: Path, q8_file: Path | None, ids: list[int]) -> list[dict]:
    device = torch.device(args.device)
    wanted = args.engines.split(",")
    if any(w.startswith("lmforge") for w in wanted):
        model, tok = lmforge.load(gguf_file)
        model.to(device)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        engines = {}
        if "lmforge-none" in wanted:
            engines["lmforge-none"] = LmforgeEngine(model, tok, device)
        if "lmforge-int8" in wanted and device.type == "cpu":
            from lmforge.models.quantize import calibration_text

            int8 = quantize(copy.deepcopy(model), "int8", tok.encode(calibration_text()))
            engines["lmforge-int8"] = LmforgeEngine(int8, tok, device)
        for name, dtype in (("transformers-fp32", torch.float32), ("transformers-bf16", torch.bfloat16)):
            if name in wanted:
                engines[name] = TransformersEngine(gguf_file.parent, gguf_file.name, dtype, device)
        for name, path in (("llamacpp-q8_0", q8_file), ("llamacpp-q4_1", gguf_file)):
            if name in wanted and path is not None and device.type == "cpu":
                engines[name] = LlamaCppEngine(path, threads)
        for engine in engines.values():  # warm-up: first calls allocate
            engine.run(ids, 8)
        rates: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.repeats):  # alternate, so that load from elsewhere falls on all alike
            for name, engine in engines.items():
                rates[name].append(decode_rate(engine.run(ids, args.tokens)))
        for name, r in rates.items():
            rows.append(dict(engine=name, threads=threads, tok_s=statistics.median(r), runs=r))
            print(f"  {threads} thread(s) {name:18s} {statistics.median(r):7.1f} tok/s  (runs: "
                  f"{', '.join(f'{x:.1f}' for x in r)})", flush=True)
        del engines
    return rows


QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "How many legs does a spider have?",
             "Give me three tips for better sleep.", "What is 12 times 7?", "Explain what a CPU does in one sentence.",
             "Translate 'good morning' into Spanish.", "Who was Albert Einstein?", "Name a primary colour.",
             "What is photosynthesis?"]


def quality(args, gguf_file: Path) -> list[dict]:
    """Each setting against float32: perplexity on the same held-out tokens (windows of `--window`), and on
    float32's own greedy answers to QUESTIONS the share of tokens whose argmax agrees and the mean KL."""
    if not HELD_OUT.is_file():
        print(f"  (skipped: {HELD_OUT} not found)")
        return []
    from lmforge.generate import generate
    from lmforge.models.quantize import calibration_text

    model, tok = lmforge.load(gguf_file)
    text = HELD_OUT.read_text(encoding="utf-8")
    ids = tok.encode(text[-200_000:], add_special_tokens=False)[-args.perplexity_tokens:]
    torch.set_num_threads(max(args.threads))
    template = template_for(tok, model.family)
    answers = []
    for q in QUESTIONS:
        prompt = template.render([{"role": "user", "content": q}])
        answer = generate(model, tok, prompt, SamplingParams(max_tokens=40, temperature=0))[0].token_ids
        answers.append(tok.encode(prompt) + answer[:-1])
    reference = []
    rows = []
    for setting in ("none", "int8"):
        m = quantize(copy.deepcopy(model), setting, tok.encode(calibration_text()))
        nll, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(ids) - 1, args.window):
                window = torch.tensor([ids[start:start + args.window + 1]])
                logits = m(window[:, :-1]).logits.float()
                nll += torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum").item()
                count += window.shape[1] - 1
            dists = [m(torch.tensor([a])).logits[0].float().log_softmax(-1) for a in answers]
        reference = reference or dists
        agree = sum((d.argmax(-1) == r.argmax(-1)).sum().item() for d, r in zip(dists, reference))
        kl = sum((r.exp() * (r - d)).sum().item() for d, r in zip(dists, reference))
        n = sum(len(a) for a in answers)
        rows.append(dict(setting=setting, tokens=count, perplexity=float(torch.tensor(nll / count).exp()),
                         agreement=agree / n, kl=kl / n))
        print(f"  lmforge {setting:5s} perplexity {rows[-1]['perplexity']:.3f} over {count} tokens; greedy chat "
              f"tokens agreeing with float32 {agree / n:.3f}, KL {kl / n:.4f} nats", flush=True)
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def clients(url: str, key: str, model: str, prompt: str, eos: int, n: int, tokens: int) -> tuple[float, int, int]:
    """n concurrent streaming completions of exactly `tokens` tokens each (end of sequence suppressed) of the
    chat prompt as text (llama-cpp-python's server takes no token ids); returns (wall seconds, tokens of the
    streams that completed, streams that failed)."""
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=600) as client:
        return await _clients(client, model, prompt, eos, n, tokens)


async def _clients(client, model: str, prompt: str, eos: int, n: int, tokens: int) -> tuple[float, int, int]:
    async def one():
        finish = None
        stream = await client.completions.create(model=model, prompt=prompt, max_tokens=tokens, temperature=0,
                                                 stream=True, logit_bias={str(eos): -100})
        async for chunk in stream:
            finish = next((c.finish_reason for c in chunk.choices if c.finish_reason), finish)
        if finish != "length":
            raise RuntimeError(f"a stream ended with {finish!r} before {tokens} tokens")
        return tokens

    start = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    done = [r for r in results if isinstance(r, int)]
    return time.perf_counter() - start, sum(done), n - len(done)


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the server on port {port} did not start")


def http_load(args, gguf_file: Path, q8_file: Path | None, ids: list[int]) -> list[dict]:
    """Each server in its own process, as a user runs it: `lmforge serve --quantize int8` and
    `python -m llama_cpp.server`, both at the largest --threads."""
    threads = max(args.threads)
    tok = lmforge.load_tokenizer(gguf_file)
    prompt, eos = tok.decode(ids, skip_special_tokens=False), tok.eos_token_id
    key = "lmf-benchmark-" + os.urandom(8).hex()
    rows = []
    servers = [("lmforge int8", CHAT_MODEL, lambda port, home: [
        sys.executable, "-m", "lmforge.cli", "serve", "--model", CHAT_MODEL, "--port", str(port), "--quantize", "int8"],
        {"LMFORGE_BOOTSTRAP_KEY": key, "LMFORGE_THREADS": str(threads)})]
    for label, path in (("llama.cpp Q8_0", q8_file), ("llama.cpp Q4_1", gguf_file)):
        if path is not None:
            servers.append((label, "x", lambda port, home, path=path: [
                sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--port", str(port), "--n_threads",
                str(threads), "--n_threads_batch", str(threads), "--n_ctx", "4096"], {}))
    for label, model, command, env in servers:
        port = free_port()
        with tempfile.TemporaryDirectory() as home:
            proc = subprocess.Popen(command(port, home), env={**os.environ, "LMFORGE_HOME": home, **env},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for_port(port, proc)
                for n in (1, args.clients):
                    wall, got, failed = asyncio.run(clients(f"http://127.0.0.1:{port}/v1", key, model, prompt, eos,
                                                            n, args.tokens))
                    rows.append(dict(server=label, clients=n, tok_s=got / wall, tokens=got, failed=failed))
                    print(f"  {label:15s} {n:3d} clients: {got / wall:7.1f} tok/s ({got} tokens in {wall:.1f} s"
                          f"{f', {failed} streams failed' if failed else ''})", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=128, help="tokens generated per run")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3, help="runs per engine; the median is reported")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (0: skip the HTTP part)")
    p.add_argument("--perplexity-tokens", type=int, default=4096, help="held-out tokens (0: skip perplexity)")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    gguf_file = resolve(CHAT_MODEL)
    tok = lmforge.load_tokenizer(gguf_file)
    ids = tok.encode(template_for(tok, "llama").render([{"role": "user", "content": PROMPT}]))
    try:
        import llama_cpp  # noqa: F401

        q8_file = Path(tempfile.mkdtemp()) / "SmolLM2-135M-Instruct.Q8_0.gguf"
        write_q8_0(gguf_file, q8_file)
    except ImportError:
        print("llama-cpp-python is not installed: the llama.cpp rows are skipped")
        q8_file = None
    print(f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}, prompt {len(ids)} tokens, "
          f"{args.tokens} generated")
    print("single stream, greedy:")
    single_stream(args, gguf_file, q8_file, ids)
    if args.perplexity_tokens:
        print("quality:")
        quality(args, gguf_file)
    if args.clients:
        print(f"HTTP, streaming, {max(args.threads)} threads:")
        http_load(args, gguf_file, q8_file, ids)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
