"""Run directories: the only code that knows where things live inside one.

* `load_run(path, step)` — a run's config, task and hooked model at a checkpoint;
* `create_run` / `resume_run` / `open_run` — a trainer writing into a run directory;
* `analyze_checkpoint`, `dynamics` — the analysis passes on checkpoints (stored per settings);
* `run_patch`, `patch_sweeps`, `run_roles` — patching sweeps and role experiments (stored);
* `rundir` (file names, config / metrics / checkpoint I/O), `store` (the settings-keyed result
  store), `files` (atomic writes), `tables` (CSV / Parquet / JSON exports).

Everything below this package (`analysis`, `patching`, `training`, ...) works on models, tokens
and tasks and never takes a path.
"""

from interp_icl.runs.analysis import analyze_checkpoint, dynamics
from interp_icl.runs.loading import LoadedRun, load_run
from interp_icl.runs.patching import PatchExperiment, RolesReport, patch_sweeps, run_patch, run_roles
from interp_icl.runs.rundir import resolve_steps
from interp_icl.runs.tables import write_outputs
from interp_icl.runs.training import create_run, open_run, resume_run

__all__ = [
    "LoadedRun",
    "PatchExperiment",
    "RolesReport",
    "analyze_checkpoint",
    "create_run",
    "dynamics",
    "load_run",
    "open_run",
    "patch_sweeps",
    "resolve_steps",
    "resume_run",
    "run_patch",
    "run_roles",
    "write_outputs",
]
