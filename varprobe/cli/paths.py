"""Output paths checked before anything starts: why a directory or file cannot be written.

Each function returns None when the path is usable, else one sentence naming the path, what is
wrong and what to choose instead, for a usage error (exit 2).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["directory_problem", "file_problem"]


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a parent that cannot be searched
        return True


def _first_existing(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists (``.`` for a relative path)."""
    for candidate in (path, *path.parents):
        if _exists(candidate):
            return candidate
    return Path(".")


def directory_problem(path: str | os.PathLike) -> str | None:
    """Why directory ``path`` cannot be used or created (None if it can): it is a file, it lies
    under a file, or its nearest existing ancestor refuses new entries (tried for real with a
    temporary directory, removed at once; nothing else is created)."""
    path = Path(path)
    if _exists(path) and not path.is_dir():
        return f"{path} exists and is not a directory; choose a directory (new, or one of yours)"
    base = _first_existing(path)
    if not base.is_dir():
        return f"{path} cannot be created: {base} is a file, not a directory; choose a path under a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".varprobe-check-", dir=base))
    except OSError as exc:
        where = "" if base == path else f" in {base}"
        return (f"{path} cannot be {'written' if base == path else 'created'}{where}: "
                f"{exc.strerror or exc}; choose a writable location")
    return None


def file_problem(path: str | os.PathLike) -> str | None:
    """Why file ``path`` cannot be written (None if it can): it is a directory, or its parent
    directory cannot be used or created (:func:`directory_problem`). An existing file is replaced."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a directory; give a file name, e.g. {path / ('figure' + path.suffix)}"
    problem = directory_problem(path.parent)
    return None if problem is None else f"{path} cannot be written: {problem}"
