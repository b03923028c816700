"""Load test of `lmforge serve` on this machine (loopback only), in four phases:

1. 16 concurrent streaming clients for --seconds: failed requests, p50/p99 latency and time to first token,
   completion tokens/s;
2. the same with 64 clients;
3. 256 clients (for min(--seconds, 20) s): the server should refuse what it cannot serve in time (503 with
   Retry-After from the bounded queue) quickly, rather than queue everyone; reports the p99 of admitted
   requests and of refusals;
4. kill -9 of the server mid-load (16 non-streaming clients), restart on the same database, and a count of
   requests the server acknowledged (200 with usage) that are missing from the usage table (target 0).

    python benchmarks/load.py                 # 60 s per phase
    python benchmarks/load.py --seconds 15    # a shorter run

The server is `lmforge serve --model demo-gpt2` in a subprocess with a fresh LMFORGE_HOME; clients are
httpx (asyncio; 64 per process beyond 64), each sending one request after another with max_tokens --tokens.
Everything runs on this machine, clients included: on a small or shared one they compete with the server."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KEY = "lmf-loadtest-" + "x" * 32
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "LMFORGE_HOME": str(home), "LMFORGE_BOOTSTRAP_KEY": KEY, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT / "src"), **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", "--model", "demo-gpt2", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(home / f"server-{port}.log", "ab"))
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited; see {home}/server-{port}.log")
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the server did not start")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def stream_client(http: httpx.AsyncClient, until: float, tokens: int, out: dict) -> None:
    body = {"model": "demo-gpt2", "prompt": "The river", "max_tokens": tokens, "temperature": 0.8, "stream": True,
            "stream_options": {"include_usage": True}}
    while time.time() < until:
        start, first, status = time.perf_counter(), None, None
        try:
            async with http.stream("POST", "/v1/completions", json=body) as r:
                status = r.status_code
                if status != 200:
                    await r.aread()
                    out.setdefault("status", {}).setdefault(status, 0)
                    out["status"][status] += 1
                    try:
                        message = r.json()["error"]["message"]
                    except (ValueError, KeyError, TypeError):
                        message = ""
                    # at the door (too many in progress) or after waiting in the model's queue
                    kind = "door" if "in progress" in message else "queue" if "waited" in message else "other"
                    out.setdefault(f"refused_{kind}_s", []).append(time.perf_counter() - start)
                    retry = float(r.headers.get("retry-after", "1"))
                    await asyncio.sleep(min(retry, 1.0))
                    continue
                ok, why = False, "stream ended without [DONE]"
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        chunk = json.loads(line[6:])
                        if "error" in chunk:
                            why = f"error event: {chunk['error'].get('code')}"
                            break
                        if first is None and chunk.get("choices") and chunk["choices"][0].get("text"):
                            first = time.perf_counter() - start
                        if chunk.get("usage"):
                            out["tokens"] = out.get("tokens", 0) + chunk["usage"]["completion_tokens"]
                    elif line == "data: [DONE]":
                        ok = True
            if ok:
                out.setdefault("latency", []).append(time.perf_counter() - start)
                out.setdefault("ttft", []).append(first if first is not None else time.perf_counter() - start)
                out.setdefault("status", {}).setdefault(200, 0)
                out["status"][200] += 1
            else:
                out["failed"] = out.get("failed", 0) + 1
                out.setdefault("why", {}).setdefault(why, 0)
                out["why"][why] += 1
        except httpx.HTTPError as e:
            out["failed"] = out.get("failed", 0) + 1
            out.setdefault("why", {}).setdefault(type(e).__name__, 0)
            out["why"][type(e).__name__] += 1


async def _raw(url: str, clients: int, seconds: float, tokens: int) -> dict:
    out: dict = {}
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
                                 limits=limits) as http:
        await asyncio.gather(*(stream_client(http, time.time() + seconds, tokens, out) for _ in range(clients)))
    return out


def _raw_in_process(args) -> dict:
    return asyncio.run(_raw(*args))


def _merge(parts: list[dict]) -> dict:
    out: dict = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, list):
                out.setdefault(k, []).extend(v)
            elif isinstance(v, dict):
                for kk, vv in v.items():
                    out.setdefault(k, {}).setdefault(kk, 0)
                    out[k][kk] += vv
            else:
                out[k] = out.get(k, 0) + v
    return out


def phase(url: str, clients: int, seconds: float, tokens: int) -> dict:
    """`clients` streaming clients for `seconds`; past 64 they are spread over processes of 64 each, so
    that one Python client process (its event loop and connection pool) is not what is measured."""
    start = time.time()
    if clients <= 64:
        out = asyncio.run(_raw(url, clients, seconds, tokens))
    else:
        from multiprocessing import Pool

        with Pool(clients // 64) as pool:
            out = _merge(pool.map(_raw_in_process, [(url, 64, seconds, tokens)] * (clients // 64)))
    elapsed = time.time() - start
    return dict(clients=clients, seconds=round(elapsed, 1), ok=out.get("status", {}).get(200, 0),
                failed=out.get("failed", 0), failures=out.get("why", {}),
                refused={k: v for k, v in out.get("status", {}).items() if k != 200},
                p50_latency_s=round(pct(out.get("latency", []), 0.5), 3),
                p99_latency_s=round(pct(out.get("latency", []), 0.99), 3),
                p50_ttft_s=round(pct(out.get("ttft", []), 0.5), 3), p99_ttft_s=round(pct(out.get("ttft", []), 0.99), 3),
                refused_at_door=len(out.get("refused_door_s", [])),
                p99_door_refusal_s=round(pct(out.get("refused_door_s", []), 0.99), 3),
                refused_after_queue_wait=len(out.get("refused_queue_s", [])),
                p99_queue_refusal_s=round(pct(out.get("refused_queue_s", []), 0.99), 3),
                tokens_per_s=round(out.get("tokens", 0) / elapsed, 1))


async def acked_client(http: httpx.AsyncClient, until: float, tokens: int, acked: list) -> None:
    body = {"model": "demo-gpt2", "prompt": "The river", "max_tokens": tokens}
    while time.time() < until:
        try:
            r = await http.post("/v1/completions", json=body)
            if r.status_code == 200 and r.json().get("usage"):
                acked.append(r.json()["id"])
        except (httpx.HTTPError, ValueError):
            await asyncio.sleep(0.05)  # the server is gone


def usage_rows(home: Path) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from sqlalchemy import func, select

    from lmforge.store import Database, Usage

    db = Database(f"sqlite:///{home / 'lmforge.db'}")
    with db.session() as s:
        n = s.scalar(select(func.count(Usage.id)))
    db.dispose()
    return n


async def crash_phase(home: Path, port: int, seconds: float, tokens: int, proc: subprocess.Popen) -> dict:
    acked: list = []
    before = usage_rows(home)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
        until = time.time() + seconds
        clients = asyncio.gather(*(acked_client(http, until, tokens, acked) for _ in range(16)))
        await asyncio.sleep(seconds / 2)
        os.kill(proc.pid, signal.SIGKILL)  # mid-load
        proc.wait()
        acked_before_kill = len(acked)
        await clients
    restarted = start_server(home, port)
    try:
        rows = usage_rows(home) - before
    finally:
        restarted.terminate()
        restarted.wait()
    return dict(acknowledged=acked_before_kill, usage_rows=rows, missing=max(0, acked_before_kill - rows))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60, help="length of each load phase")
    p.add_argument("--tokens", type=int, default=32, help="max_tokens of each request")
    p.add_argument("--home", type=Path, default=None, help="LMFORGE_HOME for the server (default: a temp dir)")
    args = p.parse_args(argv)
    home = args.home or Path(tempfile.mkdtemp(prefix="lmforge-load-"))
    port = free_port()
    results = {}
    proc = start_server(home, port, {"LMFORGE_MAX_QUEUE_WAIT_S": "5"})
    try:
        url = f"http://127.0.0.1:{port}"
        for clients in (16, 64):
            results[f"{clients} clients"] = r = phase(url, clients, args.seconds, args.tokens)
            print(json.dumps({f"{clients} clients": r}), flush=True)
        results["256 clients"] = r = phase(url, 256, min(args.seconds, 20), args.tokens)
        print(json.dumps({"256 clients": r}), flush=True)
    finally:
        proc.terminate()
        proc.wait()
    proc = start_server(home, port)
    results["kill -9"] = r = asyncio.run(crash_phase(home, port, min(args.seconds, 20), args.tokens, proc))
    print(json.dumps({"kill -9": r}), flush=True)


if __name__ == "__main__":
    main()
