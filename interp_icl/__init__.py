"""interp_icl: mechanistic interpretability of induction heads and in-context learning.

Entry points: `RunConfig` (what to train), `create_run` / `open_run` (a trainer writing a run
directory), `load_run` (a run's task and hooked model at a checkpoint), `make_task` and
`build_model`; `interp_icl.runs` for everything else done on run directories.
Heavy modules (torch, TransformerLens) are imported on first use, so the CLI answers bad input fast.
"""

from importlib import import_module
from typing import Any

from interp_icl.config import ModelConfig, RunConfig, TaskConfig, TrainConfig
from interp_icl.errors import InterpICLError

__version__ = "0.1.0"

_LAZY = {
    "LoadedRun": "interp_icl.runs.loading",
    "load_run": "interp_icl.runs.loading",
    "create_run": "interp_icl.runs.training",
    "open_run": "interp_icl.runs.training",
    "Trainer": "interp_icl.training.trainer",
    "build_model": "interp_icl.models",
    "next_token_log_probs": "interp_icl.models",
    "target_offset": "interp_icl.models",
    "make_task": "interp_icl.tasks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'interp_icl' has no attribute {name!r}")


__all__ = ["InterpICLError", "ModelConfig", "RunConfig", "TaskConfig", "TrainConfig", *_LAZY]
