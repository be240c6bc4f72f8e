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
ever removed recursively, so a file that appears meanwhile is left alone. ``meta.json`` goes
first: from then on a reader sees "no run" (or waits for the new one), never the old meta.json
beside a half-deleted set of chunks.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import RunFormatError
from .layout import META_NAME, Inventory, inventory
from .meta import fsync_dir, read_meta

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
    if not inv.has_meta:
        leftover = not inv.foreign and not inv.owned  # only .lock and an empty stats/
        if leftover:
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
    """Delete the owned files of ``inv``: ``meta.json`` first (made durable), then the rest.

    Directories (``stats/``) and the lock file are kept. A file already gone is skipped.
    """
    meta = path / META_NAME
    rest = [p for p in inv.owned if p != meta]
    if meta in inv.owned:
        meta.unlink(missing_ok=True)
        fsync_dir(path)  # durable before any chunk goes
    for p in rest:
        p.unlink(missing_ok=True)
    fsync_dir(path)
    for d in sorted({p.parent for p in rest} - {path}):
        fsync_dir(d)
