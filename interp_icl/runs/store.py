"""The settings-keyed result store of a run: one folder per (kind, checkpoint, settings).

    RUN/results/<kind>/step_<8 digits>-<hash>/
      table.parquet     the result's long table
      summary.json      its JSON summary
      settings.json     the settings it was computed with (the key)

`kind` names the computation ("analysis", "roles", "patch"); `<hash>` is the first 12 hex digits
of the SHA-1 of the settings' canonical JSON, so results with different settings live side by
side. `fetch` returns what reading the folder gives, whether it was just computed or stored
earlier, so callers see the same types either way. A folder is written whole or not at all; a
damaged or mismatched one is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from interp_icl.jsonable import dumps, plain
from interp_icl.runs import rundir
from interp_icl.runs.files import atomic_dir
from interp_icl.runs.tables import parquet_safe


@dataclass
class Stored:
    """One stored result: its long table, JSON summary and settings key."""

    table: pd.DataFrame
    summary: dict[str, Any]
    settings: dict[str, Any]


def settings_hash(settings: dict[str, Any]) -> str:
    text = json.dumps(plain(settings), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def entry_dir(run_dir: Path, kind: str, step: int, settings: dict[str, Any]) -> Path:
    name = f"{rundir.step_dir_name(step)}-{settings_hash(settings)}"
    return Path(run_dir) / rundir.RESULTS_DIR / kind / name


def load(run_dir: Path, kind: str, step: int, settings: dict[str, Any]) -> Stored | None:
    """The stored result, or None if there is none (or it is damaged, or its key differs)."""
    return _read(entry_dir(run_dir, kind, step, settings), plain(settings))


def save(
    run_dir: Path, kind: str, step: int, settings: dict[str, Any], table: pd.DataFrame, summary: dict
) -> Stored:
    """Store a result (replacing an earlier one with the same key) and return it as read back."""
    where = entry_dir(run_dir, kind, step, settings)
    with atomic_dir(where) as tmp:
        parquet_safe(table).to_parquet(tmp / "table.parquet", index=False)
        (tmp / "summary.json").write_text(dumps(summary))
        (tmp / "settings.json").write_text(dumps(settings))
    stored = _read(where, plain(settings))
    assert stored is not None, where
    return stored


def fetch(
    run_dir: Path,
    kind: str,
    step: int,
    settings: dict[str, Any],
    compute: Callable[[], tuple[pd.DataFrame, dict]],
    use_stored: bool = True,
) -> Stored:
    """The stored result for these settings, computing and storing it when missing."""
    if use_stored:
        stored = load(run_dir, kind, step, settings)
        if stored is not None:
            return stored
    table, summary = compute()
    return save(run_dir, kind, step, settings, table, summary)


def entries(run_dir: Path, kind: str, step: int) -> list[Stored]:
    """Every readable stored result of `kind` at `step`, in folder-name order."""
    folder = Path(run_dir) / rundir.RESULTS_DIR / kind
    found = []
    for where in sorted(folder.glob(f"{rundir.step_dir_name(step)}-*")):
        if where.name.startswith(".") or not where.is_dir():
            continue
        stored = _read(where, None)
        if stored is not None:
            found.append(stored)
    return found


def _read(where: Path, expected: dict[str, Any] | None) -> Stored | None:
    try:
        settings = json.loads((where / "settings.json").read_text())
        if expected is not None and settings != expected:
            return None
        summary = json.loads((where / "summary.json").read_text())
        table = pd.read_parquet(where / "table.parquet")
    except (OSError, ValueError):
        return None
    return Stored(table, summary, settings)
