"""Fine-tuning and evaluation on the applications the families are used for.

The registry (registry.yaml, checked by registry.TaskSpec) lists the tasks; readers.py reads benchmarks'
local copies and users' files; formatting.py decides how each family meets each task and builds inputs;
finetune.py trains; evaluate.py scores; inference.py holds the helpers the server calls.
"""
from .evaluate import EvalResult, evaluate, open_predictor
from .finetune import FinetuneArgs, FinetuneResult, finetune
from .formatting import choose_mode
from .inference import Predictor
from .registry import TaskSpec, get_task, registry

__all__ = ["EvalResult", "FinetuneArgs", "FinetuneResult", "Predictor", "TaskSpec", "choose_mode", "evaluate",
           "finetune", "get_task", "open_predictor", "registry"]
