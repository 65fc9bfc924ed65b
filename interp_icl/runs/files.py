"""Atomic writes: a reader never sees half a file or half a directory.

`atomic_file(path)` yields a temporary sibling to write; it replaces `path` only once the block
finishes, and is removed if the block raises. `atomic_dir(path)` does the same for a directory
(its old contents are replaced whole). `write_text` and `write_json` are the common cases.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from interp_icl.jsonable import dumps


def umask() -> int:
    """The process's file-creation mask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `path`; on success it replaces `path` whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o777 & ~umask())  # mkdtemp makes it private; ours are ordinary directories
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, value: Any, indent: int | None = 2) -> None:
    write_text(path, dumps(value, indent))


def check_output_dir(path: Path, option: str) -> None:
    """Raise a one-line error unless `path` can be made into (or is) a writable directory:
    checked before any work starts, so a bad output path never wastes a computation."""
    _check_writable(Path(path), option, want_dir=True)


def check_output_file(path: Path, option: str) -> None:
    """Raise a one-line error unless a file can be written at `path` (its folders may be
    missing; none of them may be a file, and `path` itself may not be a directory)."""
    _check_writable(Path(path), option, want_dir=False)


def _check_writable(path: Path, option: str, want_dir: bool) -> None:
    from interp_icl.errors import ConfigError, require

    if path.exists():
        if want_dir:
            require(path.is_dir(), f"{option} {path} is a file, not a directory; name a directory", ConfigError)
        else:
            require(not path.is_dir(), f"{option} {path} is a directory; name a file in it", ConfigError)
    existing = path if (want_dir and path.exists()) else path.parent
    while not existing.exists():
        existing = existing.parent
    require(
        existing.is_dir(),
        f"{option} {path}: {existing} is a file, so nothing can be written below it",
        ConfigError,
    )
    require(os.access(existing, os.W_OK | os.X_OK), f"{option} {path}: {existing} is not writable", ConfigError)
