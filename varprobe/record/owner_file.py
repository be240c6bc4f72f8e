"""The lock file of the "file" lock method: ``<run>/.lock.owner``, its content and its staleness.

The file holds JSON ``{"pid", "hostname", "nonce"}`` of the writer that created it with
``O_CREAT | O_EXCL`` (``varprobe.record.lock.RunLock``). It is stale where its host is this host
and no process has its pid; a lock of another host cannot be checked from here and is never
broken.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

__all__ = ["read_owner", "owner_state", "holder_text", "break_stale", "pid_exists", "unlink_quietly"]


def unlink_quietly(path: Path) -> None:
    """Remove ``path`` if it is there; an error removing it is ignored."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def read_owner(path: Path) -> dict[str, Any] | None:
    """The content of a "file" lock, ``{}`` where it exists but is not (yet) readable, None where
    there is none."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(4096)
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        info = json.loads(data)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def owner_state(holder: dict[str, Any] | None) -> str:
    """"alive", "dead" (this host, no such pid), "elsewhere" (another host) or "unknown"
    (a lock file being written, or not one of ours) for a "file" lock's content."""
    pid, host = (holder or {}).get("pid"), (holder or {}).get("hostname")
    if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(host, str):
        return "unknown"
    if host != socket.gethostname():
        return "elsewhere"
    return "alive" if pid_exists(pid) else "dead"


def holder_text(holder: dict[str, Any] | None, path: Path | None = None, state: str = "alive") -> str:
    holder = holder or {}
    who = f" (pid {holder.get('pid')} on host {holder.get('hostname')})" if "pid" in holder else ""
    if state == "elsewhere":
        return (f"{who}, another host: its process cannot be checked from here, so the lock is never broken; "
                f"once that process is known to be gone, delete {path}")
    if state == "unknown" and path is not None:
        return f" (the lock file {path} names no pid and host; if no writer is running, delete it)"
    return who


def break_stale(path: Path, holder: dict[str, Any]) -> None:
    """Remove the stale "file" lock ``path`` whose content is ``holder``: rename it to a name of
    this process, delete it if it still is that content, else (another writer took the lock in
    between) put it back."""
    aside = path.with_name(f"{path.name}.{os.getpid()}.stale")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return  # another process broke it first
    if read_owner(aside) == holder:
        unlink_quietly(aside)
        return
    try:  # not the stale lock: a new writer's, renamed by mistake; restore unless yet another took it
        os.link(aside, path)
    except OSError:
        pass
    unlink_quietly(aside)


def pid_exists(pid: int) -> bool:
    """Whether a process with ``pid`` runs on this host. POSIX: ``os.kill(pid, 0)``. Windows, where
    signal 0 is CTRL_C_EVENT and ``os.kill`` would interrupt or terminate the process, asks the
    kernel instead (:func:`_windows_pid_exists`)."""
    if os.name == "nt":
        import ctypes

        return _windows_pid_exists(ctypes.windll.kernel32, pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the process exists but belongs to another user
        return True
    except OSError:
        return False
    return True


_QUERY_LIMITED_INFORMATION, _STILL_ACTIVE, _ACCESS_DENIED = 0x1000, 259, 5


def _windows_pid_exists(kernel32: Any, pid: int) -> bool:
    """``OpenProcess`` of ``pid``: no handle means no such process (or, access denied, one of another
    user: it exists); with a handle, the process runs while its exit code is STILL_ACTIVE."""
    import ctypes

    handle = kernel32.OpenProcess(_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return kernel32.GetLastError() == _ACCESS_DENIED
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True  # cannot tell: never call a live writer's lock stale
        return code.value == _STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
