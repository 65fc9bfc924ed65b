"""The run directory: config, metrics and checkpoints of one training run.

    runs/<name>/
      config.json                                  complete RunConfig incl. package versions
      metrics.jsonl                                one JSON object per evaluation step
      checkpoints/step_<8 digits>.safetensors      weights (+ optimizer state for resume)

Files are written to a temporary name and renamed, so a reader never sees half a file.
A checkpoint holds ``model.<state-dict key>`` tensors, ``optim.<param>.<name>`` optimizer tensors
and string metadata: format tag, step, stage, model family and the optimizer's JSON state.
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from interp_icl.config import RunConfig
from interp_icl.errors import CheckpointError, ConfigError, require

CHECKPOINT_FORMAT = "interp_icl.checkpoint/1"
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


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}.safetensors"


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
            (run_dir / "config.json").is_file(),
            f"{run_dir} is not a run directory (no config.json); refusing to delete it",
            ConfigError,
        )
        shutil.rmtree(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", config.to_json() + "\n")


def read_config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.json"
    require(path.is_file(), f"{run_dir} is not a run directory (no config.json)", CheckpointError)
    return RunConfig.from_file(path)


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl; a truncated final line (a run killed mid-write) is skipped."""
    path = run_dir / "metrics.jsonl"
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
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def list_checkpoints(run_dir: Path) -> list[int]:
    """Steps of the checkpoints present, ascending."""
    steps = []
    for path in (run_dir / "checkpoints").glob("step_*.safetensors"):
        try:
            steps.append(int(path.stem.removeprefix("step_")))
        except ValueError:
            continue
    return sorted(steps)


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
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, str]]:
    """(model state dict, optimizer state dict or {}, metadata) of a checkpoint file."""
    require(path.is_file(), f"checkpoint {path} does not exist", CheckpointError)
    try:
        from safetensors import safe_open

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
