"""The two errors a run directory raises for its own reasons: a bad ``meta.json`` on read, and a
failed write (full disk, I/O error) on write. Both print as one line naming the file."""

from __future__ import annotations

import errno as _errno
import os

__all__ = ["RunFormatError", "RunWriteError"]


class RunFormatError(ValueError):
    """``meta.json`` (or a chunk listing) does not follow the run format: not JSON, not a
    varprobe run, a newer format version, or a field of the wrong type or value.

    ``str()`` is one line naming the file and the field; the CLI turns it into exit 2.

    Attributes:
        path: The offending file.
        field: The offending field (``None`` when the whole file is unreadable).
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None,
                 field: str | None = None) -> None:
        super().__init__(" ".join(str(message).split()))  # one line, whatever was embedded
        self.path = None if path is None else os.fspath(path)
        self.field = field


class RunWriteError(OSError):
    """Writing a run directory failed at the OS level (e.g. ``ENOSPC``, disk full).

    ``str()`` is one line naming the path and the OS error; it is raised with the
    original exception's chain suppressed (``raise ... from None``), so a CLI prints one line.
    ``errno`` and ``filename`` are those of the failed operation.
    """

    def __init__(self, message: str, errno: int | None = None,
                 filename: str | os.PathLike[str] | None = None) -> None:
        super().__init__(" ".join(str(message).split()))
        self.errno = errno
        self.filename = None if filename is None else os.fspath(filename)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    @staticmethod
    def describe(exc: OSError) -> str:
        """``"No space left on device (ENOSPC)"`` for an OSError, or its text."""
        code = _errno.errorcode.get(exc.errno) if isinstance(exc.errno, int) else None
        text = exc.strerror or str(exc) or type(exc).__name__
        return f"{text} ({code})" if code else text
