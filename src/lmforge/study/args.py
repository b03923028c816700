"""The arguments of a comparative study, one typed dataclass (the CLI fills it; tests build it directly)."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..models import ModelError

FAMILIES = ("bert", "roberta", "gpt2", "xlnet", "t5")
# The study's task names -> the registry's benchmark (summarization and translation are kinds in the
# registry, meaning "your own files"; here they mean the local benchmark of that kind).
TASK_ALIASES = {"summarization": "scitldr", "translation": "multi30k"}
DEFAULT_TASKS = ("sst2", "rte", "mrpc", "squad", "summarization", "translation")


@dataclass(frozen=True)
class Budget:
    """Pretraining compute per family: a token count (exact, reproducible) or wall seconds for all five
    pretraining runs together (converted to one matched token count by a short speed calibration)."""

    tokens: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str) -> Budget:
        """`600s`, `10m`, `10min`, `1h` are seconds; `200000`, `200k`, `2M`, `1G` (optionally `…tok`) are tokens
        (a lower-case m is minutes, an upper-case M millions)."""
        s = str(text).strip().replace("_", "").replace(",", "")
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)", s)
        if m:
            return cls(seconds=float(m.group(1)) * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[m.group(2)])
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(k|K|M|G)?\s*(tok|tokens)?", s)
        if m and (m.group(2) or m.group(3) or "." not in m.group(1)):
            scale = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}[m.group(2)]
            tokens = int(float(m.group(1)) * scale)
            if tokens < 1:
                raise ModelError(f"budget {text!r} is zero tokens")
            return cls(tokens=tokens)
        raise ModelError(f"budget {text!r} is neither seconds (600s, 10m, 1h) nor tokens (200000, 200k, 2M)")

    def __str__(self) -> str:
        return f"{self.tokens:,} tokens per family" if self.tokens is not None else \
            f"{self.seconds:g} s of pretraining for all five families"


@dataclass
class StudyArgs:
    budget: str
    """Pretraining budget: tokens per family (200k, 2M) or seconds for all pretraining (600s, 10m)."""
    corpus: list[Path]
    """Pretraining corpus files or folders (plain text or JSONL), the same for every family."""
    out: Path
    """Report folder: report.md, report.html, figures/, results.json; work/ holds the runs (resumable)."""
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    """sst2, rte, mrpc, squad, summarization (SciTLDR), translation (Multi30k), or any registry benchmark."""
    seeds: int = 3
    """Fine-tuning seeds per (family, task)."""
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    data_dir: Path | None = None
    """Where the task benchmarks' local copies live (default: $LMFORGE_DATA_DIR, then ../shared/data)."""

    # model shape: the reference (GPT-2) shape; every other family gets its feed-forward width (and T5 its
    # layers per stack) chosen so its parameter count matches the reference's.
    layers: int = 2
    hidden: int = 128
    heads: int = 4
    ffn: int = 512
    vocab_size: int = 4000
    """Target vocabulary of each family's tokenizer (trained on the corpus with the family's algorithm)."""
    block_size: int = 128
    micro_batch: int = 16
    lr: float = 1e-3
    heldout_fraction: float = 0.05
    """Share of the corpus documents held out for perplexity and generation prompts."""
    eval_points: int = 8
    """Validation evaluations per pretraining run (the loss curves' points)."""

    # fine-tuning, the same for every family on a task
    finetune_examples: int = 4000
    """Training examples per task (a fixed subset, the same for all families and seeds). Below about 2,000,
    tiny models stay at the majority class on SST-2 (measured; docs/study.md)."""
    eval_examples: int = 200
    """Validation examples scored per task."""
    finetune_epochs: float = 3.0
    finetune_max_steps: int | None = None
    finetune_batch_size: int = 16
    finetune_lr: float = 3e-4
    """Every family and mode. 1e-3 left SST-2 at the majority class; 1e-4 learned slower (docs/study.md)."""
    max_length: int = 128
    target_max_length: int = 32

    # generation and cost measurements
    samples: int = 20
    """Prompts sampled per family for the generation table (each continued by `sample_tokens`)."""
    sample_tokens: int = 32
    heldout_chars: int = 20000
    """Held-out characters scored for perplexity / bits per character."""
    latency_reps: int = 5

    seed: int = 0
    threads: int | None = None
    device: str | None = None
    precision: str = "fp32"
    """fp32 or bf16 (autocast) for pretraining; fp32 keeps CPU runs reproducible."""
    progress: bool = True

    def __post_init__(self):
        self.corpus = [Path(p) for p in (self.corpus if isinstance(self.corpus, (list, tuple)) else [self.corpus])]
        self.out = Path(self.out)
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir)
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        if isinstance(self.families, str):
            self.families = [f.strip() for f in self.families.split(",") if f.strip()]
        self.validate()

    def validate(self) -> None:
        Budget.parse(self.budget)
        bad = [f for f in self.families if f not in FAMILIES]
        if bad:
            raise ModelError(f"unknown family {bad[0]!r}; choose from {', '.join(FAMILIES)}")
        if not self.families:
            raise ModelError("the study needs at least one family")
        if self.seeds < 1:
            raise ModelError(f"seeds must be at least 1, not {self.seeds}")
        if self.hidden % self.heads:
            raise ModelError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if not 0 < self.heldout_fraction < 1:
            raise ModelError(f"heldout-fraction must be in (0, 1), not {self.heldout_fraction}")
        from ..tasks.registry import get_task

        for t in self.tasks:
            get_task(benchmark(t))  # raises "unknown task" with the list

    @property
    def budget_spec(self) -> Budget:
        return Budget.parse(self.budget)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
            elif isinstance(v, list) and v and isinstance(v[0], Path):
                d[k] = [str(p) for p in v]
        return d

    # Options that may change between a study and its resumption (they change no finished result).
    RESUMABLE_CHANGES = ("out", "progress", "threads", "device", "tasks", "families", "seeds", "data_dir")


def benchmark(task: str) -> str:
    """The registry task a study task name stands for."""
    return TASK_ALIASES.get(task, task)
