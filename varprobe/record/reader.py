"""Reading run directories written by :class:`~varprobe.record.writer.RunWriter`.

A run can be read at any time: while it is being written (you get the chunks flushed so
far), after it finished, or after its process was killed (every chunk flushed before the
kill; ``Run.status == "interrupted"``).
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .lock import writer_alive
from .meta import read_meta
from .schema import COLUMNS, PLAIN_SCHEMA, empty_frame, table_to_frame
from .writer import STATS_DIR, chunk_name

__all__ = ["Run", "load_run", "load_runs"]

_CHUNK_RE = re.compile(r"^chunk-(\d{6,})\.parquet$")
_GLOB_MAGIC = re.compile(r"[*?[]")


@dataclass
class Run:
    """One run directory, loaded.

    Attributes:
        path: The run directory.
        meta: ``meta.json`` exactly as stored (``meta["status"]`` is ``"running"`` for a run
            that is still being written *or* was killed; see :attr:`status`).
        frame: All chunks concatenated in order (long format; empty with the right columns
            and dtypes if nothing was flushed).
        skipped: Chunk files skipped as corrupt or missing (only with ``skip_corrupt=True``).
        writer_alive: Whether a writer held the run's lock when it was loaded (None: cannot
            be told, i.e. no lock file and the run was started on another host).
    """

    path: Path
    meta: dict[str, Any]
    frame: pd.DataFrame = field(repr=False)
    skipped: list[Path] = field(default_factory=list)
    writer_alive: bool | None = False

    @property
    def interrupted(self) -> bool:
        """True if the run did not finish and nothing is writing it any more (killed/crashed)."""
        return self.meta.get("status") == "running" and self.writer_alive is False

    @property
    def status(self) -> str:
        """Effective status: ``meta["status"]``, except ``"interrupted"`` for a run whose
        meta still says ``"running"`` but whose writer is gone."""
        return "interrupted" if self.interrupted else str(self.meta.get("status", "unknown"))

    @property
    def config(self) -> dict[str, Any]:
        """The run's configuration (``meta["config"]``)."""
        return self.meta.get("config") or {}

    def __repr__(self) -> str:
        return (f"Run(path={str(self.path)!r}, status={self.status!r}, rows={len(self.frame)}, "
                f"skipped={len(self.skipped)})")


def _chunk_files(stats: Path) -> dict[int, Path]:
    if not stats.is_dir():
        return {}
    out = {}
    for entry in os.scandir(stats):
        m = _CHUNK_RE.match(entry.name)
        if m:  # temp files (".chunk-...tmp") and anything else are ignored
            out[int(m.group(1))] = Path(entry.path)
    return out


def _read_chunk(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path, page_checksum_verification=True)
        names = table.column_names
        if sorted(names) != sorted(COLUMNS):
            raise ValueError(f"unexpected columns {names}, expected {list(COLUMNS)}")
        return table.select(list(COLUMNS)).cast(PLAIN_SCHEMA)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ValueError(f"corrupt or truncated chunk {path}: {exc}") from exc


def load_run(path: str | os.PathLike[str], *, skip_corrupt: bool = False) -> Run:
    """Load one run directory: its ``meta.json`` and all its chunks, in order.

    Works on a run that is still being written (you get the chunks flushed so far; each is
    complete) and on a run whose process was killed (every chunk flushed before the kill;
    ``status`` is ``"interrupted"``). Temp files of unfinished writes are ignored.

    Args:
        path: The run directory.
        skip_corrupt: Skip chunks that cannot be read (truncated, corrupt, wrong schema) or
            are missing from the numbering, with a ``RuntimeWarning`` naming them, instead of
            raising. Skipped paths are listed in ``Run.skipped``.

    Returns:
        The :class:`Run`.

    Raises:
        FileNotFoundError: the directory or its ``meta.json`` does not exist (names the path).
        ValueError: ``meta.json`` is corrupt, or (without ``skip_corrupt``) a chunk is
            corrupt or truncated, or a chunk number is missing; the message names the file.
    """
    path = Path(path)
    meta = read_meta(path)  # before listing chunks: meta's count is then a lower bound
    alive = writer_alive(path, meta)
    files = _chunk_files(path / STATS_DIR)
    expected = meta.get("chunks") if isinstance(meta.get("chunks"), int) else 0
    n = max([expected, *(i + 1 for i in files)])
    skipped: list[Path] = []
    tables: list[pa.Table] = []

    missing = [path / STATS_DIR / chunk_name(i) for i in range(n) if i not in files]
    if missing:
        names = ", ".join(str(p) for p in missing[:5]) + (", ..." if len(missing) > 5 else "")
        if not skip_corrupt:
            raise ValueError(f"run {path} is missing {len(missing)} chunk(s): {names} "
                             "(pass skip_corrupt=True to load the rest)")
        skipped.extend(missing)
    for i in sorted(files):
        try:
            tables.append(_read_chunk(files[i]))
        except ValueError as exc:
            if not skip_corrupt:
                raise ValueError(f"{exc} (pass skip_corrupt=True to load the rest)") from exc
            skipped.append(files[i])
    if skipped:
        warnings.warn(f"load_run({str(path)!r}): skipped {len(skipped)} missing or corrupt "
                      f"chunk(s): {', '.join(str(p) for p in skipped)}", RuntimeWarning,
                      stacklevel=2)
    frame = table_to_frame(pa.concat_tables(tables)) if tables else empty_frame()
    return Run(path=path, meta=meta, frame=frame, skipped=sorted(skipped), writer_alive=alive)


def _expand(paths_or_glob: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(paths_or_glob, (str, os.PathLike)):
        items: list[str | os.PathLike[str]] = [paths_or_glob]
    else:
        items = list(paths_or_glob)
        if not items:
            raise ValueError("load_runs: no run paths given")
    out: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if _GLOB_MAGIC.search(text) and not os.path.exists(text):
            matches = sorted(glob(text))
            runs = [Path(m) for m in matches if (Path(m) / "meta.json").is_file()]
            if not runs:
                hint = (f" ({len(matches)} path(s) matched, none containing meta.json)"
                        if matches else "")
                raise FileNotFoundError(f"no run directories match {text!r}{hint}")
            out.extend(runs)
        else:
            out.append(Path(item))
    return out


def _run_names(paths: list[Path]) -> list[str]:
    """Directory names, made unique by prepending parent directories where two different
    directories share a name; the same directory given twice gets ``#1``, ``#2``."""
    full = [Path(os.path.abspath(p)) for p in paths]
    distinct = list(dict.fromkeys(full))
    depth = {p: 1 for p in distinct}

    def name(p: Path) -> str:
        return "/".join(p.parts[-depth[p]:]).lstrip("/") or str(p)

    while True:
        names = {p: name(p) for p in distinct}
        counts = Counter(names.values())
        grow = [p for p in distinct if counts[names[p]] > 1 and depth[p] < len(p.parts)]
        if not grow:
            break
        for p in grow:
            depth[p] += 1
    total = Counter(full)
    seen: Counter[Path] = Counter()
    out = []
    for p in full:
        seen[p] += 1
        out.append(names[p] if total[p] == 1 else f"{names[p]}#{seen[p]}")
    return out


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif v is None or isinstance(v, (str, bool, int, float)):
            out[key] = v
    return out


def load_runs(paths_or_glob: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
              skip_corrupt: bool = False) -> pd.DataFrame:
    """Load several runs into one long-format frame, ready for seaborn's ``hue``.

    Columns: ``run`` (the directory name; where two runs share a name, enough parent
    directories are prepended to tell them apart), the statistics columns, ``status`` (the
    effective status of :attr:`Run.status`: ``"finished"``, ``"failed"``, ``"collapsed"``,
    ``"running"`` or ``"interrupted"``, ...), then one column per scalar entry of the run's
    ``config`` (e.g. ``scheme``, ``lr``, ``batch_size``, ``seed``; nested dicts flattened as
    ``a.b``; lists left out; a key that collides with another column gets a ``config.``
    prefix). A key absent from some runs' config is NaN/None for those runs.

    Args:
        paths_or_glob: A glob pattern (str or Path with ``*``, ``?`` or ``[`` that is not
            itself an existing path: expanded, sorted, and restricted to directories
            containing ``meta.json``), a single run directory, or an iterable of those.
        skip_corrupt: Passed to :func:`load_run` for every run.

    Returns:
        The concatenated frame (fresh RangeIndex).

    Raises:
        FileNotFoundError: a glob matches no run directory (names the pattern), or a run
            directory or its ``meta.json`` is missing (names the path).
        ValueError: an empty iterable was given, or a run has a corrupt chunk and
            ``skip_corrupt`` is False (names the file).
    """
    paths = _expand(paths_or_glob)
    names = _run_names(paths)
    reserved = set(COLUMNS) | {"run", "status"}
    frames = []
    for name, p in zip(names, paths):
        run = load_run(p, skip_corrupt=skip_corrupt)
        f = run.frame  # freshly built by load_run, not shared
        f.insert(0, "run", name)
        f["status"] = run.status
        for k, v in _flatten(run.config).items():
            f[f"config.{k}" if k in reserved else k] = v
        frames.append(f)
    non_empty = [f for f in frames if len(f)] or frames[:1]
    if len(non_empty) == 1:
        return non_empty[0].reset_index(drop=True)
    return pd.concat(non_empty, ignore_index=True, sort=False)
