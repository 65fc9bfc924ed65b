"""interp_icl: mechanistic interpretability of induction heads and in-context learning.

Entry points: `RunConfig` (what to train), `Trainer` (train a run directory), `load_run`
(a run's task and hooked model at a checkpoint), `make_task` and `build_model`.
"""

from interp_icl.config import ModelConfig, RunConfig, TaskConfig, TrainConfig
from interp_icl.errors import InterpICLError
from interp_icl.models import build_model, next_token_log_probs, target_offset
from interp_icl.tasks import make_task
from interp_icl.training.loading import LoadedRun, load_run
from interp_icl.training.trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "InterpICLError",
    "LoadedRun",
    "ModelConfig",
    "RunConfig",
    "TaskConfig",
    "TrainConfig",
    "Trainer",
    "build_model",
    "load_run",
    "make_task",
    "next_token_log_probs",
    "target_offset",
]
