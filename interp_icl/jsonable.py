"""The one JSON encoder of the package: `json.dumps(obj, default=jsonable)`.

Tensors and numpy arrays become (nested) lists, numpy / torch scalars plain numbers, sets and
tuples lists, paths strings. Anything else is a TypeError, as with `json.dumps`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def jsonable(value: Any) -> Any:
    """`default=` hook of `json.dumps` for the types results and summaries hold."""
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0:  # Tensor / ndarray
        return value.tolist()
    if hasattr(value, "item"):  # 0-d tensor, numpy scalar
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def dumps(value: Any, indent: int | None = 2) -> str:
    """`json.dumps` with `jsonable` for the types above."""
    return json.dumps(value, indent=indent, default=jsonable)


def plain(value: Any) -> Any:
    """`value` as plain JSON types (lists, dicts, numbers, strings, None): what reading its
    JSON back would give."""
    return json.loads(json.dumps(value, default=jsonable))
