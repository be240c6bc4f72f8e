"""``meta.json``: what a run directory says about itself, and how it is written safely.

``meta.json`` is only ever replaced whole (:func:`write_json_atomic`: temp file in the
same directory, fsync, ``os.replace``, fsync of the directory), so a reader sees either
the previous or the new content, never a mix, even if the writer is killed mid-write.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any, Mapping

__all__ = ["META_NAME", "FORMAT", "FORMAT_VERSION", "MANAGED_KEYS", "now_iso", "versions",
           "host_info", "to_jsonable", "write_json_atomic", "read_meta", "fsync_dir"]

META_NAME = "meta.json"
FORMAT = "varprobe-run"
FORMAT_VERSION = 1

#: Keys maintained by the writer itself; ``RunWriter.update_meta`` refuses to set them.
MANAGED_KEYS: frozenset[str] = frozenset(
    {"format", "format_version", "versions", "host", "start_time", "end_time", "chunks", "rows"})

# distribution names, each also its importable module name
_PACKAGES = ("torch", "numpy", "pandas", "pyarrow", "varprobe")


def now_iso() -> str:
    """Current UTC time as an ISO 8601 string with millisecond precision and offset."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _version(dist: str) -> str | None:
    mod = sys.modules.get(dist)
    v = getattr(mod, "__version__", None) if mod is not None else None
    if isinstance(v, str):
        return v
    try:  # reads the installed metadata; never imports the package (torch is slow to import)
        return _importlib_metadata.version(dist)
    except _importlib_metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of Python and the packages a run's numbers depend on.

    Torch is never imported for this: its version comes from the already imported module
    or from the installed distribution's metadata, and is ``None`` if not installed.
    ``varprobe`` falls back to ``"unknown"`` when it is not installed as a distribution.
    """
    out: dict[str, str | None] = {"python": platform.python_version()}
    out.update((dist, _version(dist)) for dist in _PACKAGES)
    if out["varprobe"] is None:
        out["varprobe"] = "unknown"
    return out


def host_info() -> dict[str, Any]:
    """Where the run executes: host name, platform string, process id and CPU count.

    Contains no filesystem path (no working directory, no executable path, no user name).
    """
    return {"hostname": socket.gethostname(), "platform": platform.platform(),
            "pid": os.getpid(), "cpu_count": os.cpu_count()}


def to_jsonable(value: Any, where: str = "meta") -> Any:
    """Return a strict-JSON-serialisable copy of ``value``.

    Dicts (string keys), lists, tuples, str, int, float, bool and None are kept; numpy
    scalars and 0-d arrays/tensors (anything with ``.item()``) become Python scalars;
    ``os.PathLike`` becomes ``str``; non-finite floats become ``None`` (strict JSON has no
    NaN/Infinity).

    Raises:
        TypeError: naming the offending key path and type, for anything else.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r} ({type(k).__name__})")
            out[k] = to_jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            scalar = item()
        except (ValueError, RuntimeError, TypeError):
            scalar = value  # not a single element: fall through to the error
        if scalar is not value and isinstance(scalar, (bool, int, float, str)):
            return to_jsonable(scalar, where)
    raise TypeError(f"{where} is not JSON-serialisable: {type(value).__name__} {value!r:.80}")


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically.

    The content goes to a temp file in the same directory (``.<name>.*.tmp``), is fsynced,
    and replaces ``path`` with ``os.replace``; the directory is fsynced afterwards. Readers
    see the old or the new file, never a partial one. The temp file is removed on error.

    Args:
        path: Destination file.
        data: JSON-serialisable mapping (see :func:`to_jsonable`); written with
            ``allow_nan=False``, so the file is strict JSON.
    """
    path = Path(path)
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    """Read and parse ``<run_dir>/meta.json``.

    Raises:
        FileNotFoundError: the directory or its ``meta.json`` does not exist (names the path).
        ValueError: ``meta.json`` is not valid JSON or not a JSON object (names the file).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    meta_path = run_dir / META_NAME
    try:
        text = meta_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{meta_path} not found: {run_dir} is not a varprobe run directory") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"corrupt {meta_path}: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"corrupt {meta_path}: expected a JSON object, got {type(meta).__name__}")
    return meta
