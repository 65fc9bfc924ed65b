"""Writing result tables: Parquet-safe column types and the CSV + Parquet + JSON export."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from interp_icl.jsonable import dumps
from interp_icl.runs.files import atomic_file

LABEL_COLUMNS = ("layer", "head", "offset", "parent_offset", "source_head")


def parquet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Mixed-type label columns (ints with NaN/None) as nullable Int64 or strings."""
    table = table.copy()
    for column in table.columns:
        if table[column].dtype == object:
            values = table[column].dropna()
            if len(values) and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                table[column] = table[column].astype("Int64")
            elif len(values) and not all(isinstance(v, str) for v in values):
                table[column] = table[column].astype(str)
        elif table[column].dtype == float and column in LABEL_COLUMNS:
            table[column] = table[column].astype("Int64")
    return table


def write_table(table: pd.DataFrame, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.csv`` and ``<stem>.parquet`` into `out_dir`, each atomically."""
    table = parquet_safe(table)
    paths = [out_dir / f"{stem}.csv", out_dir / f"{stem}.parquet"]
    with atomic_file(paths[0]) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_file(paths[1]) as tmp:
        table.to_parquet(tmp, index=False)
    return paths


def write_outputs(table: pd.DataFrame, summary: dict, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.csv``, ``<stem>.parquet`` and ``<stem>.json`` into `out_dir` atomically."""
    paths = write_table(table, out_dir, stem)
    with atomic_file(out_dir / f"{stem}.json") as tmp:
        tmp.write_text(dumps(summary))
    return [*paths, out_dir / f"{stem}.json"]
