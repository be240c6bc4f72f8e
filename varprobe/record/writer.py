"""``RunWriter``: streams a run's statistics into a run directory, append-only and crash-safe.

Layout of a run directory::

    <run>/meta.json                      config, versions, host, times, status, chunk count
    <run>/stats/chunk-000000.parquet     one file per append(), numbered from 0
    <run>/stats/chunk-000001.parquet
    <run>/.lock                          flock held by the writer while it is open

What survives a kill (SIGKILL, OOM, power loss after the fsync): every chunk whose
``append()`` returned, and ``meta.json`` as last written (``status`` stays ``"running"``;
the reader reports such a run as interrupted). A chunk being written when the process dies
exists only under a temp name, which readers ignore.
"""

from __future__ import annotations

import copy
import os
import shutil
import threading
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from .lock import LOCK_NAME, RunLock, describe_holder, locked_error, writer_alive
from .meta import (FORMAT, FORMAT_VERSION, MANAGED_KEYS, META_NAME, fsync_dir, host_info,
                   now_iso, to_jsonable, versions, write_json_atomic)
from .schema import frame_to_table

__all__ = ["RunWriter", "STATS_DIR", "chunk_name"]

STATS_DIR = "stats"
_RUN_MARKERS = (META_NAME, STATS_DIR, LOCK_NAME)
_WRITER_KEYS = MANAGED_KEYS | {"status", "duration_s"}
_MAX_ERROR_MESSAGE = 2000


def chunk_name(index: int) -> str:
    """File name of chunk number ``index`` (``chunk-000000.parquet``, ...)."""
    return f"chunk-{index:06d}.parquet"


class RunWriter:
    """Writer of one run directory: ``meta.json`` plus append-only Parquet chunks.

    Guarantees:
        * Each :meth:`append` writes one new file ``stats/chunk-NNNNNN.parquet`` under a
          temp name, fsyncs it and renames it into place: a reader (even in another
          process, even while this writer is open) sees whole chunks only, and every chunk
          whose ``append`` returned survives a kill of the process.
        * ``meta.json`` is only ever replaced atomically (temp file, fsync, ``os.replace``).
        * One writer per directory: the writer holds an ``fcntl.flock`` on ``<run>/.lock``
          for its lifetime; a second writer (in any process) gets :class:`RunLockedError`.
          The OS drops the lock when the holder dies, so a killed run never blocks a rerun.

    ``meta.json`` holds ``status`` (``"running"`` until :meth:`close`), ``config`` (the
    ``meta`` argument), ``versions`` (python, torch, numpy, pandas, pyarrow, varprobe; torch
    is not imported for this), ``host`` (hostname, platform, pid, cpu_count: no paths),
    ``start_time``/``end_time`` (ISO 8601, UTC; ``end_time`` null until closed),
    ``duration_s``, ``chunks`` and ``rows`` (counts appended so far), ``format`` and
    ``format_version``, and any fields given to :meth:`update_meta` or :meth:`close`.

    Args:
        path: The run directory. Created (with parents) if missing; an existing empty
            directory is used as is.
        meta: The run's configuration (JSON-serialisable dict: numpy scalars and paths are
            converted, NaN/inf become null), stored under ``"config"``.
        overwrite: Clear an existing non-empty run directory first. Only a directory that
            looks like a run (contains ``meta.json``, ``stats/`` or ``.lock``) is cleared,
            and only once the lock is acquired (a live writer's directory is never cleared).

    Raises:
        FileExistsError: ``path`` is a non-empty directory and ``overwrite`` is False, or
            ``overwrite`` is True but the directory is not a run directory, or ``path`` is a
            file. The message names the path.
        RunLockedError: another writer holds the directory (message names it and the holder).
        TypeError: ``meta`` is not a dict or not JSON-serialisable (message names the key).

    Example:
        >>> with RunWriter("runs/r1", {"scheme": "pws", "lr": 0.1, "seed": 0}) as w:
        ...     w.append(frame)          # any number of times
        ...     w.update_meta(best_acc=0.91)
    """

    def __init__(self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None, *,
                 overwrite: bool = False) -> None:
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f"meta must be a dict (the run configuration) or None, "
                            f"got {type(meta).__name__}")
        config = to_jsonable(meta or {}, "config")
        self._path = Path(path)
        self._stats = self._path / STATS_DIR
        self._mutex = threading.RLock()
        self._closed = True  # until fully opened
        self._owner_pid = os.getpid()
        self._t0 = time.monotonic()

        self._check_target(overwrite)
        self._path.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock(self._path)
        self._lock.acquire()
        try:
            if not self._lock.supported:
                warnings.warn(f"the filesystem of {self._path} does not support file locks; "
                              "writing without the single-writer lock", RuntimeWarning,
                              stacklevel=2)
            if overwrite:
                self._clear()
            self._stats.mkdir(exist_ok=True)
            self._meta: dict[str, Any] = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "status": "running",
                "start_time": now_iso(), "end_time": None, "duration_s": None,
                "chunks": 0, "rows": 0, "config": config, "versions": versions(),
                "host": host_info(),
            }
            self._write_meta()
        except BaseException:
            self._lock.release()
            raise
        self._closed = False

    # -- opening ---------------------------------------------------------------------------
    def _check_target(self, overwrite: bool) -> None:
        p = self._path
        if p.exists() and not p.is_dir():
            raise FileExistsError(f"run path {p} exists and is not a directory")
        entries = sorted(e.name for e in p.iterdir()) if p.is_dir() else []
        if not entries:
            return
        if not overwrite:
            if writer_alive(p) is True:
                raise locked_error(p, describe_holder(p))
            raise FileExistsError(f"run directory {p} already exists and is not empty "
                                  f"({', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''}); "
                                  "pass overwrite=True to replace it, or choose another directory")
        if not any(m in entries for m in _RUN_MARKERS):
            raise FileExistsError(f"{p} is not empty and is not a varprobe run directory (no "
                                  f"{', '.join(_RUN_MARKERS)}); refusing to clear it even with "
                                  "overwrite=True")

    def _clear(self) -> None:
        # Remove meta.json first, so an interrupted clear never leaves a half-old run that
        # looks complete.
        (self._path / META_NAME).unlink(missing_ok=True)
        for entry in sorted(self._path.iterdir()):
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        fsync_dir(self._path)

    # -- state -----------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The run directory."""
        return self._path

    @property
    def meta(self) -> dict[str, Any]:
        """A copy of the metadata as last written to ``meta.json``."""
        with self._mutex:
            return copy.deepcopy(self._meta)

    @property
    def chunks(self) -> int:
        """Number of chunks written so far."""
        return self._meta["chunks"]

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"RunWriter for {self._path} is closed")
        if os.getpid() != self._owner_pid:
            raise RuntimeError(f"RunWriter for {self._path} was inherited by a forked process "
                               f"(pid {os.getpid()}); only the process that opened it "
                               f"(pid {self._owner_pid}) may write")

    def _write_meta(self) -> None:
        write_json_atomic(self._path / META_NAME, self._meta)

    def _check_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(set(fields) & _WRITER_KEYS)
        if reserved:
            raise ValueError(f"meta fields {reserved} are maintained by RunWriter and cannot be "
                             "set (status is set by close(status=...))")
        return {k: to_jsonable(v, f"meta.{k}") for k, v in fields.items()}

    # -- writing ---------------------------------------------------------------------------
    def append(self, frame: pd.DataFrame) -> Path | None:
        """Write ``frame`` as the next chunk, durably.

        Args:
            frame: Long-format statistics with exactly the columns ``step`` (int),
                ``layer`` (str), ``depth`` (int), ``mode`` (str), ``module_type`` (str),
                ``quantity`` (str), ``value`` (float; NaN/inf kept as such).

        Returns:
            The path of the new chunk, or None if ``frame`` has no rows (nothing is written).

        Raises:
            ValueError: the frame does not match the schema (message names the column).
            RuntimeError: the writer is closed.

        Once this returns, the chunk is fsynced and visible to readers under its final name;
        it survives a kill of this process. ``meta.json`` (``chunks``, ``rows``) is updated
        afterwards; readers rely on the files, not on that count.
        """
        with self._mutex:
            self._check_open()
            if not isinstance(frame, pd.DataFrame):
                raise TypeError(f"append() takes a pandas DataFrame, got {type(frame).__name__}")
            if len(frame) == 0:
                return None
            table = frame_to_table(frame)
            final = self._stats / chunk_name(self._meta["chunks"])
            tmp = self._stats / f".{final.name}.{os.getpid()}.tmp"
            try:
                with open(tmp, "wb") as f:
                    pq.write_table(table, f, compression="zstd", write_page_checksum=True)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_dir(self._stats)
            self._meta["chunks"] += 1
            self._meta["rows"] += table.num_rows
            self._write_meta()
            return final

    def update_meta(self, **fields: Any) -> None:
        """Set top-level fields of ``meta.json`` and rewrite it atomically.

        Args:
            **fields: JSON-serialisable values (numpy scalars and paths are converted,
                NaN/inf become null). ``config`` may be replaced this way; the
                writer-maintained keys (status, times, counts, versions, host, format) may not.

        Raises:
            ValueError: a writer-maintained key was given.
            TypeError: a value is not JSON-serialisable (message names the key).
            RuntimeError: the writer is closed.
        """
        with self._mutex:
            self._check_open()
            self._meta.update(self._check_fields(fields))
            self._write_meta()

    def close(self, status: str = "finished", **fields: Any) -> None:
        """Mark the run ended, write ``meta.json`` a last time and release the lock.

        Idempotent: closing a closed writer does nothing.

        Args:
            status: Final status, e.g. ``"finished"``, ``"failed"``, ``"collapsed"``.
            **fields: Extra top-level meta fields, as for :meth:`update_meta`.

        Raises:
            ValueError: ``status`` is empty or not a string, or a writer-maintained key was
                given (the writer stays open).
        """
        with self._mutex:
            if self._closed:
                return
            if os.getpid() != self._owner_pid:  # a forked child's copy: leave the run alone
                self._closed = True
                return
            if not isinstance(status, str) or not status:
                raise ValueError(f"status must be a non-empty string, got {status!r}")
            extra = self._check_fields(fields)
            try:
                self._meta.update(extra)
                self._meta["status"] = status
                self._meta["end_time"] = now_iso()
                self._meta["duration_s"] = round(time.monotonic() - self._t0, 3)
                self._write_meta()
            finally:
                self._closed = True
                self._lock.release()

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        """Close with ``"finished"``, or with ``"failed"`` and ``error`` = {type, message}
        if the body raised (the exception propagates)."""
        if exc_type is None:
            self.close("finished")
            return False
        error = {"type": exc_type.__name__, "message": str(exc)[:_MAX_ERROR_MESSAGE]}
        try:
            self.close("failed", error=error)
        except Exception as close_exc:  # never mask the body's exception
            warnings.warn(f"could not mark run {self._path} as failed: {close_exc!r}",
                          RuntimeWarning, stacklevel=2)
        return False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"RunWriter({str(self._path)!r}, {state}, chunks={self.chunks})"
