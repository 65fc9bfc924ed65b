"""`load_run`: everything a downstream user needs from a run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from torch import nn

from interp_icl.config import RunConfig
from interp_icl.errors import CheckpointError, require
from interp_icl.models import build_model, target_offset
from interp_icl.tasks import Task, make_task
from interp_icl.training import rundir
from interp_icl.training.seeding import derive_seed


@dataclass
class LoadedRun:
    """A run's config, task and hooked model at one checkpoint.

    Row t of ``model``'s output predicts token ``t + target_offset``; use
    `interp_icl.models.next_token_log_probs` for target-aligned log-probabilities of either family.
    """

    path: Path
    config: RunConfig
    task: Task
    model: nn.Module
    step: int
    target_offset: int

    @property
    def steps(self) -> list[int]:
        """Steps of every checkpoint of the run."""
        return rundir.list_checkpoints(self.path)

    def metrics(self) -> pd.DataFrame:
        """metrics.jsonl as a DataFrame, one row per evaluation step."""
        return pd.DataFrame(rundir.read_metrics(self.path))


def load_run(path: str | Path, step: int | str = "last", device: str = "cpu") -> LoadedRun:
    """Load the run at `path` with the weights of checkpoint `step` ("last" for the newest)."""
    run_dir = Path(path)
    require(run_dir.is_dir(), f"run directory {run_dir} does not exist", CheckpointError)
    config = rundir.read_config(run_dir)
    steps = rundir.list_checkpoints(run_dir)
    require(steps, f"{run_dir} has no checkpoints", CheckpointError)
    if step == "last":
        chosen = steps[-1]
    else:
        require(
            isinstance(step, int) and step in steps,
            f"{run_dir} has no checkpoint at step {step}; available: {_summarise(steps)}",
            CheckpointError,
        )
        chosen = int(step)
    task = make_task(config.task)
    model = build_model(config.model, task.vocab_size, task.seq_len, derive_seed(config.seed, "model"))
    state, _, meta = rundir.load_checkpoint(rundir.checkpoint_path(run_dir, chosen))
    require(
        meta.get("family") == config.model.family,
        f"checkpoint step {chosen} holds a {meta.get('family')!r} model but the config says "
        f"{config.model.family!r}",
        CheckpointError,
    )
    rundir.load_model_state(model, state, rundir.checkpoint_path(run_dir, chosen))
    if device != "cpu":
        model = model.to(device)
    model.eval()
    return LoadedRun(run_dir, config, task, model, chosen, target_offset(model))


def _summarise(steps: list[int]) -> str:
    if len(steps) <= 8:
        return ", ".join(map(str, steps))
    return f"{', '.join(map(str, steps[:4]))}, ..., {', '.join(map(str, steps[-3:]))}"
