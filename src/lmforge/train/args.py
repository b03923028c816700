"""The arguments of a pretraining run, one typed dataclass (the CLI fills it; tests build it directly)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..models import ModelError

FAMILIES = ("bert", "roberta", "gpt2", "xlnet", "t5")

# Model sizes: (layers, hidden, heads, ffn). base is BERT-base / GPT-2 small; tiny and small are CPU-sized.
SIZES = {
    "tiny": (2, 128, 2, 512),
    "small": (4, 256, 4, 1024),
    "base": (12, 768, 12, 3072),
}


@dataclass
class Args:
    family: str
    """bert, roberta, gpt2, xlnet or t5: picks the model and its pretraining objective."""
    data: list[Path]
    """Corpus files or folders: plain text, JSONL with a "text" field, or a Hugging Face dataset folder."""
    out: Path
    """Run folder: checkpoint.pt, metrics.jsonl, loss.png and the final Hugging Face model (+ tokenizer)."""

    size: str = "tiny"
    """tiny, small or base (see SIZES); layers/hidden/heads/ffn override single dimensions."""
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    ffn: int | None = None
    max_positions: int | None = None
    """Learned positions for BERT/RoBERTa/GPT-2 (default max(512, block_size))."""
    dropout: float | None = None
    """Override the family's dropout (0 makes runs comparable across precisions and process layouts)."""
    init: Path | None = None
    """Continue pretraining this Hugging Face folder instead of starting from random weights."""
    tokenizer: Path | None = None
    """Tokenizer folder; default: the one in `init`, else a new one trained on the corpus."""
    vocab_size: int = 8000
    """Vocabulary size of a newly trained tokenizer."""

    block_size: int = 128
    """Tokens per block (T5: the encoder input length; the raw span is longer, see span corruption)."""
    val_fraction: float = 0.05
    """Share of the corpus tokens held out for validation."""
    cache_dir: Path | None = None
    """Token cache folder (default $LMFORGE_HOME/cache/tokens)."""

    nsp: bool = False
    """BERT: add next-sentence prediction (sentence-pair blocks, task "pretraining")."""
    static_masking: bool | None = None
    """Masks drawn once per block (default: BERT static, RoBERTa dynamic)."""
    mask_probability: float = 0.15
    plm_k: int = 6
    """XLNet partial prediction: predict the last 1/K of each factorization order."""
    plm_span: bool = False
    """XLNet: predict whole n-grams (span-based order) instead of single tokens."""
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0

    steps: int = 1000
    """Optimizer steps."""
    micro_batch: int = 16
    """Blocks per forward pass on each process."""
    accumulation: int = 1
    """Micro-batches per optimizer step on each process."""
    lr: float = 5e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None
    """Linear warmup steps (default: 6% of the steps)."""
    schedule: str = "cosine"
    """cosine, linear or constant decay after the warmup."""
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    clip: float = 1.0
    """Clip the gradient's global norm to this (0 disables)."""
    precision: str = "auto"
    """fp32, bf16 (autocast) or auto: bf16 where the hardware does bf16 matmuls fast."""

    eval_every: int = 200
    eval_blocks: int = 256
    """Validation blocks per evaluation (spread over the processes)."""
    save_every: int = 200
    log_every: int = 10
    seed: int = 0
    resume: bool = False
    """Continue from <out>/checkpoint.pt (same arguments) instead of starting over."""
    threads: int | None = None
    progress: bool = True
    device: str | None = None
    """cpu or cuda (default: cuda when available)."""
    extra: dict = field(default_factory=dict)
    """Free-form notes carried into the model card."""

    def __post_init__(self):
        self.data = [Path(p) for p in (self.data if isinstance(self.data, (list, tuple)) else [self.data])]
        self.out = Path(self.out)
        for name in ("init", "tokenizer", "cache_dir"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        self.betas = tuple(self.betas)
        self.validate()

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise ModelError(f"unknown family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        if self.size not in SIZES:
            raise ModelError(f"unknown size {self.size!r}; choose one of {', '.join(SIZES)}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ModelError(f"precision must be auto, fp32 or bf16, not {self.precision!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ModelError(f"schedule must be cosine, linear or constant, not {self.schedule!r}")
        if self.nsp and self.family != "bert":
            raise ModelError("next-sentence prediction (--nsp) is BERT's; RoBERTa dropped it")
        for name in ("steps", "micro_batch", "accumulation", "block_size", "eval_every", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ModelError(f"{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if not 0 <= self.val_fraction < 1:
            raise ModelError(f"val-fraction must be in [0, 1), not {self.val_fraction}")

    @property
    def dims(self) -> tuple[int, int, int, int]:
        layers, hidden, heads, ffn = SIZES[self.size]
        return (self.layers or layers, self.hidden or hidden, self.heads or heads, self.ffn or ffn)

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(1, int(0.06 * self.steps))

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
            elif isinstance(v, list) and v and isinstance(v[0], Path):
                d[k] = [str(p) for p in v]
        d["betas"] = list(self.betas)
        return d

    # Settings that may change between a run and its resumption without changing its result.
    RESUMABLE_CHANGES = ("resume", "progress", "threads", "eval_every", "save_every", "log_every", "steps",
                         "cache_dir", "extra", "device")
