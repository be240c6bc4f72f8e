"""The names a run directory is made of: which files the run format owns.

A run directory holds exactly these, and nothing a replacement (``overwrite=True``) may delete
lies outside them::

    <run>/meta.json                          the run's metadata (replaced atomically)
    <run>/.lock                              the single-writer lock (flock; kept between writers)
    <run>/.lock.owner                        the lock file of the ``file`` lock method (pid, host),
                                             present only while a writer holds it
    <run>/.lock.owner.<pid>.stale            a dead writer's lock file being broken (a leftover)
    <run>/.meta.json.<random>.tmp            a meta.json being written (a killed writer's leftover)
    <run>/model.pt                           final weights, written by ``varprobe.experiment.run``
    <run>/.model.pt.<pid>.<random>.tmp       model.pt being written (a killed writer's leftover)
    <run>/.replacing                         present while ``overwrite=True`` deletes the old run's
                                             files: a replacement cut short is finished by a rerun
    <run>/stats/                             the chunk directory
    <run>/stats/chunk-NNNNNN.parquet         one file per ``RunWriter.append``
    <run>/stats/.chunk-NNNNNN.parquet.<pid>.tmp   a chunk being written

Every owned entry must be a regular file (``stats`` a real directory), never a symlink: a link
is not the run's own data, so it counts as foreign.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

__all__ = ["STATS_DIR", "META_NAME", "LOCK_NAME", "OWNER_NAME", "MODEL_FILE", "ARTIFACTS", "REPLACING_NAME", "CHUNK_RE", "chunk_name",
           "chunk_tmp_name", "Inventory", "inventory"]

STATS_DIR = "stats"
META_NAME = "meta.json"
LOCK_NAME = ".lock"
#: The lock file of ``varprobe.record.lock``'s "file" method: it exists while a writer holds it.
OWNER_NAME = ".lock.owner"
#: The final state_dict of a run, written by ``varprobe.experiment.run`` beside meta.json.
MODEL_FILE = "model.pt"
#: Files beside meta.json that programs of varprobe write into a run directory.
ARTIFACTS: tuple[str, ...] = (MODEL_FILE,)
#: Written before a replacement deletes anything, removed once it has: the directory is still a
#: varprobe run being replaced, even when meta.json is already gone.
REPLACING_NAME = ".replacing"

CHUNK_RE = re.compile(r"^chunk-(\d{6,})\.parquet$")
_CHUNK_TMP_RE = re.compile(r"^\.chunk-\d{6,}\.parquet\.\d+\.tmp$")
_FILE_TMP_RE = re.compile(rf"^\.({'|'.join(re.escape(n) for n in (META_NAME, *ARTIFACTS))})\..+\.tmp$")
_STALE_OWNER_RE = re.compile(r"^\.lock\.owner\.\d+\.stale$")


def chunk_name(index: int) -> str:
    """File name of chunk number ``index`` (``chunk-000000.parquet``, ...)."""
    return f"chunk-{index:06d}.parquet"


def chunk_tmp_name(index: int, pid: int) -> str:
    """Temp name of chunk ``index`` while process ``pid`` writes it."""
    return f".{chunk_name(index)}.{pid}.tmp"


class Inventory:
    """What a directory holds, split into what the run format owns and what it does not.

    Attributes:
        owned: Owned files, as paths (``.lock`` and ``.lock.owner`` excluded: never deleted).
        foreign: Entries that are not the run format's, relative to the directory
            (``"notes.txt"``, ``"stats/results.csv"``, ``"src/"``), sorted.
        has_meta: Whether ``meta.json`` is there as a regular file.
        has_chunks: Whether any chunk file is there.
        replacing: Whether :data:`REPLACING_NAME` is there: a replacement was cut short.
    """

    def __init__(self) -> None:
        self.owned: list[Path] = []
        self.foreign: list[str] = []
        self.has_meta = False
        self.has_chunks = False
        self.replacing = False

    def describe_foreign(self, limit: int = 5) -> str:
        """The first ``limit`` foreign entries, comma-separated, with a count of the rest."""
        shown = ", ".join(self.foreign[:limit])
        rest = len(self.foreign) - limit
        return shown + (f" and {rest} more" if rest > 0 else "")


def _label(path: Path, kind: str) -> str:
    if kind == "dir":
        return path.name + "/"
    if kind == "file":
        return path.name
    return path.name + (" (symlink)" if path.is_symlink() else " (special file)")


def _kind(path: Path) -> str:
    """``"file"``, ``"dir"`` or ``"other"`` (symlink, fifo, ...), without following links."""
    mode = path.lstat().st_mode
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "other"


def inventory(run_dir: Path) -> Inventory:
    """Classify every entry of ``run_dir`` (and of its ``stats/``), following no link.

    Raises:
        OSError: the directory cannot be listed.
    """
    inv = Inventory()
    for entry in sorted(run_dir.iterdir()):
        name, kind = entry.name, _kind(entry)
        if kind == "file" and name == META_NAME:
            inv.has_meta = True
            inv.owned.append(entry)
        elif kind == "file" and name in (LOCK_NAME, OWNER_NAME):
            pass  # kept: unlinking a lock file races with a writer opening it; the owner file is the lock
        elif kind == "file" and name == REPLACING_NAME:
            inv.replacing = True
            inv.owned.append(entry)
        elif kind == "file" and (name in ARTIFACTS or _FILE_TMP_RE.match(name) or _STALE_OWNER_RE.match(name)):
            inv.owned.append(entry)
        elif kind == "dir" and name == STATS_DIR:
            for sub in sorted(entry.iterdir()):
                if _kind(sub) == "file" and CHUNK_RE.match(sub.name):
                    inv.has_chunks = True
                    inv.owned.append(sub)
                elif _kind(sub) == "file" and _CHUNK_TMP_RE.match(sub.name):
                    inv.owned.append(sub)
                else:
                    inv.foreign.append(f"{STATS_DIR}/{_label(sub, _kind(sub))}")
        else:
            inv.foreign.append(_label(entry, kind))
    return inv
