"""The single-writer lock of a run directory.

A writer holds ``fcntl.flock(LOCK_EX)`` on ``<run>/.lock`` for its whole lifetime. The
operating system releases a flock when the last descriptor of the lock file closes,
which includes the process being killed (SIGKILL included), so a lock can never go
stale: a later writer is blocked only by a process that is still alive. The lock file
itself is left in place after closing (unlinking it would race with a new writer).

Forked children (e.g. ``fork``-started DataLoader workers) would inherit the descriptor
and keep the lock alive after the parent dies; an ``os.register_at_fork`` hook closes
it in the child (closing a copy does not release the parent's lock).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import weakref
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "RunLockedError", "RunLock", "writer_alive", "describe_holder",
           "locked_error"]

LOCK_NAME = ".lock"

# A reader probing the lock holds it (shared) for microseconds; a writer retries that long.
_ACQUIRE_RETRY_S = 0.25

_HELD: "weakref.WeakSet[RunLock]" = weakref.WeakSet()


class RunLockedError(RuntimeError):
    """Another live process (or another writer in this process) is writing the run directory."""


def locked_error(run_dir: str | Path, holder: str = "") -> RunLockedError:
    """The :class:`RunLockedError` for ``run_dir``; ``holder`` is :func:`describe_holder`'s text."""
    return RunLockedError(f"run directory {run_dir} is already being written by another "
                          f"RunWriter{holder}; close that writer first, or write this run to "
                          "another directory")


def _close_in_child() -> None:
    for lock in list(_HELD):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            try:
                os.close(fd)  # closes the child's copy only; the parent keeps its lock
            except OSError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


def _unsupported(exc: OSError) -> bool:
    return exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunLock:
    """Exclusive, non-blocking flock on ``<run_dir>/.lock``.

    Args:
        run_dir: The run directory (must exist).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        self.supported = True

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock (False in a forked child)."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, retrying for a fraction of a second (a reader may be probing it).

        After the flock is granted, the lock file is checked to still be the one at
        ``<run>/.lock`` (same inode): a writer that failed at start unlinks the lock file it
        created, and a writer that opened it meanwhile then retries on the new file instead of
        holding a lock nobody else can see.

        Raises:
            RunLockedError: another writer holds it; the message names the directory and,
                when known, the holder's pid and host.
            OSError: the lock file cannot be created or written (e.g. ENOSPC); nothing is held.
        """
        deadline = time.monotonic() + _ACQUIRE_RETRY_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if self._flock(fd, deadline) and not _same_file(fd, self.path):
                    os.close(fd)  # locked an unlinked lock file: take the current one
                    continue
                info = json.dumps({"pid": os.getpid(), "hostname": socket.gethostname()}).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, info, 0)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            _HELD.add(self)
            return

    def _flock(self, fd: int, deadline: float) -> bool:
        """flock ``fd``; True if locked, False if the filesystem cannot lock (proceed unlocked)."""
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                raise locked_error(self.path.parent, _describe_holder(fd)) from None
            except OSError as exc:
                if not _unsupported(exc):
                    raise
                # The filesystem cannot lock: proceed unlocked (the caller warns).
                self.supported = False
                return False

    def release(self) -> None:
        """Release the lock (idempotent). The lock file stays in the directory."""
        fd, self._fd = self._fd, None
        _HELD.discard(self)
        if fd is None:
            return
        try:
            if self.supported:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Unlink the lock file, then release it: for a writer that created the file and failed
        before the run existed. Safe against a writer opening it meanwhile (see :meth:`acquire`)."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        self.release()

    def __del__(self) -> None:  # pragma: no cover - safety net only
        try:
            self.release()
        except Exception:
            pass


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (own.st_ino, own.st_dev)


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f" (pid {info['pid']} on host {info['hostname']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def describe_holder(run_dir: str | Path) -> str:
    """`` (pid N on host H)`` from the run's lock file, or ``""`` if unknown."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return ""
    try:
        return _describe_holder(fd)
    finally:
        os.close(fd)


def _pid_alive(meta: dict[str, Any]) -> bool | None:
    host = meta.get("host") if isinstance(meta.get("host"), dict) else {}
    pid = host.get("pid")
    if not isinstance(pid, int) or host.get("hostname") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the process exists but belongs to another user
        pass
    return True


def writer_alive(run_dir: str | Path, meta: dict[str, Any] | None = None) -> bool | None:
    """Whether a live writer currently holds the run directory's lock.

    Probes the lock with a non-blocking shared flock, released at once (a writer starting
    at that instant retries, so the probe cannot make it fail). Where the lock file is
    missing or the filesystem cannot lock, falls back to checking the pid recorded in
    ``meta["host"]`` when the run was started on this host.

    Returns:
        True if a writer is alive, False if none is, None if it cannot be told (no lock
        file and the run was started on another host).
    """
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return _pid_alive(meta or {})
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError as exc:
        if _unsupported(exc):
            return _pid_alive(meta or {})
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
