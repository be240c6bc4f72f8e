"""The single-writer lock of a run directory, by one of two methods.

``flock`` (the default where ``fcntl`` exists): a writer holds ``fcntl.flock(LOCK_EX)`` on
``<run>/.lock`` for its whole lifetime. The operating system releases a flock when the last
descriptor of the lock file closes, which includes the process being killed (SIGKILL included),
so a lock can never go stale: a later writer is blocked only by a process that is still alive.
The lock file itself is left in place after closing (unlinking it would race with a new writer).
Forked children (e.g. ``fork``-started DataLoader workers) would inherit the descriptor and keep
the lock alive after the parent dies; an ``os.register_at_fork`` hook closes it in the child
(closing a copy does not release the parent's lock).

``file`` (the default where ``fcntl`` does not exist, e.g. Windows; chosen with the environment
variable ``VARPROBE_LOCK=file`` or ``RunLock(method="file")`` where flock is unreliable, as on
some network file systems): the lock is the file ``<run>/.lock.owner``, created with
``O_CREAT | O_EXCL`` (so only one process can create it) holding ``{"pid", "hostname", "nonce"}``,
and removed on release. A lock file left by a killed writer is stale: where its host is this host
and its pid no longer exists, the next writer breaks it (renames it away, checks that it renamed
the stale one, deletes it) and takes the lock. A lock file of another host is never broken, since
its process cannot be checked from here: the writer is refused, naming that pid, host and the file
to delete by hand once that process is known to be gone. Where ``fcntl`` exists, a writer of
either method also checks the other method's lock after taking its own, so mixed methods on one
directory still exclude each other.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: only the "file" method
    fcntl = None  # type: ignore[assignment]

from .layout import LOCK_NAME, OWNER_NAME
from .owner_file import break_stale, holder_text, owner_state, pid_exists, read_owner, unlink_quietly

__all__ = ["LOCK_NAME", "LOCK_ENV", "LOCK_METHODS", "RunLockedError", "RunLock", "lock_method",
           "writer_alive", "describe_holder", "locked_error", "try_flock"]

#: The environment variable that picks the lock method ("flock" or "file") for every writer.
LOCK_ENV = "VARPROBE_LOCK"
LOCK_METHODS = ("flock", "file")

# A reader probing the lock holds it (shared) for microseconds; a writer retries that long.
_ACQUIRE_RETRY_S = 0.25

_HELD: "weakref.WeakSet[RunLock]" = weakref.WeakSet()


def lock_method(method: str | None = None) -> str:
    """``method``, else ``$VARPROBE_LOCK``, else "flock" where ``fcntl`` exists and "file" elsewhere.

    Raises:
        ValueError: an unknown method, or "flock" where ``fcntl`` does not exist (one line naming
            the value, where it came from and the valid ones).
    """
    source = "method" if method else LOCK_ENV
    chosen = (method or os.environ.get(LOCK_ENV, "")).strip() or ("flock" if fcntl is not None else "file")
    if chosen not in LOCK_METHODS:
        raise ValueError(f"unknown lock method {chosen!r} ({source}); valid: {', '.join(LOCK_METHODS)}")
    if chosen == "flock" and fcntl is None:
        raise ValueError(f"lock method 'flock' ({source}) needs fcntl, which this platform lacks; valid here: file")
    return chosen


class RunLockedError(RuntimeError):
    """Another live process (or another writer in this process) is writing the run directory."""


def locked_error(run_dir: str | Path, holder: str = "") -> RunLockedError:
    """The :class:`RunLockedError` for ``run_dir``; ``holder`` is :func:`describe_holder`'s text."""
    return RunLockedError(f"run directory {run_dir} is already being written by another "
                          f"RunWriter{holder}; close that writer first, or write this run to "
                          "another directory")


def _close_in_child() -> None:
    for lock in list(_HELD):
        lock._nonce = None  # a file lock belongs to the parent: the child must never remove it
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


def try_flock(fd: int, shared: bool = False, unsupported: tuple[int, ...] = ()) -> bool | None:
    """A non-blocking ``flock`` of ``fd``, exclusive or ``shared``: True if taken, False if another
    process holds it, None where it cannot be taken (no ``fcntl``, or a filesystem that cannot lock:
    ENOLCK, EOPNOTSUPP, ENOSYS, EINVAL and the errnos in ``unsupported``).

    Raises:
        OSError: any other error of ``flock``.
    """
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if _unsupported(exc) or exc.errno in unsupported:
            return None
        raise
    return True


class RunLock:
    """Exclusive, non-blocking lock of ``run_dir`` (see the module docstring for the methods).

    Args:
        run_dir: The run directory (must exist).
        method: "flock", "file" or None (:func:`lock_method`: ``$VARPROBE_LOCK``, else the platform's).
    """

    def __init__(self, run_dir: str | Path, method: str | None = None) -> None:
        self.method = lock_method(method)
        self.path = Path(run_dir) / LOCK_NAME
        self.owner_path = Path(run_dir) / OWNER_NAME
        self._fd: int | None = None
        self._nonce: str | None = None  # the file method's token, while held
        self.supported = True

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock (False in a forked child)."""
        return self._fd is not None or self._nonce is not None

    def acquire(self) -> None:
        """Take the lock, retrying for a fraction of a second (a reader may be probing it).

        flock: after the flock is granted, the lock file is checked to still be the one at
        ``<run>/.lock`` (same inode): a writer that failed at start unlinks the lock file it
        created, and a writer that opened it meanwhile then retries on the new file instead of
        holding a lock nobody else can see.

        Raises:
            RunLockedError: another writer holds it; the message names the directory and,
                when known, the holder's pid and host.
            OSError: the lock file cannot be created or written (e.g. ENOSPC); nothing is held.
        """
        if self.method == "file":
            self._acquire_file()
            return
        deadline = time.monotonic() + _ACQUIRE_RETRY_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                if self._flock(fd, deadline) and not _same_file(fd, self.path):
                    os.close(fd)  # locked an unlinked lock file: take the current one
                    continue
                info = json.dumps({"pid": os.getpid(), "hostname": socket.gethostname()}).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, info, 0)
                holder = read_owner(self.owner_path)
                if holder is not None and owner_state(holder) != "dead":  # a "file" writer holds it
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    raise locked_error(self.path.parent, holder_text(holder))
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            _HELD.add(self)
            return

    def _acquire_file(self) -> None:
        """Create ``.lock.owner`` exclusively, breaking a stale one of a dead pid on this host.
        ``.lock`` is created too (never locked by this method), so that every run directory has it
        and a flock writer and this one can see each other."""
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666))
        deadline = time.monotonic() + _ACQUIRE_RETRY_S
        while True:
            try:
                fd = os.open(self.owner_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = read_owner(self.owner_path)
                state = "gone" if holder is None and not os.path.lexists(self.owner_path) else owner_state(holder)
                if state == "gone":
                    continue  # released meanwhile
                if state == "dead":
                    break_stale(self.owner_path, holder)
                    continue
                if state == "unknown" and time.monotonic() < deadline:  # being written right now
                    time.sleep(0.01)
                    continue
                raise locked_error(self.path.parent, holder_text(holder, self.owner_path, state)) from None
            nonce = uuid.uuid4().hex
            try:
                try:
                    os.write(fd, json.dumps({"pid": os.getpid(), "hostname": socket.gethostname(),
                                             "nonce": nonce}).encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if fcntl is not None and _flock_held(self.path):  # a "flock" writer holds it
                    raise locked_error(self.path.parent, _flock_holder(self.path))
            except BaseException:
                unlink_quietly(self.owner_path)
                raise
            self._nonce = nonce
            _HELD.add(self)
            return

    def _flock(self, fd: int, deadline: float) -> bool:
        """flock ``fd``; True if locked, False if the filesystem cannot lock (proceed unlocked)."""
        while True:
            taken = try_flock(fd)
            if taken:
                return True
            if taken is None:  # the filesystem cannot lock: proceed unlocked (the caller warns)
                self.supported = False
                return False
            if time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            raise locked_error(self.path.parent, _describe_holder(fd))

    def release(self) -> None:
        """Release the lock (idempotent). The flock file stays in the directory; the file
        method's lock file is removed, if it is still this lock's."""
        nonce, self._nonce = self._nonce, None
        fd, self._fd = self._fd, None
        _HELD.discard(self)
        if nonce is not None:
            holder = read_owner(self.owner_path)
            if holder is not None and holder.get("nonce") == nonce:
                os.unlink(self.owner_path)
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
        unlink_quietly(self.path)
        self.release()

    def __del__(self) -> None:  # pragma: no cover - safety net only
        try:
            self.release()
        except Exception:
            pass


def _flock_probe(path: Path) -> bool | None:
    """Whether a live process holds the flock of ``path``, by a non-blocking shared flock released
    at once (a writer starting at that instant retries, so the probe cannot make it fail); None
    where the filesystem cannot lock. FileNotFoundError where there is no such file.

    Raises:
        OSError: the file cannot be opened, or another locking error.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        taken = try_flock(fd, shared=True)
        if taken:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return None if taken is None else not taken
    finally:
        os.close(fd)


def _flock_held(path: Path) -> bool:
    """Whether a live process holds the flock of ``path`` (False where there is no such file or
    the filesystem cannot lock)."""
    try:
        return bool(_flock_probe(path))
    except OSError:
        return False


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
    """`` (pid N on host H)`` from the run's lock file (the "file" method's, else the flock
    one's), or ``""`` if unknown."""
    holder = read_owner(Path(run_dir) / OWNER_NAME)
    if holder:
        return holder_text(holder)
    return _flock_holder(Path(run_dir) / LOCK_NAME)


def _flock_holder(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY)
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
    return pid_exists(pid)


def writer_alive(run_dir: str | Path, meta: dict[str, Any] | None = None) -> bool | None:
    """Whether a live writer currently holds the run directory's lock.

    A "file" lock (``.lock.owner``) answers by its pid where it is of this host (None where it is
    of another host; True while it is being written). Otherwise the flock is probed
    (:func:`_flock_probe`). Where ``.lock`` is missing or the filesystem cannot lock,
    falls back to checking the pid recorded in ``meta["host"]`` when the run was started on this
    host. Without ``fcntl`` a flock held by a process on another machine cannot be seen: with no
    ``.lock.owner``, an existing ``.lock`` reads as no writer.

    Returns:
        True if a writer is alive, False if none is, None if it cannot be told (no lock
        file and the run was started on another host, or a "file" lock of another host).
    """
    holder = read_owner(Path(run_dir) / OWNER_NAME)
    if holder is not None:
        state = owner_state(holder)
        if state != "dead":
            return {"alive": True, "elsewhere": None, "unknown": True}[state]
    path = Path(run_dir) / LOCK_NAME
    if not os.path.lexists(path):
        return _pid_alive(meta or {})
    if fcntl is None:
        return False
    try:
        held = _flock_probe(path)
    except FileNotFoundError:
        return _pid_alive(meta or {})
    return _pid_alive(meta or {}) if held is None else held
