"""The run directory: the one place that knows its file names and formats.

    runs/<name>/
      config.json                                  complete RunConfig incl. package versions
      metrics.jsonl                                one JSON object per evaluation step
      checkpoints/step_<8 digits>.safetensors      weights (+ optimizer state for resume)
      results/<kind>/step_<8 digits>-<hash>/       stored results (`interp_icl.runs.store`)
      analysis/, patching/                         exported tables of `interp-icl analyze|patch`
      report.html, report_data/                    `interp-icl report`

Every file is written atomically (`interp_icl.runs.files`). A checkpoint holds
``model.<state-dict key>`` tensors, ``optim.<param>.<name>`` optimizer tensors and string
metadata: format tag, step, stage, model family and the optimizer's JSON state.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from interp_icl.config import RunConfig
from interp_icl.errors import CheckpointError, ConfigError, require
from interp_icl.runs.files import atomic_file, write_text

CHECKPOINT_FORMAT = "interp_icl.checkpoint/1"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
RESULTS_DIR = "results"
ANALYSIS_EXPORTS = "analysis"  # default --out of `interp-icl analyze`
PATCHING_EXPORTS = "patching"  # default --out of `interp-icl patch`
REPORT_FILE = "report.html"
VERSIONED_PACKAGES = (
    "interp-icl",
    "torch",
    "transformer-lens",
    "numpy",
    "safetensors",
    "pandas",
    "plotly",
    "circuitsvis",
    "typer",
    "rich",
)


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a run's numbers depend on."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# ----------------------------------------------------------------------------- names


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.safetensors"


def step_dir_name(step: int) -> str:
    """``step_<8 digits>``: how a checkpoint's step names a file or folder."""
    return f"step_{step:08d}"


def export_stem(kind: str, step: int) -> str:
    """Stem of an exported table of one checkpoint, e.g. ``analysis_step500``, ``roles_step500``."""
    return f"{kind}_step{step}"


# ----------------------------------------------------------------------------- config


def create_run_dir(run_dir: Path, config: RunConfig, force: bool) -> None:
    """Make an empty run directory holding config.json; refuse to overwrite without `force`."""
    if run_dir.exists() and any(run_dir.iterdir()):
        require(
            force,
            f"run directory {run_dir} already exists; pass --force to overwrite it or --resume "
            "to continue it",
            ConfigError,
        )
        require(
            (run_dir / CONFIG_FILE).is_file(),
            f"{run_dir} is not a run directory (no config.json); refusing to delete it",
            ConfigError,
        )
        shutil.rmtree(run_dir)
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    write_text(run_dir / CONFIG_FILE, config.to_json() + "\n")


def is_run_dir(path: Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    require(path.is_file(), f"{run_dir} is not a run directory (no config.json)", CheckpointError)
    return RunConfig.from_file(path)


def recorded_versions(run_dir: Path) -> dict[str, str]:
    """The package versions stored in config.json when the run was made."""
    return json.loads((Path(run_dir) / CONFIG_FILE).read_text()).get("versions", {})


# ----------------------------------------------------------------------------- metrics


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    with open(Path(run_dir) / METRICS_FILE, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl; a truncated final line (a run killed mid-write) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            require(i == len(lines) - 1, f"{path} line {i + 1} is not valid JSON", CheckpointError)
    return rows


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Keep only the rows with step <= last_step (used when resuming from a checkpoint)."""
    rows = [r for r in read_metrics(run_dir) if r["step"] <= last_step]
    write_text(Path(run_dir) / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in rows))


# ----------------------------------------------------------------------------- checkpoints


def list_checkpoints(run_dir: Path) -> list[int]:
    """Steps of the checkpoints present, ascending."""
    steps = []
    for path in (Path(run_dir) / CHECKPOINT_DIR).glob("step_*.safetensors"):
        try:
            steps.append(int(path.stem.removeprefix("step_")))
        except ValueError:
            continue
    return sorted(steps)


def resolve_steps(run_dir: str | Path, step: int | str) -> list[int]:
    """"all" -> every checkpoint, "last" -> the newest, an int -> [that step] (checked)."""
    run_dir = Path(run_dir)
    require(run_dir.exists(), f"run directory {run_dir} does not exist", CheckpointError)
    require(run_dir.is_dir(), f"{run_dir} is a file, not a run directory", CheckpointError)
    steps = list_checkpoints(run_dir)
    require(steps, f"{run_dir} has no checkpoints", CheckpointError)
    if step == "all":
        return steps
    if step == "last":
        return [steps[-1]]
    require(
        isinstance(step, int) and step in steps,
        f"{run_dir} has no checkpoint at step {step}; available: {_summarise(steps)}",
        CheckpointError,
    )
    return [int(step)]


def _summarise(steps: list[int]) -> str:
    if len(steps) <= 8:
        return ", ".join(map(str, steps))
    return f"{', '.join(map(str, steps[:4]))}, ..., {', '.join(map(str, steps[-3:]))}"


def save_checkpoint(
    run_dir: Path,
    step: int,
    stage: int,
    family: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
) -> Path:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_json: dict[str, Any] = {}
    if optimizer is not None:
        state = optimizer.state_dict()
        plain_state: dict[str, dict[str, Any]] = {}
        for index, entries in state["state"].items():
            for name, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
                else:
                    plain_state.setdefault(str(index), {})[name] = value
        optim_json = {"param_groups": state["param_groups"], "plain_state": plain_state}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "step": str(step),
        "stage": str(stage),
        "family": family,
        "optimizer": json.dumps(optim_json),
    }
    path = checkpoint_path(run_dir, step)
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, str]]:
    """(model state dict, optimizer state dict or {}, metadata) of a checkpoint file."""
    require(path.is_file(), f"checkpoint {path} does not exist", CheckpointError)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or corrupt): {exc}") from None
    require(
        meta.get("format") == CHECKPOINT_FORMAT,
        f"{path} is not an interp_icl checkpoint (format tag {meta.get('format')!r})",
        CheckpointError,
    )
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    optim_json = json.loads(meta.get("optimizer", "{}"))
    optim_state: dict[str, Any] = {}
    if optim_json:
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        for index, entries in optim_json["plain_state"].items():
            state.setdefault(int(index), {}).update(entries)
        optim_state = {"state": state, "param_groups": optim_json["param_groups"]}
    return model_state, optim_state, meta


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load weights, turning any key or shape mismatch into a one-line CheckpointError."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
    if wrong_shape:
        k = wrong_shape[0]
        problems.append(f"shape of {k} is {tuple(state[k].shape)}, config needs {tuple(own[k].shape)}")
    require(
        not problems,
        f"checkpoint {source} does not match the run's config: {'; '.join(problems)}",
        CheckpointError,
    )
    model.load_state_dict(state)


class RunRecorder:
    """What the trainer writes into a run directory: metrics rows and checkpoints
    (implements `interp_icl.training.trainer.Recorder`)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append_metrics(self, row: dict[str, Any]) -> None:
        append_metrics(self.path, row)

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def has_checkpoints(self) -> bool:
        return bool(list_checkpoints(self.path))

    def save_checkpoint(
        self, step: int, stage: int, family: str, model: nn.Module, optimizer: torch.optim.Optimizer | None
    ) -> None:
        save_checkpoint(self.path, step, stage, family, model, optimizer)
