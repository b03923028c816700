"""End to end in real processes: kill and resume, and torchrun with two processes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def cli(corpus, tokenizer, out, cache, **opts):
    opts = {"family": "gpt2", "layers": 2, "hidden": 64, "heads": 2, "ffn": 128, "block-size": 32, "micro-batch": 8,
            "lr": 3e-3, "precision": "fp32", "dropout": 0.1, "threads": 1, "eval-every": 20, "eval-blocks": 32,
            "log-every": 1, "save-every": 10, **opts}
    args = ["pretrain", "--data", str(corpus), "--out", str(out), "--tokenizer", str(tokenizer),
            "--cache-dir", str(cache), "--no-progress"]
    for k, v in opts.items():
        args += [f"--{k}", str(v)]
    return args


def env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_killed_run_resumes_bitwise(tmp_path, corpus, tokenizer_dir):
    tok = tokenizer_dir("gpt2")
    full, killed = tmp_path / "full", tmp_path / "killed"
    base = [sys.executable, "-m", "lmforge"]
    subprocess.run(base + cli(corpus, tok, full, tmp_path / "cache", steps=60), check=True, env=env(),
                   capture_output=True)

    proc = subprocess.Popen(base + cli(corpus, tok, killed, tmp_path / "cache", steps=60), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # Kill it between checkpoints: once step 15 is logged, the step-10 checkpoint exists and steps 11-15 are lost.
    while time.time() < deadline:
        if (killed / "metrics.jsonl").exists() and any(r.get("step", 0) >= 15 for r in records(killed)):
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()  # it really was cut short
    logged = max(r["step"] for r in records(killed))

    resumed = subprocess.run(base + cli(corpus, tok, killed, tmp_path / "cache", steps=60) + ["--resume"],
                             env=env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].equal(b[k]), k  # bitwise
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("tokens_per_s",)} for r in rs]  # noqa: E731
    assert strip(records(full)) == strip(records(killed))  # same losses at every step, no duplicates
    assert logged > 10


def test_torchrun_two_processes_equal_one_with_double_accumulation(tmp_path, corpus, tokenizer_dir):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    tok = tokenizer_dir("gpt2")
    one, two = tmp_path / "one", tmp_path / "two"
    opts = dict(steps=12, **{"save-every": 12, "eval-every": 6})
    single = subprocess.run([sys.executable, "-m", "lmforge"] + cli(corpus, tok, one, tmp_path / "cache",
                            accumulation=4, **opts), env=env(), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "lmforge"]
                         + cli(corpus, tok, two, tmp_path / "cache", accumulation=2, **opts),
                         env=env(), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k
    ra, rb = records(one), records(two)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        for key in ("loss", "val_loss"):
            if key in x:
                assert abs(x[key] - y[key]) < 1e-5, (key, x, y)
    tokens = lambda rs: [r["tokens"] for r in rs if "tokens" in r]  # noqa: E731
    assert tokens(ra) == tokens(rb)  # both saw the same blocks
    losses = [r["loss"] for r in ra if "loss" in r]
    assert losses[-1] < losses[0] - 0.5  # and learned: the weights moved far beyond the tolerance
