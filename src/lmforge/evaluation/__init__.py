"""Metrics (thin wrappers over scikit-learn, rouge-score and sacrebleu) and, later, the comparative study."""
from .metrics import METRICS, accuracy, bleu, chrf, compute, f1, mcc, normalize_answer, perplexity, rouge, squad

__all__ = ["METRICS", "accuracy", "bleu", "chrf", "compute", "f1", "mcc", "normalize_answer", "perplexity",
           "rouge", "squad"]
