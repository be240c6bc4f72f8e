"""The one write path: every file varprobe makes is created here, and only where it may be.

Two rules, kept for every command and function that writes (``run``, ``grid``, ``reproduce``,
``plot``, ``publish``, ``Probe.save``, ``model.pt``, the run format's own files):

* **Atomic, with ordinary permissions.** A file is written to a temp name in its directory,
  fsynced and renamed into place (:func:`atomic_write`): a reader, or a crash, sees the old file
  or the new one, never half. The temp file is created with mode ``0o666`` and the process umask
  applies, so the file gets the permissions a plain ``open(path, "w")`` would give it.
* **Never over what varprobe did not write.** An output directory (a report, a figure folder, a
  grid root) says that varprobe writes into it in a file of its own, :data:`MARK_NAME`, which
  lists each file varprobe wrote there with its SHA-256 (:class:`OutputDir`). A file may be
  created where nothing is, and replaced only when that list names it with its current content;
  anything else (a user's file, a file varprobe wrote and someone edited since, a symlink, a
  directory) is refused with one :class:`WriteRefused` line naming it. Run directories follow the
  same rule through their own marker, ``meta.json`` (:mod:`varprobe.record.layout`).

Paths built from data read off disk (a figure name in ``captions.json``, a chunk name) go through
:func:`inside`, which refuses any that leaves the directory it belongs to.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MARK_NAME", "WriteRefused", "atomic_write", "write_all", "fsync_dir", "inside", "sha256", "OutputDir", "write_output"]

#: The file that marks a directory varprobe writes into, and lists what it wrote there.
MARK_NAME = ".varprobe.json"
_MARK_FORMAT = "varprobe-output"


class WriteRefused(FileExistsError):
    """varprobe refused to create or replace a file it may not write; ``str()`` is one line
    naming the file(s) and why. The CLI turns it into a usage error (exit 2)."""

    def __init__(self, message: str, filename: str | os.PathLike[str] | None = None) -> None:
        super().__init__(" ".join(str(message).split()))
        self.filename = None if filename is None else os.fspath(filename)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` all of ``data`` to ``fd`` (a short write is continued, an error raised)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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


def atomic_write(path: str | os.PathLike[str], data: bytes | memoryview, *, tmp_name: str | None = None) -> Path:
    """Replace or create ``path`` with ``data``, atomically and durably.

    The data goes to ``tmp_name`` (default ``.<name>.<pid>.<random>.tmp``) in the same directory,
    created with ``O_EXCL`` and mode ``0o666`` (the umask applies, as for ``open()``), is fsynced
    and renamed onto ``path``; the directory is fsynced. On any error the temp file is removed and
    the error raised; ``path`` is untouched. Faults are the OS's own (``os.write``, ``os.fsync``).
    This checks no ownership: callers that write into a user's directory use :class:`OutputDir`.
    """
    path = Path(path)
    tmp = path.parent / (tmp_name or f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def inside(base: str | os.PathLike[str], name: str, what: str = "name") -> Path:
    """``base / name``, refused unless it stays inside ``base`` once resolved.

    ``name`` comes from data read off disk (a key of ``captions.json``, a figure name): an absolute
    path, a ``..`` part, a folder that links out of ``base`` or an empty name raises ``ValueError``
    naming it. The last part is not followed: whether a link may be written over is the writer's
    question (:meth:`OutputDir.problem` refuses it).
    """
    if not isinstance(name, str) or not name.strip() or "\x00" in name or name.strip() in (".", ".."):
        raise ValueError(f"{what} {name!r} is not a file name")
    base_path = Path(base)
    candidate = base_path / name
    root = base_path.resolve()
    folder = candidate.parent.resolve()  # the file itself may be a link: its folder may not leave
    if Path(name).is_absolute() or ".." in Path(name).parts or (folder != root and root not in folder.parents):
        raise ValueError(f"{what} {name!r} leads outside {base_path} (to {folder / candidate.name}); "
                         f"only names inside {base_path} are accepted")
    return candidate


def sha256(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OutputDir:
    """A directory varprobe writes files into, marked by :data:`MARK_NAME`.

    The mark is a JSON object ``{"format": "varprobe-output", "kind": KIND, "files": {name:
    sha256}}`` listing every file written through this class (names relative to the directory,
    ``/``-separated). A file may be written when nothing is at its path, or when the mark lists it
    with the SHA-256 it has now. The directory (and its parents) is created when missing; an
    existing directory without a mark is used as it is, and gets one at the first write: its other
    files are never touched.

    Args:
        path: The directory.
        kind: What varprobe keeps there (``"report"``, ``"figures"``, ``"grid"``, ``"plot"``),
            recorded in a new mark.
    """

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        self.path = Path(path)
        self.kind = kind

    # -- the mark ------------------------------------------------------------------------------
    @property
    def mark(self) -> Path:
        return self.path / MARK_NAME

    def _read_mark(self) -> dict:
        mark = self.mark
        if not os.path.lexists(mark):
            return {"format": _MARK_FORMAT, "kind": self.kind, "files": {}}
        if mark.is_symlink() or not mark.is_file():
            raise WriteRefused(f"{mark} is not a regular file; varprobe does not write into {self.path} "
                               "through it: remove it or choose another directory", mark)
        try:
            data = json.loads(mark.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise WriteRefused(f"{mark} is not varprobe's list of the files it wrote ({exc}); "
                               "remove it or choose another directory", mark) from None
        if (not isinstance(data, dict) or data.get("format") != _MARK_FORMAT
                or not isinstance(data.get("files"), dict)
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in data["files"].items())):
            raise WriteRefused(f"{mark} is not varprobe's list of the files it wrote; "
                               "remove it or choose another directory", mark)
        return data

    def owned(self) -> dict[str, str]:
        """The files the mark lists, name -> SHA-256 at the time varprobe wrote them."""
        return dict(self._read_mark()["files"])

    # -- checks --------------------------------------------------------------------------------
    def problem(self, name: str, owned: dict[str, str] | None = None) -> str | None:
        """Why ``name`` may not be written here, or None."""
        path = inside(self.path, name, "file name")
        if not os.path.lexists(path):
            return None
        if path.is_symlink():
            return f"{name} is a symlink"
        if not path.is_file():
            return f"{name} is not a regular file"
        listed = (self.owned() if owned is None else owned).get(name)
        if listed is None:
            return f"{name} was not written by varprobe"
        if sha256(path) != listed:
            return f"{name} was changed since varprobe wrote it"
        return None

    def _check_place(self) -> None:
        from .meta import enclosing_run  # meta writes through this module

        if os.path.lexists(self.path) and not self.path.is_dir():
            raise WriteRefused(f"{self.path} exists and is not a directory", self.path)
        run = enclosing_run(self.path)
        if run is not None:
            raise WriteRefused(f"refusing to write into {self.path}: it is inside the varprobe run {run}, which "
                               "holds only the run format's files; choose a directory outside the run", self.path)

    def check(self, names: Iterable[str]) -> None:
        """Refuse, in one :class:`WriteRefused` line, before anything is written, when any of
        ``names`` may not be written here, or the directory is (inside) a run directory; the
        directory is not created."""
        self._check_place()
        if not self.path.is_dir():
            return
        owned = self.owned()
        problems = [p for p in (self.problem(n, owned) for n in names) if p]
        if problems:
            raise WriteRefused(f"refusing to write into {self.path}: {'; '.join(problems)}; varprobe never "
                               "replaces a file it did not write: move those files away or choose another "
                               "directory", self.path)

    # -- writing -------------------------------------------------------------------------------
    def ensure(self) -> Path:
        """Create the directory (with parents) if missing, and its mark if it has none."""
        self._check_place()
        self.path.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(self.mark):
            self._write_mark(self._read_mark())
        return self.path

    def write(self, name: str, data: bytes | memoryview) -> Path:
        """Create or replace the file ``name`` with ``data`` (atomically), if it may be written
        (:meth:`problem`), and list it in the mark. Raises :class:`WriteRefused` otherwise."""
        self.ensure()
        mark = self._read_mark()
        problem = self.problem(name, mark["files"])
        if problem:
            raise WriteRefused(f"refusing to write {self.path / name}: {problem}; varprobe never replaces "
                               "a file it did not write", self.path / name)
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
        mark["files"][name] = hashlib.sha256(bytes(data)).hexdigest()
        self._write_mark(mark)
        return path

    def write_text(self, name: str, text: str) -> Path:
        """:meth:`write` of ``text`` encoded as UTF-8."""
        return self.write(name, text.encode("utf-8"))

    def _write_mark(self, mark: dict) -> None:
        mark = {"format": _MARK_FORMAT, "kind": mark.get("kind", self.kind),
                "files": dict(sorted(mark["files"].items()))}
        atomic_write(self.mark, (json.dumps(mark, indent=2) + "\n").encode("utf-8"))


def write_output(path: str | os.PathLike[str], data: bytes | memoryview, kind: str) -> Path:
    """Write the single file ``path`` through the :class:`OutputDir` of its parent (``kind`` names
    what varprobe keeps there when the parent gets a new mark)."""
    path = Path(path)
    return OutputDir(path.parent, kind).write(path.name, data)
