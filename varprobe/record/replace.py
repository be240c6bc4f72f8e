"""What ``RunWriter(overwrite=True)`` may delete, and how it deletes it.

Only a directory that *is* a varprobe run is ever replaced: it holds a readable ``meta.json``
that passes :func:`~varprobe.record.meta.validate_meta` (right ``format``, a ``format_version``
this code reads, every writer field well-typed), and nothing the run format does not own (see
:mod:`~varprobe.record.layout`). Anything else is refused with one line naming the path and
why: a directory without ``meta.json``, one whose ``meta.json`` is someone else's JSON, a
regular file, a symlink, a run that holds foreign files (named). The one exception is the
leftover of a writer killed while starting (only ``.lock`` and an empty ``stats/``), which
holds nothing to delete.

Deletion is by name, file by file, of the owned files listed under the lock; no directory is
ever removed recursively, so a file that appears meanwhile is left alone. Before anything is
deleted, ``.replacing`` is written (and made durable); ``meta.json`` goes first, ``.replacing``
last. A replacement killed part way therefore leaves either the old run (killed before the mark)
or a directory that still says it is a varprobe run being replaced, which the same command
replaces on a rerun (``check_replaceable`` accepts it, a grid redoes it). A reader sees "no run"
from the moment meta.json is gone, never the old meta.json beside a half-deleted set of chunks.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import RunFormatError
from .files import atomic_write, fsync_dir
from .layout import META_NAME, REPLACING_NAME, Inventory, inventory
from .meta import read_meta

__all__ = ["check_replaceable", "clear_run"]


def check_replaceable(path: Path) -> Inventory:
    """Check that the existing, non-empty directory ``path`` may be replaced by a new run.

    Returns:
        Its :class:`~varprobe.record.layout.Inventory` (every entry owned by the run format).

    Raises:
        FileExistsError: ``path`` is a symlink, not a directory, not a varprobe run, a run of a
            newer format, or holds foreign entries; the message names the path, the reason and
            (for foreign entries) the first few of them.
    """
    refuse = f"refusing to replace {path} even with overwrite=True"
    if path.is_symlink():
        raise FileExistsError(f"{refuse}: it is a symlink (to {os.readlink(path)}); "
                              "overwrite replaces only a run directory itself, not a link to one")
    if not path.is_dir():
        raise FileExistsError(f"run path {path} exists and is not a directory; {refuse}")
    inv = inventory(path)
    meta = path / META_NAME
    if meta.is_symlink():
        raise FileExistsError(f"{meta} is a symlink (to {os.readlink(meta)}), not a run's own {META_NAME}; "
                              f"{refuse}")
    if not inv.has_meta:
        leftover = not inv.foreign and not inv.owned  # only .lock and an empty stats/
        if leftover:
            return inv
        if inv.replacing and not inv.foreign:  # a replacement cut short: finish it
            return inv
        raise FileExistsError(f"{path} is not empty and is not a varprobe run directory (no "
                              f"{META_NAME}); {refuse}")
    try:
        read_meta(path)
    except (RunFormatError, OSError) as exc:
        raise FileExistsError(f"{path} is not a varprobe run this code can replace ({exc}); "
                              f"{refuse}") from None
    if inv.foreign:
        raise FileExistsError(f"{path} holds files that are not part of a varprobe run "
                              f"({inv.describe_foreign()}); {refuse}: move them out first")
    return inv


def clear_run(path: Path, inv: Inventory) -> None:
    """Delete the owned files of ``inv``: mark the directory ``.replacing`` (durable), delete
    ``meta.json`` (durable), then the rest, then the mark.

    Directories (``stats/``) and the lock file are kept. A file already gone is skipped.
    """
    meta, mark = path / META_NAME, path / REPLACING_NAME
    rest = [p for p in inv.owned if p not in (meta, mark)]
    atomic_write(mark, b"a varprobe run is being replaced here; rerun the same command to finish\n")
    if meta in inv.owned:
        meta.unlink(missing_ok=True)
        fsync_dir(path)  # durable before any chunk goes
    for p in rest:
        p.unlink(missing_ok=True)
    for d in sorted({p.parent for p in rest} - {path}):
        fsync_dir(d)
    mark.unlink()
    fsync_dir(path)
