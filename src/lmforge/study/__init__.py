"""The comparative study: the five families pretrained, fine-tuned and measured on equal terms, as a report.

    from lmforge.study import StudyArgs, run_study
    results = run_study(StudyArgs(budget="200k", corpus=["corpus.txt"], out="report/"))
"""
from .args import Budget, StudyArgs
from .runner import run_study

__all__ = ["Budget", "StudyArgs", "run_study"]
