"""Training a run directory: create it, resume it from its newest checkpoint, or either.

The trainer (`interp_icl.training.trainer.Trainer`) knows nothing of files; these functions give
it a `RunRecorder` of the directory and restore its state from a checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from interp_icl.config import RunConfig
from interp_icl.errors import CheckpointError, require
from interp_icl.runs import rundir
from interp_icl.training.trainer import Trainer


def create_run(config: RunConfig, run_dir: str | Path, force: bool = False, progress: bool = True) -> Trainer:
    """A trainer of a new run directory holding `config` (with the package versions recorded);
    an existing non-empty directory needs `force`. Everything is validated before the disk is
    touched."""
    run_dir = Path(run_dir)
    config = RunConfig.from_dict({**config.to_dict(), "versions": rundir.package_versions()})
    trainer = Trainer(config, rundir.RunRecorder(run_dir), progress)
    rundir.create_run_dir(run_dir, config, force)
    return trainer


def resume_run(run_dir: str | Path, progress: bool = True) -> Trainer:
    """The trainer of `run_dir`, restored from its newest checkpoint (metrics after it dropped)."""
    run_dir = Path(run_dir)
    config = rundir.read_config(run_dir)
    trainer = Trainer(config, rundir.RunRecorder(run_dir), progress)
    steps = rundir.list_checkpoints(run_dir)
    require(steps, f"{run_dir} has no checkpoint to resume from", CheckpointError)
    source = rundir.checkpoint_path(run_dir, steps[-1])
    state, optim_state, meta = rundir.load_checkpoint(source)
    rundir.load_model_state(trainer.model, state, source)
    trainer.restore(int(meta["step"]), int(meta["stage"]), optim_state)
    rundir.truncate_metrics(run_dir, trainer.step)
    return trainer


def config_differences(stored: RunConfig, wanted: RunConfig) -> list[str]:
    """Dotted keys whose values differ between two run configs (package versions ignored)."""
    a, b = stored.to_dict(), wanted.to_dict()
    diffs = []
    for section in ("task", "model", "train"):
        keys = dict.fromkeys([*a[section], *b[section]])
        diffs += [f"{section}.{k}" for k in keys if a[section].get(k) != b[section].get(k)]
    diffs += [k for k in ("name", "seed") if a[k] != b[k]]
    return diffs


def open_run(
    config: RunConfig, run_dir: str | Path, resume: bool, force: bool = False, progress: bool = True
) -> Trainer:
    """The trainer of `run_dir`: resumed from its newest checkpoint when `resume` and it has one
    (its config must equal `config`, else a one-line error), otherwise a new run (an existing
    non-empty directory needs `force`). ``.run()`` trains it to the end; a complete run does
    nothing more."""
    run_dir = Path(run_dir)
    if resume and rundir.list_checkpoints(run_dir):
        diffs = config_differences(rundir.read_config(run_dir), config)
        require(
            not diffs,
            f"cannot resume {run_dir}: its config differs in {', '.join(diffs)}; use --force to "
            "start over",
        )
        return resume_run(run_dir, progress=progress)
    return create_run(config, run_dir, force=force, progress=progress)
