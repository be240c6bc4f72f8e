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

What survives a failed write (disk full, I/O error): every chunk already written; the temp file
of the failed write is removed; the run is marked ``"failed"`` (with ``error``) in meta.json if
meta.json can still be written, else meta.json keeps its last good content. One
:class:`~varprobe.record.errors.RunWriteError` names the path and the OS error.
"""

from __future__ import annotations

import copy
import errno
import os
import threading
import time
import uuid
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import RunWriteError
from .layout import LOCK_NAME, META_NAME, STATS_DIR, Inventory, chunk_name, chunk_tmp_name
from .lock import RunLock, describe_holder, locked_error, writer_alive
from .files import atomic_write
from .meta import (FORMAT, FORMAT_VERSION, MANAGED_KEYS, STATUSES, enclosing_run, host_info, now_iso, numeric_path,
                   to_jsonable, versions, write_json_atomic)
from .replace import check_replaceable, clear_run
from .schema import KEY_COLUMNS, RowKeys, frame_to_table

__all__ = ["RunWriter", "STATS_DIR", "chunk_name"]

_WRITER_KEYS = MANAGED_KEYS | {"status", "duration_s"}
_MAX_ERROR_MESSAGE = 2000
_FINAL_STATUSES = tuple(s for s in STATUSES if s != "running")
# errors of creating the run directory that are the disk's, not the path's
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _parquet_bytes(table: pa.Table) -> memoryview:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_page_checksum=True)
    return memoryview(sink.getvalue())


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
          Without fcntl, or with ``VARPROBE_LOCK=file``, the lock is ``<run>/.lock.owner``
          naming the holder's pid and host (``varprobe.record.lock``).

    ``meta.json`` holds ``status`` (``"running"`` until :meth:`close`), ``config`` (the
    ``meta`` argument), ``versions`` (python, torch, numpy, pandas, pyarrow, varprobe; torch
    is not imported for this), ``numeric_path`` (what decides the floating-point path of torch's
    CPU kernels when the run starts: :func:`~varprobe.record.meta.numeric_path`; null when torch
    is not imported), ``host`` (hostname, platform, pid, cpu_count: no paths),
    ``start_time``/``end_time`` (ISO 8601, UTC; ``end_time`` null until closed),
    ``duration_s``, ``chunks`` and ``rows`` (counts appended so far), ``format`` and
    ``format_version``, and any fields given to :meth:`update_meta` or :meth:`close`.

    Args:
        path: The run directory. Created (with parents) if missing; an existing empty
            directory is used as is.
        meta: The run's configuration (JSON-serialisable dict: numpy scalars and paths are
            converted, NaN/inf become null), stored under ``"config"``.
        overwrite: Replace an existing run. Only a directory that *is* a varprobe run is
            replaced: a readable ``meta.json`` of this format (valid schema, a format version
            this code reads) and nothing else than the files the run format owns
            (:mod:`~varprobe.record.layout`: ``meta.json``, ``stats/chunk-*.parquet``,
            ``.lock``, ``model.pt``, writer temp files). Those files are deleted one by one
            (``meta.json`` first), only once the lock is held (a live writer's directory is
            never touched); no directory is removed recursively. Anything else (a directory
            without meta.json, someone else's JSON, foreign files inside a run, a regular
            file, a symlink) is refused, see :mod:`~varprobe.record.replace`.

    Raises:
        FileExistsError: ``path`` is a non-empty directory and ``overwrite`` is False, or
            ``overwrite`` is True but ``path`` is not a replaceable run (see above), or
            ``path`` is a file. One line naming the path and why.
        RunLockedError: another writer holds the directory (message names it and the holder).
        RunWriteError: the disk refused the start (e.g. ENOSPC writing ``.lock`` or
            ``meta.json``): one line naming the path and the OS error. Whatever this writer
            created (the lock file, directories it made that are still empty) is removed.
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

        existing = self._check_target(overwrite)  # no side effects before this passes
        created = self._make_dirs()
        lock_created = not os.path.lexists(self._path / LOCK_NAME)
        self._lock = RunLock(self._path)
        try:
            self._lock.acquire()
        except BaseException as exc:
            if lock_created and not isinstance(exc, RuntimeError):  # RunLockedError: not ours
                _unlink_quietly(self._path / LOCK_NAME)
            self._remove_dirs(created)
            if isinstance(exc, OSError):
                raise self._start_error(exc, self._path / LOCK_NAME) from None
            raise
        stats_created = False
        doing = self._path  # what is being written, for the error message
        try:
            if not self._lock.supported:
                warnings.warn(f"the filesystem of {self._path} does not support file locks; "
                              "writing without the single-writer lock", RuntimeWarning,
                              stacklevel=2)
            if existing is not None:  # checked again under the lock, then cleared
                clear_run(self._path, check_replaceable(self._path))
            stats_created = not os.path.lexists(self._stats)
            doing = self._stats
            self._stats.mkdir(exist_ok=True)
            doing = self._path / META_NAME
            vers = versions()
            self._meta: dict[str, Any] = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "status": "running",
                "start_time": now_iso(), "end_time": None, "duration_s": None,
                "chunks": 0, "rows": 0, "config": config, "versions": vers, "numeric_path": numeric_path(),
                "written_by": f"varprobe {vers['varprobe']}", "run_id": uuid.uuid4().hex,
                "host": host_info(),
            }
            self._write_meta()
        except BaseException as exc:
            if stats_created:
                try:
                    self._stats.rmdir()
                except OSError:
                    pass
            if lock_created:
                self._lock.discard()
            else:
                self._lock.release()
            self._remove_dirs(created)
            if isinstance(exc, OSError) and not isinstance(exc, (FileExistsError, RunWriteError)):
                raise self._start_error(exc, doing) from None
            raise
        self._keys = RowKeys(lambda i: pq.read_table(self._stats / chunk_name(i), columns=list(KEY_COLUMNS)))
        self._closed = False

    # -- opening ---------------------------------------------------------------------------
    def _check_target(self, overwrite: bool) -> Inventory | None:
        """Refuse a target that must not be written; the inventory of a run to replace."""
        p = self._path
        if overwrite and p.is_symlink():
            check_replaceable(p)  # raises: nothing is replaced through a link
        outer = enclosing_run(p, itself=False)
        if outer is not None:
            raise FileExistsError(f"run path {p} is inside the varprobe run {outer}, which holds only the run "
                                  "format's files; choose a directory outside it")
        if p.exists() and not p.is_dir():
            raise FileExistsError(f"run path {p} exists and is not a directory" +
                                  ("; refusing to replace it even with overwrite=True"
                                   if overwrite else ""))
        entries = sorted(e.name for e in p.iterdir()) if p.is_dir() else []
        if not entries:
            return None
        if writer_alive(p) is True:
            raise locked_error(p, describe_holder(p))
        if not overwrite:
            raise FileExistsError(f"run directory {p} already exists and is not empty "
                                  f"({', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''}); "
                                  "pass overwrite=True to replace it, or choose another directory")
        return check_replaceable(p)

    def _make_dirs(self) -> list[Path]:
        """Create the run directory (with parents); the ones created, deepest first."""
        missing = []
        d = self._path
        while not os.path.lexists(d) and d != d.parent:
            missing.append(d)
            d = d.parent
        try:
            self._path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._remove_dirs(missing)
            if exc.errno in _DISK_ERRNOS:
                raise self._start_error(exc, self._path) from None
            raise
        return missing

    @staticmethod
    def _remove_dirs(dirs: list[Path]) -> None:
        for d in dirs:  # deepest first; stops at the first one not empty
            try:
                d.rmdir()
            except OSError:
                return

    def _start_error(self, exc: OSError, path: str | os.PathLike[str]) -> RunWriteError:
        return RunWriteError(f"cannot start run {self._path}: writing {os.fspath(path)} failed: "
                             f"{RunWriteError.describe(exc)}",
                             exc.errno, path)

    def _fail(self, exc: OSError, what: str, path: Path) -> NoReturn:
        """Mark the run failed (if meta.json can still be written), close, raise one line."""
        message = f"cannot write {what} {path}: {RunWriteError.describe(exc)}"
        failed = {**self._meta, "status": "failed", "end_time": now_iso(),
                  "duration_s": round(time.monotonic() - self._t0, 3),
                  "error": {"type": "RunWriteError", "message": message}}
        try:
            write_json_atomic(self._path / META_NAME, failed)
            self._meta = failed
            marked = "the run is marked failed in meta.json"
        except OSError:
            marked = f"{META_NAME} could not be updated either and keeps its last good content"
        finally:
            self._closed = True
            self._lock.release()
        raise RunWriteError(f"{message}; {marked}; the {self._meta['chunks']} chunk(s) already "
                            "written are intact", exc.errno, path) from None

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

    def _write_meta_or_fail(self) -> None:
        try:
            self._write_meta()
        except OSError as exc:
            self._fail(exc, "run metadata", self._path / META_NAME)

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
                ``role`` (str), ``quantity`` (str), ``value`` (float; NaN/inf kept as such).

        Returns:
            The path of the new chunk, or None if ``frame`` has no rows (nothing is written).

        Raises:
            ValueError: the frame does not match the schema (message names the column), or repeats
                a (step, mode, layer, quantity) key of an earlier chunk (what the reader refuses).
            RuntimeError: the writer is closed.
            RunWriteError: the disk refused the chunk or meta.json (e.g. ENOSPC): the temp
                file is removed, earlier chunks are intact, the run is marked failed where
                meta.json can still be written, and the writer is closed (lock released).

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
            self._keys.check(table)  # the reader refuses a run repeating a row key across chunks
            data = _parquet_bytes(table)
            index = self._meta["chunks"]
            final = self._stats / chunk_name(index)
            tmp = chunk_tmp_name(index, os.getpid())
            _unlink_quietly(self._stats / tmp)  # a leftover of a dead process that had this pid
            try:
                atomic_write(final, data, tmp_name=tmp)
            except OSError as exc:
                self._fail(exc, "chunk", final)
            self._keys.add(table)
            self._meta["chunks"] += 1
            self._meta["rows"] += table.num_rows
            self._write_meta_or_fail()
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
            RunWriteError: meta.json could not be written (as for :meth:`append`).
        """
        with self._mutex:
            self._check_open()
            self._meta.update(self._check_fields(fields))
            self._write_meta_or_fail()

    def close(self, status: str = "finished", **fields: Any) -> None:
        """Mark the run ended, write ``meta.json`` a last time and release the lock.

        Idempotent: closing a closed writer does nothing.

        Args:
            status: Final status: ``"finished"``, ``"collapsed"``, ``"failed"`` or
                ``"interrupted"`` (the values of ``meta.STATUSES`` but ``"running"``).
            **fields: Extra top-level meta fields, as for :meth:`update_meta`.

        Raises:
            ValueError: ``status`` is not one of those, or a writer-maintained key was given
                (the writer stays open).
            RunWriteError: meta.json could not be written: the lock is released and the run
                is marked failed if that write still succeeds (else meta.json is left as last
                written, ``"running"``, which readers report as interrupted).
        """
        with self._mutex:
            if self._closed:
                return
            if os.getpid() != self._owner_pid:  # a forked child's copy: leave the run alone
                self._closed = True
                return
            if not isinstance(status, str) or status not in _FINAL_STATUSES:
                raise ValueError(f"status must be a non-empty string, one of "
                                 f"{', '.join(map(repr, _FINAL_STATUSES))}; got {status!r}")
            extra = self._check_fields(fields)
            done = {**self._meta, **extra, "status": status, "end_time": now_iso(),
                    "duration_s": round(time.monotonic() - self._t0, 3)}
            try:
                write_json_atomic(self._path / META_NAME, done)
            except OSError as exc:
                self._fail(exc, "run metadata", self._path / META_NAME)
            except BaseException:
                self._closed = True
                self._lock.release()
                raise
            self._meta = done
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
