"""`load_run`: a run's config, task and hooked model at one checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from torch import nn

from interp_icl.config import RunConfig
from interp_icl.errors import CheckpointError, require
from interp_icl.models import build_model, target_offset
from interp_icl.runs import rundir
from interp_icl.seeding import derive_seed
from interp_icl.tasks import Task, make_task


@dataclass
class LoadedRun:
    """A run's config, task and hooked model at one checkpoint.

    Row t of ``model``'s output predicts token ``t + target_offset``; use
    `interp_icl.models.next_token_log_probs` for target-aligned log-probabilities of any family.
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
    (chosen,) = rundir.resolve_steps(run_dir, step)
    config = rundir.read_config(run_dir)
    task = make_task(config.task)
    model = build_model(config.model, task.vocab_size, task.seq_len, derive_seed(config.seed, "model"))
    source = rundir.checkpoint_path(run_dir, chosen)
    state, _, meta = rundir.load_checkpoint(source)
    require(
        meta.get("family") == config.model.family,
        f"checkpoint step {chosen} holds a {meta.get('family')!r} model but the config says "
        f"{config.model.family!r}",
        CheckpointError,
    )
    rundir.load_model_state(model, state, source)
    if device != "cpu":
        model = model.to(device)
    model.eval()
    return LoadedRun(run_dir, config, task, model, chosen, target_offset(model))
