"""From cell rows to the two tables of a sweep.

``results``: one row per cell (`interp_icl.sweeps.cell`). ``summary``: one row per setting (the
axes without the seed) with ``n_cells`` and ``n_failed``; for every number of the done cells its
mean, standard error over seeds (sample standard deviation / √n; NaN for n = 1) and n as
``<name>_mean``, ``<name>_stderr``, ``<name>_n``; for every verdict (a ``verdict.*``,
``role.<role>``, ``role.<role>.<check>`` or ``circuit.contains.<edge type>`` column of booleans; a check's measured value is the
number ``role.<role>.<check>.measured``) the rate of True among the cells where it was decided, with the
95% Wilson score interval: ``<name>_rate``, ``<name>_low``, ``<name>_high``, ``<name>_n``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from interp_icl.stats import Z95, wilson_interval  # noqa: F401  (re-exported)

ID_COLUMNS = ("cell", "setting", "seed", "status", "error", "traceback")


def results_table(rows: Sequence[dict], axes: Sequence[str]) -> pd.DataFrame:
    """One row per cell, ordered by setting then seed; columns: cell, setting, seed, the axes,
    then the measurements (verdicts as nullable booleans), wall_s, status, error."""
    table = pd.DataFrame(list(rows))
    if table.empty:
        return table
    table = table.sort_values(["setting", "seed"], kind="stable").reset_index(drop=True)
    for column in verdict_columns(table):
        table[column] = table[column].astype("boolean")
    first = ["cell", "setting", "seed", *axes]
    last = ["wall_s", "status", "error"]
    middle = [c for c in table.columns if c not in first and c not in last and c != "traceback"]
    return table[[c for c in first + middle + last if c in table.columns]]


def verdict_columns(table: pd.DataFrame) -> list[str]:
    return [
        c for c in table.columns
        if (c.startswith("verdict.") and c.count(".") == 1)
        or (c.startswith("role.") and c.count(".") in (1, 2))  # a role's verdict, or one check's
        or c.startswith("circuit.contains.")  # the circuit holds every edge of a hypothesis edge type
    ]


def number_columns(table: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    skip = {*ID_COLUMNS, *axes, *verdict_columns(table)}
    return [
        c for c in table.columns
        if c not in skip and pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
    ]


def summary_table(results: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """One row per setting: axis values, counts, means ± stderr, verdict rates with intervals."""
    if results.empty:
        return pd.DataFrame()
    numbers = number_columns(results, axes)
    verdicts = verdict_columns(results)
    rows = []
    for setting, group in results.groupby("setting", sort=True):
        row: dict = {"setting": setting}
        row.update({axis: group[axis].iloc[0] for axis in axes})
        done = group[group["status"] == "done"]
        row["n_cells"], row["n_failed"] = len(group), int((group["status"] != "done").sum())
        for column in numbers:
            values = done[column].dropna().astype(float)
            n = len(values)
            row[f"{column}_mean"] = values.mean() if n else math.nan
            row[f"{column}_stderr"] = values.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
            row[f"{column}_n"] = n
        for column in verdicts:
            decided = done[column].dropna()
            n, k = len(decided), int(decided.astype(bool).sum())
            low, high = wilson_interval(k, n)
            row[f"{column}_rate"] = k / n if n else math.nan
            row[f"{column}_low"], row[f"{column}_high"], row[f"{column}_n"] = low, high, n
        rows.append(row)
    return pd.DataFrame(rows)
