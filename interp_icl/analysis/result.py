"""The result object every analysis pass returns, and the statistics they share.

A `PassResult` holds
  * ``table``: a long-format pandas DataFrame, one row per (unit, metric) with columns
    ``unit`` (a readable label such as ``"L0H1 r=2"``), ``metric``, ``mean``, ``stderr``, ``n``
    (number of independent sequences behind the mean) and any structured columns that identify
    the unit (``layer``, ``head``, ``offset``, ...);
  * ``summary``: a JSON-serialisable dict of headline numbers.

Standard errors are taken over sequences: per-position values are first averaged within each
sequence, so correlated positions of one sequence are never counted as independent samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from interp_icl.jsonable import dumps

TABLE_COLUMNS = ("unit", "metric", "mean", "stderr", "n")


@dataclass
class PassResult:
    name: str
    table: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return dumps({"pass": self.name, "summary": self.summary})


def set_label(offsets) -> str:
    """Compact label of an offset set, ``(1, 2) -> "{1,2}"`` (used as a table key)."""
    return "{" + ",".join(str(o) for o in sorted(offsets)) + "}"


def set_text(offsets) -> str:
    """An offset set for people to read, in the given order: ``[1, 2] -> "{1, 2}"``; ``–`` for
    None (a task without parents)."""
    if offsets is None:
        return "–"
    return "{" + ", ".join(map(str, offsets)) + "}"


def mean_stderr(per_sequence: Tensor) -> tuple[float, float, int]:
    """Mean, standard error and count of per-sequence values ``[n]`` (NaNs dropped).

    stderr = sample standard deviation / sqrt(n); NaN when fewer than two values.
    """
    values = per_sequence.detach().double().flatten()
    values = values[~torch.isnan(values)]
    n = int(values.numel())
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(values.mean())
    stderr = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return mean, stderr, n


def row(unit: str, metric: str, per_sequence: Tensor, **labels: Any) -> dict[str, Any]:
    """One table row from per-sequence values ``[n]``."""
    mean, stderr, n = mean_stderr(per_sequence)
    return {"unit": unit, "metric": metric, "mean": mean, "stderr": stderr, "n": n, **labels}


def scalar_row(unit: str, metric: str, value: float, n: int, **labels: Any) -> dict[str, Any]:
    """A row for a number with no sampling error (a parameter, a fitted slope's point value)."""
    return {"unit": unit, "metric": metric, "mean": float(value), "stderr": math.nan, "n": n, **labels}


def make_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with the standard columns first."""
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    extra = [c for c in table.columns if c not in TABLE_COLUMNS]
    return table[[*TABLE_COLUMNS, *extra]]


def per_sequence_mean(values: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over every dim but the first, ``[B, ...] -> [B]``; with a boolean mask of the same
    shape only masked-in entries count (NaN for a sequence with none)."""
    flat = values.reshape(values.shape[0], -1).double()
    if mask is None:
        return flat.mean(1)
    m = mask.reshape(mask.shape[0], -1).to(flat.dtype)
    count = m.sum(1)
    total = (flat * m).sum(1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))
