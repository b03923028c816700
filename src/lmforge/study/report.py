"""The study's results gathered from the run folders into results.json, then the report: one table per aspect
(Markdown and HTML from the same rows) and the PNG figures. Every cell is read from the run's results."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .args import StudyArgs, benchmark
from .check import SPREAD
from .claims import evaluate_claims
from .runner import PRIMARY, read_json, task_plan, write_json

FIGURES = ("loss_curves.png", "benchmarks.png", "generation.png")
COLORS = {"bert": "#1f77b4", "roberta": "#9467bd", "gpt2": "#d62728", "xlnet": "#2ca02c", "t5": "#ff7f0e"}


# ------------------------------------------------------------------ collect


def collect(args: StudyArgs, plan: dict, work: Path, meta: dict) -> dict:
    from ..train.loop import OBJECTIVE_NAMES

    families = {}
    for f in args.families:
        pre = read_json(work / "pretrain" / f / "study.json")
        mea = read_json(work / "measure" / f"{f}.json")
        records = pre["records"]
        per_step = plan["tokens_per_step"]
        train = [r for r in records if "loss" in r]
        windows = [(r["tokens"], r["tokens"] / r["tokens_per_s"]) for r in train if r.get("tokens_per_s")]
        if len(windows) > 1:
            windows = windows[1:]  # the first window holds the warm-up
        a = pre["args"]
        objective = OBJECTIVE_NAMES[f].format(k=a["plm_k"], nd=a["noise_density"], ms=a["mean_noise_span_length"])
        s = pre["summary"]
        families[f] = {
            "shape": plan["shapes"][f],
            "architecture": mea["architecture"],
            "visibility": mea["visibility"],
            "likelihood": mea["likelihood"],
            "generation": mea["generation"],
            "cost": mea["cost"],
            "pretrain": {
                "objective": objective, "steps": s.get("steps", a["steps"]),
                "tokens_seen": sum(r.get("tokens", 0) for r in train),
                "planned_tokens": plan["tokens_per_family"], "wall_seconds": pre["wall_seconds"],
                "resumed": pre.get("resumed", False),
                "train_seconds": sum(r["tokens"] / r["tokens_per_s"] for r in train if r.get("tokens_per_s")),
                "tokens_per_s": sum(w[0] for w in windows) / max(sum(w[1] for w in windows), 1e-9),
                "final_val_loss": s.get("val_loss"), "final_val_accuracy": s.get("val_accuracy"),
                "val_curve": [[r["step"] * per_step, r["val_loss"]] for r in records if "val_loss" in r],
                "train_curve": [[r["step"] * per_step, r["loss"]] for r in train],
            },
        }
    tasks = {}
    for task, tp in task_plan(args).items():
        primary = PRIMARY[tp["kind"]]
        entry = {**tp, "primary": primary, "families": {}}
        for f, fp in tp["families"].items():
            runs = []
            if not fp["refused"]:
                for s in range(args.seeds):
                    path = work / "finetune" / task / f / f"seed{args.seed + s}.json"
                    if path.is_file():
                        runs.append(read_json(path))
            e = {**fp, "n": len(runs), "runs": [{k: v for k, v in r.items() if k != "predictions"} for r in runs]}
            if runs:
                names = list(runs[0]["metrics"])
                vals = {k: np.array([r["metrics"][k] for r in runs], dtype=float) for k in names}
                e["mean"] = {k: float(v.mean()) for k, v in vals.items()}
                e["std"] = {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in vals.items()}
                e["train_seconds"] = float(np.mean([r["train_seconds"] for r in runs]))
                e["steps"] = runs[0]["steps"]
                e["train_examples"] = runs[0]["train_examples"]
                e["eval_examples"] = runs[0]["eval_examples"]
                e["example_predictions"] = runs[0].get("predictions", [])
                if "majority" in runs[0]:
                    entry["majority"] = runs[0]["majority"]
            entry["families"][f] = e
        tasks[task] = entry
    results = {"meta": {**meta, "budget": plan["budget"], "seeds": [args.seed + s for s in range(args.seeds)],
                        "tokens_per_family": plan["tokens_per_family"], "steps": plan["steps"],
                        "calibration_tokens_per_s": plan.get("calibration_tokens_per_s"), "args": plan["args"]},
               "families": families, "tasks": tasks}
    results["claims"] = evaluate_claims(results)
    return results


# ------------------------------------------------------------------ tables


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return f"{x:,}"
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def pct(x) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def tables(r: dict) -> list[dict]:
    """[{title, note, header, rows}] in report order."""
    fams = r["families"]
    out = []
    rows = []
    for f, v in fams.items():
        a, s = v["architecture"], v["shape"]
        layers = f"{s['layers']} + {s['layers']}" if f == "t5" else str(s["layers"])
        rows.append([f, a["layout"], a["attention"], fmt(a["parameters"]), fmt(a["embedding_parameters"]), layers,
                     str(s["hidden"]), str(s["heads"]), str(s["ffn"]), a["positions"], fmt(a["vocab_size"])])
    out.append({"title": "Architecture", "header": ["family", "layout", "attention (probed)", "parameters",
                                                     "of which embeddings", "layers", "hidden", "heads", "ffn",
                                                     "positions", "vocabulary"], "rows": rows,
                "note": "Attention is measured by replacing one input token at a time and recording which output "
                        "positions change. Parameter counts are matched to GPT-2's at the study shape by the "
                        "feed-forward width (T5 splits the layers between its encoder and decoder)."})
    rows = []
    for f, v in fams.items():
        p, vis, lik = v["pretrain"], v["visibility"], v["likelihood"]
        rows.append([f, p["objective"], pct(vis["loss_share"]),
                     f"{pct(vis['left_visible'])} left / {pct(vis['right_visible'])} right", fmt(p["tokens_seen"]),
                     fmt(p["steps"]), fmt(p["train_seconds"]), fmt(p["final_val_loss"], 4)])
    out.append({"title": "Pretraining", "header": ["family", "objective", "positions with a loss",
                                                    "context a predicted token sees", "tokens seen", "steps",
                                                    "training time (s)", "final validation loss"], "rows": rows,
                "note": f"Matched compute: {r['meta']['tokens_per_family']:,} input tokens per family "
                        f"({r['meta']['steps']:,} steps). Budget: {r['meta']['budget']}. Validation losses are each "
                        "family's own objective and are not comparable across objectives; the held-out "
                        "likelihood under Generation is. Training time: the optimizer steps' time from the run's "
                        "log (evaluations and saving excluded)."})
    header = ["family", *r["tasks"], "tasks run", "modes used"]
    rows = []
    notes = []
    for f in fams:
        row, ran, modes = [f], 0, set()
        for task, t in r["tasks"].items():
            e = t["families"][f]
            if e["refused"]:
                row.append("refused")
                notes.append(f"{f} on {task}: {e['refused']}")
            elif e["n"]:
                row.append(f"{e['mode']} → {e['head']} head ({e['n']} runs)")
                ran += 1
                modes.add(e["mode"])
            else:
                row.append("not run")
        rows.append(row + [f"{ran}/{len(r['tasks'])}", str(len(modes))])
    out.append({"title": "Task flexibility", "header": header, "rows": rows,
                "note": "How the platform applied each family to each task in this run. Refusals: "
                        + ("; ".join(sorted(set(notes))) if notes else "none")})
    header = ["task", "metric", *fams, "majority class"]
    rows = []
    for task, t in r["tasks"].items():
        metrics = []
        for e in t["families"].values():
            for k in e.get("mean", {}):
                if k not in metrics:
                    metrics.append(k)
        metrics.sort(key=lambda k: k != t["primary"])
        for k in metrics:
            row = [f"{task} ({t['benchmark']})", k + (" (primary)" if k == t["primary"] else "")]
            for f in fams:
                e = t["families"][f]
                row.append(f"{fmt(e['mean'][k])} ± {fmt(e['std'][k], 2)}" if e.get("n") and k in e["mean"]
                           else ("refused" if e["refused"] else "—"))
            row.append(fmt(t.get("majority")) if k == "accuracy" and t.get("majority") is not None else "")
            rows.append(row)
    out.append({"title": "Benchmark performance", "header": header, "rows": rows,
                "note": f"Mean ± standard deviation over seeds {', '.join(map(str, r['meta']['seeds']))}. Accuracy, "
                        "F1 and MCC are fractions; SQuAD, ROUGE, BLEU and chrF are percentages."})
    rows = []
    for f, v in fams.items():
        g, lik = v["generation"], v["likelihood"]
        rows.append([f, g["method"], fmt(lik["perplexity"]) if lik else "not defined",
                     fmt(lik["bits_per_char"]) if lik else "not defined", fmt(g["bigram_perplexity"]),
                     fmt(g["distinct_1"]), fmt(g["distinct_2"]), fmt(g["repetition_rate"])])
    heldout_judge = next(iter(fams.values()))["generation"]["heldout_bigram_perplexity"]
    out.append({"title": "Generation ability", "header": ["family", "how it generated", "held-out perplexity (per token)",
                                                           "held-out bits per character",
                                                           "fluency: samples' bigram perplexity", "distinct-1",
                                                           "distinct-2", "repetition (seq-rep-4)"], "rows": rows,
                "note": "Likelihood is defined for the families whose objective factorizes the text left to right "
                        "(GPT-2; XLNet under the identity order). Bits per character compare across tokenizers; "
                        "perplexity per token does not. Samples: temperature 0.8, top-k 40. Fluency: the "
                        "perplexity per word or punctuation mark of the samples (each continuing its prompt) under "
                        "an interpolated Kneser-Ney bigram model fitted on the corpus's training split — a judge "
                        "that is none of the five families and scores text, not tokens. It measures local word "
                        f"order only; the held-out text itself scores {fmt(heldout_judge)}: far above that is word "
                        "salad, below it is safe, frequent word pairs (low temperature), so read it with "
                        "distinct-n and seq-rep-4."})
    rows = []
    first = next(iter(fams.values()))["generation"]["samples"]
    for i, s in enumerate(first[:3]):
        for f, v in fams.items():
            rows.append([s["prompt"] if f == next(iter(fams)) else "", f, v["generation"]["samples"][i]["continuation"]])
    out.append({"title": "Sample outputs", "header": ["prompt (held-out text)", "family", "continuation"],
                "rows": rows, "note": ""})
    rows = []
    for f, v in fams.items():
        c, p = v["cost"], v["pretrain"]
        ft = [t["families"][f]["train_seconds"] for t in r["tasks"].values() if t["families"][f].get("n")]
        wall = fmt(p["wall_seconds"]) + (" (last session; resumed)" if p.get("resumed") else "")
        rows.append([f, fmt(c["train_flops_per_token"] / 1e6), fmt(p["tokens_per_s"]), wall, fmt(c["forward_ms"]),
                     fmt(v["generation"]["ms_per_token"]), fmt(c["weights_bytes"] / 2**20),
                     fmt(c["activation_bytes"] / 2**20), fmt(np.mean(ft)) if ft else "—"])
    tok = next(iter(fams.values()))["cost"]["forward_tokens"]
    out.append({"title": "Cost", "header": ["family", "training MFLOPs per token", "training tokens/s",
                                             "pretraining wall time (s)",
                                             f"forward latency, batch 1 × {tok} tokens (ms)", "generation (ms/token)",
                                             "weights (MiB)", "activations per training step (MiB)",
                                             "mean fine-tuning time per run (s)"], "rows": rows,
                "note": f"FLOPs and activations: one training step of {r['meta']['args']['micro_batch']} blocks, "
                        "forward and backward, as the pretraining ran it; FLOPs counted by torch's FlopCounterMode "
                        "(matrix products and attention) per corpus token the step consumes, activations as the "
                        "bytes of every tensor autograd saves for the backward pass. Both are independent of the "
                        "machine. Forward latency and generation speed are measured "
                        "at batch 1 on one CPU thread (on a GPU, on the GPU). Timings on the hardware above, which "
                        "other work may have shared."})
    out.append({"title": "Claims versus measurement", "header": ["claim", "source", "measured in this run", "verdict"],
                "rows": [[c["claim"], c["source"], c["evidence"], c["verdict"]] for c in r["claims"]],
                "note": "Two families differ on a task only when their means differ by more than twice the standard "
                        "error of the difference over seeds; a verdict holds for this run's scale only."})
    return out


# ------------------------------------------------------------------ figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    _plt().close(fig)
    os.replace(tmp, path)


def figures(r: dict, folder: Path) -> list[Path]:
    plt = _plt()
    folder.mkdir(parents=True, exist_ok=True)
    fams = r["families"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for f, v in fams.items():
        p = v["pretrain"]
        if p["train_curve"]:
            ax.plot(*zip(*p["train_curve"]), "--", color=COLORS[f], alpha=0.5, lw=1)
        if p["val_curve"]:
            ax.plot(*zip(*p["val_curve"]), "o-", color=COLORS[f], label=f"{f} ({v['pretrain']['objective'].split(' (')[0]})",
                    ms=3)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats per predicted token)")
    ax.set_title("Pretraining: validation (solid) and training (dashed) loss,\neach on its own objective", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, folder / "loss_curves.png")

    tasks = list(r["tasks"].items())
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, (task, t) in zip(axes.flat, tasks):
        names = [f for f in fams if t["families"][f].get("n")]
        k = t["primary"]
        means = [t["families"][f]["mean"][k] for f in names]
        stds = [t["families"][f]["std"][k] for f in names]
        ax.bar(names, means, yerr=stds, capsize=4, color=[COLORS[f] for f in names])
        if t.get("majority") is not None and k == "accuracy":
            ax.axhline(t["majority"], color="k", ls=":", lw=1, label="majority class")
            ax.legend(fontsize=7)
        top = max([m + sd for m, sd in zip(means, stds)] + [t.get("majority") or 0, 1e-3])
        ax.set_ylim(0, 1.15 * top)  # the primary metrics are never negative
        ax.set_title(f"{task}: {k}", fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(f"Fine-tuned metric per task (mean ± std over {len(r['meta']['seeds'])} seeds)")
    fig.tight_layout()
    _save(fig, folder / "benchmarks.png")

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.5))
    names = list(fams)
    lik = [f for f in names if fams[f]["likelihood"]]
    axes[0].bar(lik, [fams[f]["likelihood"]["bits_per_char"] for f in lik], color=[COLORS[f] for f in lik])
    axes[0].set_title("held-out bits per character (lower is better)", fontsize=9)
    axes[1].bar(names, [fams[f]["generation"]["bigram_perplexity"] for f in names], color=[COLORS[f] for f in names])
    axes[1].axhline(fams[names[0]]["generation"]["heldout_bigram_perplexity"], color="k", ls=":", lw=1,
                    label="held-out text")
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=7)
    axes[1].set_title("samples' bigram perplexity (fluency)", fontsize=9)
    axes[2].bar(names, [fams[f]["generation"]["distinct_2"] for f in names], color=[COLORS[f] for f in names])
    axes[2].set_title("distinct-2 of samples (higher is more diverse)", fontsize=9)
    axes[3].bar(names, [fams[f]["generation"]["repetition_rate"] for f in names], color=[COLORS[f] for f in names])
    axes[3].set_title("seq-rep-4 of samples (lower repeats less)", fontsize=9)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    _save(fig, folder / "generation.png")
    return [folder / n for n in FIGURES]


# ------------------------------------------------------------------ documents


def _md_cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def markdown(r: dict, tabs: list[dict]) -> str:
    m = r["meta"]
    env = m["environment"]
    lines = [
        "# lmforge comparative study: BERT, RoBERTa, GPT-2, XLNet and T5 on equal terms", "",
        ("Every family is pretrained from scratch with its own objective on the same corpus, at matched parameter "
         "count and matched compute, then fine-tuned on the same tasks over several seeds and measured. Every "
         "number below comes from this run (`results.json` holds them all)."), "",
        "## Run", "",
        f"- **command**: `{m['command']}`",
        f"- **budget**: {m['budget']} → {m['tokens_per_family']:,} input tokens per family ({m['steps']:,} steps)",
        f"- **seeds**: {', '.join(map(str, m['seeds']))} (fine-tuning; pretraining seed {m['args']['seed']})",
        f"- **versions**: lmforge {env['lmforge']}"
        + (f" (commit {env['git_commit']})" if env.get("git_commit") else "")
        + f", torch {env['torch']}, tokenizers {env.get('tokenizers', '?')}, numpy {env.get('numpy', '?')}, "
          f"Python {env['python']}",
        f"- **hardware**: {env['cpu']}, {env['cpu_cores']} cores, {env.get('memory_gb')} GiB RAM"
        + (f", GPU {env['cuda']}" if env.get("cuda") else ", no GPU") + f"; torch threads {env['torch_threads']}",
        (f"- **started / finished**: {m.get('started')} / {m.get('finished')}; wall time of the recorded sessions "
         f"{sum(s['seconds'] for s in m.get('sessions', [])):,.0f} s ({len(m.get('sessions', []))} session(s); "
         "an interrupted session is not recorded)"),
        f"- **reproduce**: {reproduce(m)}",
        f"- **spread**: {SPREAD}",
        "",
    ]
    for t in tabs:
        lines += [f"## {t['title']}", ""]
        if t["note"]:
            lines += [t["note"], ""]
        lines.append("| " + " | ".join(map(_md_cell, t["header"])) + " |")
        lines.append("|" + "---|" * len(t["header"]))
        lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in t["rows"]]
        lines.append("")
        if t["title"] == "Pretraining":
            lines += ["![loss curves](figures/loss_curves.png)", ""]
        if t["title"] == "Benchmark performance":
            lines += ["![metric per task](figures/benchmarks.png)", ""]
        if t["title"] == "Generation ability":
            lines += ["![generation measures](figures/generation.png)", ""]
    return "\n".join(lines)


def reproduce(meta: dict) -> str:
    """How to re-run this report and check it cell by cell."""
    return (f"run the command with another `--out` and `--check-against {meta['args']['out']}/results.json`; it "
            "prints every compared cell and exits 1 if one falls outside the spread")


def html(r: dict, tabs: list[dict], md_intro: str) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("lmforge.study", "templates"), autoescape=select_autoescape(["html"]))
    figs = {"Pretraining": "figures/loss_curves.png", "Benchmark performance": "figures/benchmarks.png",
            "Generation ability": "figures/generation.png"}
    return env.get_template("report.html").render(r=r, meta=r["meta"], tables=tabs, figures=figs,
                                                  reproduce=reproduce(r["meta"]).replace("`", ""), spread=SPREAD)


def write_report(results: dict, out: Path) -> dict[str, Path]:
    out = Path(out)
    tabs = tables(results)
    check_finite(results)
    write_json(out / "results.json", results)
    figs = figures(results, out / "figures")
    md = markdown(results, tabs)
    paths = {"markdown": out / "report.md", "html": out / "report.html", "results": out / "results.json"}
    for key, text in (("markdown", md), ("html", html(results, tabs, md))):
        tmp = paths[key].with_name(f".{paths[key].name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, paths[key])
    return {**paths, **{p.stem: p for p in figs}}


def check_finite(results: dict) -> None:
    """Refuse to write a report holding a NaN or infinity (a broken measurement, not a result)."""
    bad = []

    def walk(x, where):
        if isinstance(x, float) and not math.isfinite(x):
            bad.append(where)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{where}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]")

    walk({k: v for k, v in results.items() if k != "meta"}, "results")
    if bad:
        import logging

        logging.getLogger(__name__).warning("non-finite values in the study's results: %s", ", ".join(bad[:10]))


__all__ = ["benchmark", "collect", "figures", "tables", "write_report"]
