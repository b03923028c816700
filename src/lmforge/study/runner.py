"""The comparative study: plan -> pretrain each family -> measure it -> fine-tune and evaluate on every task
where the pair makes sense, over several seeds -> the report.

    out/
      report.md, report.html, figures/*.png, results.json     what `lmforge compare` produces
      work/plan.json                                          sizes, steps and the arguments they came from
      work/corpus/{train,heldout}.txt                         the corpus split, the same for every family
      work/tokenizers/<family>/                               each family's own tokenizer, trained on train.txt
      work/pretrain/<family>/                                 an `lmforge pretrain` run folder (+ study.json)
      work/measure/<family>.json                              probes, likelihood, samples, cost
      work/finetune/<task>/<family>/seed<k>.json              one fine-tuning run, evaluated

Resumable by construction: each stage writes its result file last, atomically, and a stage whose result
file exists is skipped; an interrupted pretraining run resumes from its checkpoint.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..models import ModelError
from .args import FAMILIES, StudyArgs, benchmark

log = logging.getLogger(__name__)
PRIMARY = {"classification": "accuracy", "qa": "f1", "summarization": "rougeL", "translation": "bleu"}


# ------------------------------------------------------------------ small helpers


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _jsonable(x):
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


@dataclass
class Stage:
    name: str  # "pretrain", "measure", "finetune"
    family: str
    result: Path
    run: Callable[[Callable[[int, int], None]], dict]
    task: str | None = None
    seed: int | None = None

    @property
    def done(self) -> bool:
        return self.result.is_file()


# ------------------------------------------------------------------ the plan


def split_corpus(args: StudyArgs, folder: Path) -> tuple[Path, Path]:
    """Every k-th document of the corpus goes to heldout.txt (k = 1 / heldout_fraction), the rest to
    train.txt: one split, the same for every family (documents separated by blank lines)."""
    from ..data import expand_sources, read_documents

    train, heldout = folder / "train.txt", folder / "heldout.txt"
    if train.is_file() and heldout.is_file():
        return train, heldout
    folder.mkdir(parents=True, exist_ok=True)
    every = max(2, round(1 / args.heldout_fraction))
    docs = [doc for path in expand_sources(args.corpus) for doc in read_documents(path)]
    if len(docs) < every:
        raise ModelError(f"the corpus has {len(docs)} documents; the study holds out one in {every}, so it needs more "
                         "(documents are separated by blank lines)")
    keep = [d for i, d in enumerate(docs) if i % every != every - 1]
    held = [d for i, d in enumerate(docs) if i % every == every - 1]
    for path, part in ((heldout, held), (train, keep)):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n\n".join("\n".join(d) for d in part) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return train, heldout


def train_tokenizers(args: StudyArgs, train: Path, folder: Path) -> dict[str, Path]:
    from ..tokenizer import has_tokenizer_files, train_tokenizer

    out = {}
    for family in args.families:
        d = folder / family
        if not has_tokenizer_files(d):
            tok = train_tokenizer(family, [str(train)], vocab_size=args.vocab_size)
            tmp = folder / f".{family}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tok.save_pretrained(tmp)
            shutil.rmtree(d, ignore_errors=True)
            os.replace(tmp, d)
        out[family] = d
    return out


def pretrain_args(args: StudyArgs, family: str, shape: dict, steps: int, work: Path, tok: Path):
    from ..train import Args

    every = max(1, steps // args.eval_points)
    out = work / "pretrain" / family
    return Args(
        family=family, data=[work / "corpus" / "train.txt"], out=out, layers=shape["layers"], hidden=shape["hidden"],
        heads=shape["heads"], ffn=shape["ffn"], max_positions=max_positions(args), dropout=0.0, tokenizer=tok,
        block_size=args.block_size, val_fraction=0.05, cache_dir=work / "cache", steps=steps,
        micro_batch=args.micro_batch, lr=args.lr, eval_every=every, eval_blocks=64, save_every=max(every, steps // 4),
        log_every=max(1, min(every, steps // 20)), seed=args.seed, resume=(out / "checkpoint.pt").is_file(),
        threads=args.threads, progress=False, device=args.device, precision=args.precision,
        extra={"card_note": "Pretrained by `lmforge compare` (the comparative study)."},
    )


def max_positions(args: StudyArgs) -> int:
    """Learned positions: enough for pretraining blocks and for fine-tuning inputs plus targets."""
    return max(args.block_size, args.max_length + args.target_max_length)


def count_parameters(a, tokenizer) -> int:
    from ..train.recipes import make_objective, new_model

    return new_model(a, tokenizer, make_objective(a, tokenizer).task).num_parameters()


def matched_shapes(args: StudyArgs, toks: dict[str, Path], work: Path) -> dict[str, dict]:
    """The reference is GPT-2 at the study's shape (layers, hidden, heads, ffn). Every family keeps hidden and
    heads; T5 splits the layers between its two stacks (ceil(layers / 2) each); then each family's
    feed-forward width is solved from its (linear) parameter count so its total matches the reference's."""
    from ..tokenizer import Tokenizer, train_tokenizer

    ref_tok = Tokenizer.from_pretrained(toks["gpt2"]) if "gpt2" in toks else \
        train_tokenizer("gpt2", [str(work / "corpus" / "train.txt")], vocab_size=args.vocab_size)
    base = {"layers": args.layers, "hidden": args.hidden, "heads": args.heads, "ffn": args.ffn}
    target = count_parameters(pretrain_args(args, "gpt2", base, 1, work, None), ref_tok)
    shapes = {}
    for family in args.families:
        tok = Tokenizer.from_pretrained(toks[family])
        layers = max(1, math.ceil(args.layers / 2)) if family == "t5" else args.layers
        p = {f: count_parameters(pretrain_args(args, family, {**base, "layers": layers, "ffn": f}, 1, work, None), tok)
             for f in (args.hidden, 2 * args.hidden)}
        slope = (p[2 * args.hidden] - p[args.hidden]) / args.hidden
        ffn = max(8, round((args.hidden + (target - p[args.hidden]) / slope) / 8) * 8)
        shape = {**base, "layers": layers, "ffn": ffn}
        shape["parameters"] = count_parameters(pretrain_args(args, family, shape, 1, work, None), tok)
        shape["reference_parameters"] = target
        shapes[family] = shape
    return shapes


def calibrate(args: StudyArgs, shapes: dict, toks: dict[str, Path], work: Path, steps: int = 3) -> dict[str, float]:
    """Training tokens per second of each family at its shape (a few optimizer steps on random blocks)."""
    from ..tokenizer import Tokenizer
    from ..train.recipes import make_objective, new_model

    speed = {}
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for family in args.families:
        a = pretrain_args(args, family, shapes[family], 1, work, toks[family])
        tok = Tokenizer.from_pretrained(toks[family])
        objective = make_objective(a, tok)
        model = new_model(a, tok, objective.task).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch, _ = random_training_batch(args, family, objective, tok, device, seed=0)
        kwargs = getattr(objective, "train_kwargs", {})
        times = []
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            model(**batch, **kwargs).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        speed[family] = args.micro_batch * args.block_size / float(np.median(times[1:]))
    return speed


def random_training_batch(args: StudyArgs, family: str, objective, tok, device, seed: int) -> tuple[dict, int]:
    """One pretraining micro-batch of random blocks, for timing and counting (the text does not change the cost),
    and the corpus tokens it consumes (T5's span corruption reads more raw tokens than it feeds the encoder)."""
    from ..objectives.base import Blocks

    L = objective.raw_length(args.block_size) if family == "t5" else args.block_size
    rng = np.random.default_rng(seed)
    specials = set(tok.all_special_ids)
    vocab = np.array([i for i in range(tok.vocab_size) if i not in specials])
    blocks = Blocks(vocab[rng.integers(len(vocab), size=(args.micro_batch, L))], np.full(args.micro_batch, L),
                    np.arange(args.micro_batch))
    return {k: v.to(device) for k, v in objective(blocks).items()}, args.micro_batch * L


def make_plan(args: StudyArgs, work: Path) -> dict:
    """Corpus split, tokenizers, matched shapes and the matched token budget (saved; reused on resume)."""
    plan_file = work / "plan.json"
    if plan_file.is_file():
        plan = read_json(plan_file)
        now, then = args.to_dict(), plan["args"]
        for key, value in then.items():
            if key not in StudyArgs.RESUMABLE_CHANGES and now.get(key) != value:
                raise ModelError(f"{work} holds a study run with {key}={value!r}, but this one has {key}={now.get(key)!r}; "
                                 "resume with the same options or use another --out")
        for family in args.families:
            if family not in plan["shapes"]:
                raise ModelError(f"{work} was planned without {family}; use another --out to add a family")
        return plan
    train, _ = split_corpus(args, work / "corpus")
    toks = train_tokenizers(args, train, work / "tokenizers")
    shapes = matched_shapes(args, toks, work)
    budget = args.budget_spec
    per_step = args.micro_batch * args.block_size
    calibration = None
    if budget.tokens is not None:
        tokens = budget.tokens
    else:
        calibration = calibrate(args, shapes, toks, work)
        # All five runs share the seconds; evaluations and saving take about a tenth on top of the steps.
        tokens = int(0.9 * budget.seconds / sum(1 / calibration[f] for f in args.families))
    steps = max(1, tokens // per_step)
    plan = {"args": args.to_dict(), "shapes": shapes, "steps": steps, "tokens_per_family": steps * per_step,
            "tokens_per_step": per_step, "budget": str(budget), "calibration_tokens_per_s": calibration}
    write_json(plan_file, plan)
    return plan


# ------------------------------------------------------------------ stages


def pretrain_stage(args: StudyArgs, plan: dict, work: Path, family: str, report) -> dict:
    from ..train import pretrain

    a = pretrain_args(args, family, plan["shapes"][family], plan["steps"], work, work / "tokenizers" / family)
    stop = threading.Event()

    def poll():  # the loop writes metrics.jsonl as it goes; follow it for the progress bar
        path = a.out / "metrics.jsonl"
        while not stop.wait(1.0):
            try:
                steps = [json.loads(x).get("step", 0) for x in path.read_text().splitlines() if x.strip()]
            except (OSError, json.JSONDecodeError):
                continue
            if steps:
                report(max(steps), a.steps)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    try:
        summary = pretrain(a)
    finally:
        stop.set()
        watcher.join()
    wall = time.perf_counter() - t0
    if summary.get("stopped"):  # SIGTERM: the run saved a checkpoint; the stage is not finished
        raise ModelError(f"pretraining {family} was stopped at step {summary['steps']}; run the same command to resume")
    records = [json.loads(x) for x in (a.out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {"family": family, "summary": summary, "wall_seconds": wall, "records": records,
            "args": a.to_dict(), "resumed": a.resume}


def measure_stage(args: StudyArgs, plan: dict, work: Path, family: str, report) -> dict:
    from .. import load
    from ..tokenizer import Tokenizer
    from ..train.recipes import make_objective
    from . import measure as m

    folder = work / "pretrain" / family
    model, tok = load(folder)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    a = pretrain_args(args, family, plan["shapes"][family], plan["steps"], work, work / "tokenizers" / family)
    objective = make_objective(a, Tokenizer.from_pretrained(folder))
    torch.manual_seed(args.seed)
    report(0, 5)
    out = {"family": family, "architecture": m.probe_architecture(model, tok, seed=args.seed)}
    report(1, 5)
    out["visibility"] = m.visibility(family, objective, tok, args.block_size, seed=args.seed)
    model = model.to(device)
    heldout = (work / "corpus" / "heldout.txt").read_text(encoding="utf-8")
    out["likelihood"] = m.heldout_likelihood(model, tok, heldout[: args.heldout_chars], args.block_size)
    report(2, 5)
    prompts = m.prompts_from(heldout, args.samples)
    samples, gen_time, gen_tokens, method = [], 0.0, 0, None
    with m.one_cpu_thread(device):
        for i, prompt in enumerate(prompts):
            t0 = time.perf_counter()
            text, n, method = m.sample(model, tok, prompt, args.sample_tokens, seed=args.seed + i)
            gen_time += time.perf_counter() - t0
            gen_tokens += n
            samples.append({"prompt": prompt, "continuation": text})
    conts = [s["continuation"] for s in samples]
    judge = m.BigramLM((work / "corpus" / "train.txt").read_text(encoding="utf-8"))
    out["generation"] = {"method": method, "samples": samples, "distinct_1": m.distinct_n(conts, 1),
                         "distinct_2": m.distinct_n(conts, 2), "repetition_rate": m.repetition_rate(conts, 4),
                         "bigram_perplexity": judge.perplexity(conts, prompts),
                         "heldout_bigram_perplexity": judge.perplexity([heldout[: args.heldout_chars]]),
                         "ms_per_token": 1000 * gen_time / max(gen_tokens, 1)}
    report(3, 5)
    # Cost: one forward at batch 1 over a full block; memory and FLOPs of one training step at the pretraining
    # batch (per token: per corpus token the step consumes).
    ids = tok.encode(heldout, add_special_tokens=False)[: args.block_size]
    x = torch.tensor([ids], device=device)
    fwd = {"input_ids": x}
    if family == "t5":
        fwd["decoder_input_ids"] = x
    with m.one_cpu_thread(device):
        out["cost"] = {"forward_ms": 1000 * m.forward_latency(model, fwd, args.latency_reps),
                       "forward_tokens": len(ids)}
    batch, tokens = random_training_batch(args, family, objective, tok, device, seed=args.seed)
    out["cost"].update(m.training_step_cost(model, batch, getattr(objective, "train_kwargs", {})))
    out["cost"]["train_flops_per_token"] = out["cost"]["train_flops"] / tokens
    report(5, 5)
    return out


def eval_examples(spec, args: StudyArgs) -> list[dict]:
    """The validation subset every family and seed of a task is scored on (fixed by the study's seed)."""
    from ..tasks.finetune import load_validation

    examples = load_validation(spec, None, {}, args.data_dir, spec.label_names())
    if examples is None:
        raise ModelError(f"{spec.name} has no validation split to score on")
    if len(examples) > args.eval_examples:
        idx = sorted(random.Random(args.seed).sample(range(len(examples)), args.eval_examples))
        examples = [examples[i] for i in idx]
    return examples


def finetune_stage(args: StudyArgs, work: Path, task: str, family: str, seed: int, report) -> dict:
    from ..tasks import formatting as fm
    from ..tasks.evaluate import evaluate
    from ..tasks.finetune import FinetuneArgs, finetune
    from ..tasks.registry import get_task

    spec = get_task(benchmark(task))
    mode = fm.choose_mode(family, spec.kind)
    out = work / "finetune" / task / family / f"seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    fa = FinetuneArgs(model=str(work / "pretrain" / family), task=spec.name, out=out, data_dir=args.data_dir,
                      epochs=args.finetune_epochs, max_steps=args.finetune_max_steps, batch_size=args.finetune_batch_size,
                      lr=args.finetune_lr, max_length=args.max_length, target_max_length=args.target_max_length,
                      stride=max(8, args.max_length // 4), max_train_examples=args.finetune_examples, seed=seed,
                      evaluate=False, save_every=0)  # a stopped study re-runs the seed
    result = finetune(fa, progress=lambda step, total, loss: report(step, total))
    examples = eval_examples(spec, args)
    # A text-to-text classifier may write a word that is no label: the metrics count it as a wrong answer.
    ev = evaluate(result.predictor, examples)
    metrics, predictions, eval_seconds = ev.metrics, ev.predictions, ev.seconds
    shutil.rmtree(out, ignore_errors=True)  # the weights are not part of the report; the numbers are
    extra = {}
    if spec.kind == "classification":  # the accuracy of always answering the most common label
        labels = [ex["label"] for ex in examples]
        extra["majority"] = max(labels.count(x) for x in set(labels)) / len(labels)
    return {**extra, "task": task, "benchmark": spec.name, "family": family, "seed": seed, "mode": mode,
            "steps": result.steps, "train_examples": result.train_examples, "train_seconds": result.train_seconds,
            "final_loss": result.final_loss, "metrics": metrics, "eval_examples": len(examples),
            "eval_seconds": eval_seconds, "predictions": predictions[:3]}


def task_plan(args: StudyArgs) -> dict[str, dict]:
    """For each task: its benchmark, kind, and per family the mode or the platform's reason for refusing."""
    from ..tasks import formatting as fm
    from ..tasks.registry import get_task

    plan = {}
    for task in args.tasks:
        spec = get_task(benchmark(task))
        fams = {}
        for family in args.families:
            try:
                mode = fm.choose_mode(family, spec.kind)
                fams[family] = {"mode": mode, "head": fm.HEAD[mode], "refused": None}
            except ModelError as e:
                fams[family] = {"mode": None, "head": None, "refused": str(e)}
        plan[task] = {"benchmark": spec.name, "kind": spec.kind, "description": spec.description,
                      "metrics": list(spec.metrics), "families": fams}
    return plan


def stages(args: StudyArgs, plan: dict, work: Path) -> list[Stage]:
    out = []
    for f in args.families:
        out.append(Stage("pretrain", f, work / "pretrain" / f / "study.json",
                         lambda rep, f=f: pretrain_stage(args, plan, work, f, rep)))
    for f in args.families:
        out.append(Stage("measure", f, work / "measure" / f"{f}.json",
                         lambda rep, f=f: measure_stage(args, plan, work, f, rep)))
    for task, tp in task_plan(args).items():
        for f in args.families:
            if tp["families"][f]["refused"]:
                continue
            for s in range(args.seeds):
                seed = args.seed + s
                out.append(Stage("finetune", f, work / "finetune" / task / f / f"seed{seed}.json",
                                 lambda rep, t=task, f=f, seed=seed: finetune_stage(args, work, t, f, seed, rep),
                                 task=task, seed=seed))
    return out


# ------------------------------------------------------------------ the study


def environment() -> dict:
    import lmforge

    import tokenizers

    env = {"lmforge": lmforge.__version__, "git_commit": _git_commit(Path(lmforge.__file__).parent),
           "python": platform.python_version(), "torch": torch.__version__, "tokenizers": tokenizers.__version__,
           "numpy": np.__version__, "platform": platform.platform(), "cpu": _cpu_name(),
           "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cuda": None}
    try:
        env["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        env["memory_gb"] = None
    if torch.cuda.is_available():
        env["cuda"] = torch.cuda.get_device_name(0)
    return env


def _git_commit(source: Path) -> str | None:
    """The commit of the lmforge checkout that ran the study, marked "+ changes" when tracked files differed
    from it; None for an installed package."""
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(source), *a], capture_output=True, text=True, timeout=10,
                                        check=True).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + (" + changes" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def command_line(args: StudyArgs) -> str:
    parts = ["lmforge compare", f"--budget {args.budget}", "--corpus " + " --corpus ".join(map(str, args.corpus)),
             f"--tasks {','.join(args.tasks)}", f"--out {args.out}", f"--seeds {args.seeds}"]
    from .cli import option_flags

    parts += option_flags(args)
    return " ".join(parts)


def run_study(args: StudyArgs, command: str | None = None, console=None) -> dict:
    """Run (or resume) the whole study and write the report; returns the collected results."""
    from .report import collect, write_report
    from .view import StudyView

    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    meta_file = work / "meta.json"
    meta = read_json(meta_file) if meta_file.is_file() else {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                              "sessions": []}
    plan = make_plan(args, work)
    todo = stages(args, plan, work)
    ran = 0
    with StudyView(args, todo, enabled=args.progress, console=console) as view:
        for stage in todo:
            if stage.done:
                view.skip(stage)
                continue
            ran += 1
            view.start(stage)
            t1 = time.perf_counter()
            result = stage.run(view.report)
            result["stage_seconds"] = time.perf_counter() - t1
            write_json(stage.result, result)
            view.finish(stage, result)
    if ran or "environment" not in meta:  # a session that only rewrites the report leaves the run's record alone
        meta["sessions"].append({"seconds": time.perf_counter() - t0, "stages_run": ran})
        meta.update(finished=time.strftime("%Y-%m-%d %H:%M:%S"), command=command or command_line(args),
                    environment=environment())
        write_json(meta_file, meta)
    results = collect(args, plan, work, meta)
    write_report(results, args.out)
    return results


__all__ = ["FAMILIES", "PRIMARY", "StudyArgs", "run_study"]

