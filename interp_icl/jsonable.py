"""The one JSON encoder of the package (`json.dumps(obj, default=jsonable)`), and the one reader of
a user's JSON file (`read_json_file`: every problem is a one-line ConfigError).

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


def read_json_file(path: str | Path, what: str) -> Any:
    """The JSON value in the file at `path`, or a one-line ConfigError naming `what` (e.g.
    "config file") and the problem: missing, a directory, not UTF-8, unreadable, not JSON."""
    from interp_icl.errors import ConfigError, require

    path = Path(path)
    require(path.exists(), f"{what} {path} does not exist")
    require(path.is_file(), f"{what} {path} is a directory, not a JSON file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
