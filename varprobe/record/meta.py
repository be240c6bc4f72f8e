"""``meta.json``: what a run directory says about itself, and how it is written safely.

``meta.json`` is only ever replaced whole (:func:`write_json_atomic`: temp file in the
same directory, fsync, ``os.replace``, fsync of the directory), so a reader sees either
the previous or the new content, never a mix, even if the writer is killed mid-write.

On read, :func:`read_meta` checks the file against the schema of :func:`validate_meta` and
raises :class:`~varprobe.record.errors.RunFormatError` (one line naming the file and the
field) for anything else: the rest of the package never sees a malformed meta.json.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import socket
import sys
from datetime import datetime, timezone
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any, Mapping

from .. import __version__
from .errors import RunFormatError
from .files import atomic_write
from .layout import META_NAME

__all__ = ["META_NAME", "FORMAT", "FORMAT_VERSION", "MANAGED_KEYS", "STATUSES", "now_iso",
           "versions", "numeric_path", "NUMERIC_ENV", "ISA_FLAGS", "host_info", "to_jsonable", "write_json_atomic", "read_meta",
           "validate_meta", "writer_version", "enclosing_run"]

FORMAT = "varprobe-run"
#: 2: chunks have the ``role`` column; a format-1 run is read with ``role`` filled from its
#: ``module_type`` (``varprobe.record.schema.add_legacy_role``).
FORMAT_VERSION = 2

#: Keys maintained by the writer itself; ``RunWriter.update_meta`` refuses to set them.
MANAGED_KEYS: frozenset[str] = frozenset(
    {"format", "format_version", "versions", "numeric_path", "host", "start_time", "end_time", "chunks",
     "rows", "run_id", "written_by"})

#: Every value ``meta["status"]`` may take: ``"running"`` while a writer is open (or after it
#: was killed), then the status given to ``RunWriter.close``.
STATUSES: tuple[str, ...] = ("running", "finished", "collapsed", "failed", "interrupted")

# distribution names, each also its importable module name
_PACKAGES = ("torch", "numpy", "pandas", "pyarrow")


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
    ``varprobe`` is ``varprobe.__version__``, the one place the version is written.
    """
    out: dict[str, str | None] = {"python": platform.python_version()}
    out.update((dist, _version(dist)) for dist in _PACKAGES)
    out["varprobe"] = __version__
    return out


#: Environment variables that change which kernels torch's CPU path runs, recorded where set.
NUMERIC_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
               "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _build_line(config: str, start: str) -> str | None:
    line = next((x.strip() for x in config.splitlines() if x.strip().startswith(start)), None)
    return line[2:] if line is not None and line.startswith("- ") else line


def _build_setting(config: str, key: str) -> str | None:
    found = re.search(rf"\b{key}=([^,\s]+)", config)
    return found.group(1) if found else None


#: CPU flags that oneDNN and MKL dispatch on by themselves (whatever ATen's capability is).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")


def _cpu() -> tuple[str | None, list[str] | None]:
    """The CPU's model name and which of :data:`ISA_FLAGS` it has (``/proc/cpuinfo``; elsewhere
    ``platform.processor()`` and None)."""
    model, flags = None, None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip() or None
                elif key.strip() == "flags" and flags is None:
                    have = set(value.split())
                    flags = [x for x in ISA_FLAGS if x in have]
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    return model or platform.processor() or None, flags


def numeric_path() -> dict[str, Any] | None:
    """What decides the floating-point path of torch's CPU kernels in this process, or None when
    torch is not imported (it is never imported for this: a run's numbers come from a process
    that imported it).

    ``cpu_capability``: the ATen kernel level torch dispatches to
    (``torch.backends.cpu.get_cpu_capability()``: "DEFAULT", "AVX2", "AVX512", ...; the CPU's best
    unless ``ATEN_CPU_CAPABILITY`` lowers it); ``torch``: ``torch.__version__``; ``onednn``: the
    oneDNN (MKL-DNN) line of ``torch.__config__.show()`` (None when torch was built without it)
    and ``onednn_enabled`` (``torch.backends.mkldnn.enabled``); ``blas``: the build's
    ``BLAS_INFO`` and ``blas_library`` its MKL / OpenBLAS line of ``torch.__config__.show()``;
    ``threads`` and ``interop_threads`` (``torch.get_num_threads()``,
    ``torch.get_num_interop_threads()``); ``deterministic``
    (``torch.are_deterministic_algorithms_enabled()``); ``cpu`` and ``cpu_isa``: the CPU's model
    name and which of :data:`ISA_FLAGS` it has (oneDNN and MKL choose their kernels from these,
    not from ATen's capability; ``/proc/cpuinfo``, else ``platform.processor()`` and None);
    ``env``: those of :data:`NUMERIC_ENV` that are set, with their values.
    """
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "__config__"):
        return None
    config = torch.__config__.show()
    cpu, isa = _cpu()
    blas = _build_setting(config, "BLAS_INFO")
    library = {"mkl": "Intel(R) oneAPI Math Kernel Library", "open": "OpenBLAS"}.get(blas or "", blas or "")
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "onednn": _build_line(config, "- Intel(R) MKL-DNN") or _build_line(config, "- oneDNN"),
            "onednn_enabled": bool(torch.backends.mkldnn.enabled), "blas": blas,
            "blas_library": _build_line(config, f"- {library}") if library else None,
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "deterministic": bool(torch.are_deterministic_algorithms_enabled()), "cpu": cpu,
            "cpu_isa": isa,
            "env": {k: os.environ[k] for k in NUMERIC_ENV if k in os.environ}}


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


def write_json_atomic(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (:func:`~varprobe.record.files.atomic_write`:
    a temp file ``.<name>.<pid>.<random>.tmp`` in the same directory, fsynced, renamed, the
    directory fsynced; permissions those of ``open()`` under the umask). Readers see the old or the
    new file, never a partial one. The temp file is removed on error.

    Args:
        path: Destination file.
        data: JSON-serialisable mapping (see :func:`to_jsonable`); written with
            ``allow_nan=False``, so the file is strict JSON.
    """
    atomic_write(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode("utf-8"))


def enclosing_run(path: str | Path, *, itself: bool = True) -> Path | None:
    """The varprobe run directory that is ``path`` (with ``itself``) or holds it, or None.

    A directory is a run when its ``meta.json`` is a JSON object whose ``format`` is this run
    format's; someone else's ``meta.json`` (a package's, a data set's) does not count. Nothing
    varprobe writes outside the run format may go inside a run: a foreign file there makes the run
    one that ``overwrite`` refuses to replace.
    """
    here = Path(os.path.abspath(path))
    for d in ([here] if itself else []) + list(here.parents):
        meta = d / META_NAME
        try:
            if meta.is_file() and json.loads(meta.read_bytes()).get("format") == FORMAT:
                return d
        except (OSError, ValueError, AttributeError):
            continue
    return None


def read_meta(run_dir: str | Path, *, validate: bool = True) -> dict[str, Any]:
    """Read and parse ``<run_dir>/meta.json``, and check it with :func:`validate_meta`.

    Args:
        run_dir: The run directory.
        validate: Check the schema (default). Only the JSON syntax is checked otherwise.

    Raises:
        FileNotFoundError: the directory or its ``meta.json`` does not exist (names the path).
        RunFormatError: (a ``ValueError``) ``meta.json`` is not valid JSON, not a JSON
            object, or not a valid meta.json of this format (names the file and the field).
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
    except UnicodeDecodeError as exc:
        raise RunFormatError(f"corrupt {meta_path}: not UTF-8 text ({exc.reason})",
                             meta_path) from None
    except IsADirectoryError:
        raise RunFormatError(f"{meta_path} is a directory, not a file: {run_dir} is not a "
                             "varprobe run directory", meta_path) from None
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RunFormatError(f"corrupt {meta_path}: {exc}", meta_path) from None
    if not isinstance(meta, dict):
        raise RunFormatError(f"corrupt {meta_path}: expected a JSON object, got "
                             f"{type(meta).__name__}", meta_path)
    if validate:
        validate_meta(meta, meta_path)
    return meta


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def writer_version(meta: Mapping[str, Any]) -> str:
    """Which varprobe wrote ``meta`` (``written_by``, else ``versions.varprobe``), or "unknown"."""
    written_by = meta.get("written_by")
    if isinstance(written_by, str) and written_by:
        return written_by
    vers = meta.get("versions")
    v = vers.get("varprobe") if isinstance(vers, dict) else None
    return f"varprobe {v}" if isinstance(v, str) and v else "an unknown varprobe version"


# field -> (check, what it must be); checked when the field is present
_OPTIONAL: dict[str, tuple[Any, str]] = {
    "start_time": (lambda v: isinstance(v, str), "an ISO 8601 string"),
    "end_time": (lambda v: v is None or isinstance(v, str), "an ISO 8601 string or null"),
    "duration_s": (lambda v: v is None or (_is_number(v) and v >= 0),
                   "a non-negative number or null"),
    "versions": (lambda v: isinstance(v, dict) and all(x is None or isinstance(x, str)
                                                       for x in v.values()),
                 "an object of version strings (or null)"),
    "host": (lambda v: isinstance(v, dict), "an object"),
    "numeric_path": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "run_id": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "written_by": (lambda v: isinstance(v, str), "a string"),
}


def validate_meta(meta: Mapping[str, Any], meta_path: str | os.PathLike[str] = META_NAME) -> None:
    """Check a parsed ``meta.json`` against the run format.

    Required: ``format`` == ``"varprobe-run"``; ``format_version`` an integer from 1 to
    :data:`FORMAT_VERSION` (a newer one is refused, naming the varprobe that wrote it);
    ``status`` one of :data:`STATUSES`; ``config`` an object; ``chunks`` and ``rows``
    non-negative integers. Typed when present: ``start_time`` (str), ``end_time`` (str or
    null), ``duration_s`` (non-negative number or null), ``versions`` (object of str/null),
    ``host`` (object), ``numeric_path`` (object or null), ``run_id`` (non-empty str), ``written_by`` (str). Fields set through
    ``RunWriter.update_meta``/``close`` (e.g. ``result``, ``error``) are the caller's and free.

    Raises:
        RunFormatError: one line naming ``meta_path``, the field, what it must be and what it is.
    """
    def bad(field: str, must: str, prefix: str = "") -> RunFormatError:
        got = f"got {_show(meta[field])}" if field in meta else "but it is missing"
        return RunFormatError(f"{meta_path}: {prefix}field {field!r} must be {must}, {got}",
                              meta_path, field)

    if meta.get("format") != FORMAT:
        raise bad("format", repr(FORMAT), prefix="not a varprobe run's meta.json: ")
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        raise bad("format_version", f"an integer from 1 to {FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise RunFormatError(
            f"{meta_path}: field 'format_version' is {version}, newer than this varprobe reads "
            f"(up to {FORMAT_VERSION}); the run was written by {writer_version(meta)}: upgrade "
            f"varprobe (this is {versions()['varprobe']}) to read it", meta_path, "format_version")
    status = meta.get("status")
    if not isinstance(status, str) or status not in STATUSES:
        raise bad("status", "one of " + ", ".join(repr(s) for s in STATUSES))
    if not isinstance(meta.get("config"), dict):
        raise bad("config", "an object (the run configuration)")
    for field in ("chunks", "rows"):
        value = meta.get(field)
        if not _is_int(value) or value < 0:
            raise bad(field, "a non-negative integer")
    for field, (ok, must) in _OPTIONAL.items():
        if field in meta and not ok(meta[field]):
            raise bad(field, must)
