"""Reading run directories written by :class:`~varprobe.record.writer.RunWriter`.

A run can be read at any time: while it is being written (you get the chunks flushed so
far), after it finished, or after its process was killed (every chunk flushed before the
kill; ``Run.status == "interrupted"``), and while another writer replaces it
(``overwrite=True``): a reader never mixes two generations of a run and never reports an
intact chunk as corrupt because it was deleted underneath it. ``meta.json`` carries a
``run_id`` that changes with every writer; :func:`load_run` reads it again after the chunks
and starts over if it changed (or vanished), and while ``meta.json`` is missing but a writer
holds the lock (a replacement in progress) it waits for the new one.

Runs of format 1 (before the ``role`` column) are read with ``role`` filled from each row's
``module_type`` by an exact table (:func:`varprobe.record.schema.add_legacy_role`).

Every chunk is checked against the schema the writer enforces
(:func:`varprobe.record.schema.check_table`: columns, types, no nulls, one row per step, mode,
layer and quantity, also across chunks), and against ``meta.json``'s row count, read from the
Parquet footers before any chunk is decoded: the chunks meta.json counts must hold exactly its
``rows`` (a larger chunk is refused undecoded), and a closed run (status other than
``"running"``) has no chunk beyond its count; chunks of a running or killed run that meta.json
does not count yet are read (meta.json is updated after each chunk). A run's files are its own:
a symlinked ``meta.json`` is refused, a symlinked ``stats/`` or chunk is not read.

A damaged run (missing, corrupt or invalid chunks) is never dropped silently: without
``skip_corrupt`` it raises, naming the file; with it, the run is returned with what could be
read, ``Run.damaged`` is True and ``Run.problems`` says what is wrong, one line each.
:func:`check_run` gives those problems without raising.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from glob import escape, glob
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import RunFormatError
from .layout import CHUNK_RE, META_NAME, STATS_DIR, chunk_name
from .lock import writer_alive
from .meta import read_meta
from .schema import COLUMNS, add_legacy_role, check_table, empty_frame, repeated_keys, table_to_frame

__all__ = ["Run", "load_run", "load_runs", "check_run"]

_GLOB_MAGIC = re.compile(r"[*?[]")
_READ_ATTEMPTS = 50  # a run replaced this many times during one read is reported, not retried
_META_WAIT_S = 5.0  # how long a reader waits for the meta.json of a replacement in progress
_MAX_LISTED = 1000  # missing chunks listed one by one in Run.skipped; the rest only counted


@dataclass
class Run:
    """One run directory, loaded.

    Attributes:
        path: The run directory.
        meta: ``meta.json`` exactly as stored (``meta["status"]`` is ``"running"`` for a run
            that is still being written *or* was killed; see :attr:`status`).
        frame: All chunks concatenated in order (long format; empty with the right columns
            and dtypes if nothing was flushed).
        skipped: Chunk files skipped as corrupt, invalid, symlinked or missing (only with
            ``skip_corrupt=True``; a symlinked ``stats/`` is listed itself), sorted. Missing chunks are listed up to 1000 of them (a meta.json claiming
            millions of chunks is not expanded); :attr:`problems` always counts them all.
        writer_alive: Whether a writer held the run's lock when it was loaded (None: cannot
            be told, i.e. no lock file and the run was started on another host).
        problems: What is wrong with the run, one line each (missing chunk ranges with their
            count, each corrupt or invalid chunk and why, a row count that differs from
            meta.json's); empty for an intact run.
    """

    path: Path
    meta: dict[str, Any]
    frame: pd.DataFrame = field(repr=False)
    skipped: list[Path] = field(default_factory=list)
    writer_alive: bool | None = False
    problems: list[str] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        """True if chunks are missing or corrupt (see :attr:`problems`): the frame is partial.
        A damaged run is not a finished record, whatever its status says."""
        return bool(self.problems)

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
                f"skipped={len(self.skipped)}{', damaged' if self.damaged else ''})")


def _chunk_files(stats: Path) -> dict[int, Path]:
    if not stats.is_dir():
        return {}
    out = {}
    for entry in os.scandir(stats):
        m = CHUNK_RE.match(entry.name)
        if m:  # temp files (".chunk-...tmp") and anything else are ignored
            out[int(m.group(1))] = Path(entry.path)
    return out


def _link_problem(path: Path, what: str) -> str | None:
    """Why ``path`` is not the run's own (it is a symbolic link), or None."""
    if not path.is_symlink():
        return None
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return (f"{what} {path} is a symbolic link (to {target}): a run's files are its own, a link "
            "into another run is not read")


def _chunk_rows(path: Path) -> int:
    """The row count in the chunk's Parquet footer (nothing decoded)."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ValueError(f"corrupt or truncated chunk {path}: {exc}") from exc


def _read_chunk(path: Path, version: int) -> pa.Table:
    """The chunk at ``path`` of a run of format ``version``, checked; a format-1 chunk gets its
    ``role`` column (:func:`~varprobe.record.schema.add_legacy_role`)."""
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ValueError(f"corrupt or truncated chunk {path}: {exc}") from exc
    if version < 2:
        table = add_legacy_role(table)
    try:
        return check_table(table, unique=False)  # keys: checked over all chunks at once
    except ValueError as exc:
        raise ValueError(f"invalid chunk {path}: {exc}") from None


def _missing_ranges(present: list[int], n: int) -> list[range]:
    """The chunk numbers below ``n`` absent from the sorted ``present``, as ranges (at most
    ``len(present) + 1`` of them, whatever ``n`` is)."""
    out, nxt = [], 0
    for i in present:
        if i > nxt:
            out.append(range(nxt, i))
        nxt = i + 1
    if n > nxt:
        out.append(range(nxt, n))
    return out


def _describe_ranges(stats: Path, ranges: list[range], limit: int = 5) -> str:
    parts = [str(stats / chunk_name(r.start)) if len(r) == 1 else
             f"{stats / chunk_name(r.start)} .. {chunk_name(r.stop - 1)} ({len(r)} chunks)"
             for r in ranges[:limit]]
    return ", ".join(parts) + (", ..." if len(ranges) > limit else "")


@dataclass
class _Chunks:
    tables: list[pa.Table]
    skipped: list[Path]
    problems: list[str]
    errors: list[str]  # the same problems as the error message without skip_corrupt
    count: int = 0  # chunks skipped, all of them (``skipped`` lists at most _MAX_LISTED missing)

    def bad(self, file: Path, problem: str) -> None:
        self.problems.append(problem)
        self.errors.append(problem)
        self.skipped.append(file)
        self.count += 1


def _read_chunks(path: Path, meta: dict[str, Any]) -> _Chunks:
    stats = path / STATS_DIR
    linked = _link_problem(stats, "the chunk directory")
    if linked is not None:
        out = _Chunks([], [], [], [])
        out.bad(stats, linked)
        out.count = max(meta["chunks"], 1)
        return out
    files = _chunk_files(stats)
    present = sorted(files)
    expected = meta["chunks"]  # validated: a non-negative int
    closed = meta["status"] != "running"  # then meta.json counts every chunk the run has
    n = expected if closed else max(expected, present[-1] + 1 if present else 0)
    out = _Chunks([], [], [], [])
    ranges = _missing_ranges(present, n)
    if ranges:
        count = sum(len(r) for r in ranges)
        names = _describe_ranges(stats, ranges)
        counted = (f" (meta.json counts {expected} chunks, {len(files)} on disk)"
                   if expected > len(files) else "")
        out.problems.append(f"{count} chunk(s) missing: {names}{counted}")
        out.errors.append(f"run {path} is missing {count} chunk(s): {names}{counted}")
        out.count += count
        listed = 0
        for r in ranges:
            take = r[: _MAX_LISTED - listed]
            out.skipped.extend(stats / chunk_name(i) for i in take)
            listed += len(take)
    meta_path = path / META_NAME
    total, counted, whole = meta["rows"], 0, not ranges or ranges[0].start >= expected
    read: list[tuple[Path, pa.Table]] = []
    for i in present:
        file = files[i]
        problem = _link_problem(file, "chunk")
        if problem is None and i >= expected and closed:
            problem = (f"chunk {file} is not counted in {meta_path} (the run is closed, status "
                       f"{meta['status']!r}, with {expected} chunk(s)); not read")
        try:
            rows = _chunk_rows(file) if problem is None else 0
        except ValueError as exc:
            problem = str(exc)
        if problem is None and i < expected:
            if counted + rows > total:
                problem = (f"chunk {file} holds {rows} rows, but {meta_path} counts {total} rows in "
                           f"{expected} chunk(s), {counted} of them in the chunks before it; not read")
            else:
                counted += rows
        if problem is None:
            try:
                read.append((file, _read_chunk(file, meta["format_version"])))
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            out.bad(file, problem)
            whole = whole and i >= expected
    if whole and counted != total:
        last = stats / chunk_name(expected - 1) if expected else stats
        problem = (f"the {expected} chunk(s) {meta_path} counts (up to {last}) hold {counted} rows, "
                   f"but {meta_path} counts {total}")
        out.problems.append(problem)
        out.errors.append(f"run {path}: {problem}")
    repeats = repeated_keys([t for _, t in read])
    for j, (earlier, key) in repeats.items():
        where = (f"invalid chunk {read[j][0]}: two rows share the key {key}" if earlier == j else
                 f"chunk {read[j][0]} repeats rows of {read[earlier][0]} (first: {key})")
        out.bad(read[j][0], f"{where}; a run holds one row per step, mode, layer and quantity")
    out.tables = [t for j, (_, t) in enumerate(read) if j not in repeats]
    return out


def _generation(meta: dict[str, Any] | None) -> tuple[Any, Any] | None:
    return None if meta is None else (meta.get("run_id"), meta.get("start_time"))


def _current_generation(path: Path) -> tuple[Any, Any] | None:
    """The generation of ``path``'s meta.json now, None if it is missing or unreadable."""
    try:
        meta = json.loads((path / META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _generation(meta) if isinstance(meta, dict) else None


def _read_meta_settled(path: Path) -> dict[str, Any]:
    """read_meta, waiting (up to a few seconds) while meta.json is missing but a writer holds
    the lock: a replacement (``overwrite=True``) between deleting the old meta.json and
    writing the new one. A symlinked meta.json is refused (RunFormatError)."""
    deadline = time.monotonic() + _META_WAIT_S
    meta_path = path / META_NAME
    while True:
        linked = _link_problem(meta_path, "the run's metadata")
        if linked is not None:
            raise RunFormatError(linked, meta_path)
        try:
            return read_meta(path)
        except FileNotFoundError:
            if not (path.is_dir() and time.monotonic() < deadline and writer_alive(path) is True):
                raise
            time.sleep(0.01)


def load_run(path: str | os.PathLike[str], *, skip_corrupt: bool = False) -> Run:
    """Load one run directory: its ``meta.json`` and all its chunks, in order.

    Works on a run that is still being written (you get the chunks flushed so far; each is
    complete), on a run whose process was killed (every chunk flushed before the kill;
    ``status`` is ``"interrupted"``), and on a run another writer is replacing: the read
    is of one generation only (it starts over when ``meta.json``'s ``run_id`` changed during
    the read). Temp files of unfinished writes are ignored.

    Args:
        path: The run directory.
        skip_corrupt: Skip chunks that cannot be read (truncated, corrupt), that break the
            schema (:func:`~varprobe.record.schema.check_table`: types, nulls, a row key already
            in the chunk or in an earlier one), that hold more rows than ``meta.json`` counts, that
            a closed run does not count, or that are symlinks, or are missing from the
            numbering, with a ``RuntimeWarning`` naming them, instead of raising. The run is
            still returned, even when no chunk is left (empty frame): ``Run.damaged`` is True,
            ``Run.skipped`` lists the skipped chunk files and ``Run.problems`` says what is wrong
            (also a row total that differs from meta.json's, where nothing is skipped).

    Returns:
        The :class:`Run`.

    Raises:
        FileNotFoundError: the directory or its ``meta.json`` does not exist (names the path).
        RunFormatError: (a ``ValueError``) ``meta.json`` is corrupt, does not follow the
            schema (names the file and the field) or is a symbolic link (whatever
            ``skip_corrupt`` says).
        ValueError: (without ``skip_corrupt``) one of the chunk problems above (names the
            file, and the column, key or row counts), or chunk numbers are missing (named,
            ranges counted); or the run kept being replaced while it was read.
    """
    path = Path(path)
    for attempt in range(_READ_ATTEMPTS):
        meta = _read_meta_settled(path)  # before listing chunks: meta's count is a lower bound
        alive = writer_alive(path, meta)
        chunks = _read_chunks(path, meta)
        if _current_generation(path) == _generation(meta):
            break  # meta.json unchanged since it was read: all chunks are of this run
        time.sleep(0.002 * attempt)  # replaced meanwhile: read the new run
    else:
        raise ValueError(f"run {path} was replaced by another writer {_READ_ATTEMPTS} times "
                         "while being read; read it again once it is written")
    if chunks.errors and not skip_corrupt:
        raise ValueError(f"{chunks.errors[0]} (pass skip_corrupt=True to load the rest)")
    if chunks.problems:
        what = (f"skipped {chunks.count} missing or corrupt chunk(s)" if chunks.count else
                "the run is damaged")
        warnings.warn(f"load_run({str(path)!r}): {what}: {'; '.join(chunks.problems)}",
                      RuntimeWarning, stacklevel=2)
    frame = table_to_frame(pa.concat_tables(chunks.tables)) if chunks.tables else empty_frame()
    return Run(path=path, meta=meta, frame=frame, skipped=sorted(chunks.skipped),
               writer_alive=alive, problems=chunks.problems)


def check_run(path: str | os.PathLike[str]) -> list[str]:
    """What is wrong with the run directory ``path``, one line each; ``[]`` if it is intact.

    Intact means: ``meta.json`` is there, valid and not a symlink, and every chunk from 0 to the
    last one (and up to meta.json's count) is present, the run's own file (not a symlink, nor
    in a symlinked ``stats/``), reads back with its checksums and follows the run schema, and
    the chunks meta.json counts hold the rows it counts (see :func:`load_run`). Says nothing
    about the status: an interrupted or failed run can be intact. Costs one
    :func:`load_run` (every chunk is read). Never raises for the run's own problems.

    Returns:
        Problems such as ``"<path>/meta.json not found: ..."``, ``"<meta.json>: field
        'config' must be an object ..."``, ``"2 chunk(s) missing: ..."``, ``"corrupt or
        truncated chunk <file>: ..."``, ``"invalid chunk <file>: column 'step' has 1 null
        value(s) ..."`` or ``"chunk <file> is a symbolic link ..."``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return list(load_run(path, skip_corrupt=True).problems)
    except (OSError, ValueError) as exc:  # missing, unreadable, RunFormatError
        return [str(exc)]


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
                raise FileNotFoundError(f"no run directories match {text!r}{hint}{_escape_hint(text)}")
            out.extend(runs)
        else:
            out.append(Path(item))
    return out


def _escape_hint(pattern: str) -> str:
    """Where the longest leading part of ``pattern`` that holds ``*``, ``?`` or ``[`` exists as a
    literal path: how to match it literally (``glob.escape``); else ``""``."""
    parts = pattern.split(os.sep)
    for k in range(len(parts), 0, -1):
        prefix = os.sep.join(parts[:k])
        if prefix and _GLOB_MAGIC.search(prefix) and os.path.exists(prefix):
            escaped = escape(prefix) + pattern[len(prefix):]
            return (f"; {prefix!r} exists, but '*', '?' and '[' in it are glob syntax: to match it "
                    f"literally, escape it with glob.escape: {escaped!r}")
    return ""


def _drop_aliases(paths: list[Path]) -> list[Path]:
    """Drop a path that names, through a symlink or ``..``, a run already listed under another
    name (kept: the first name), with a warning naming both. The very same path given twice is
    kept twice (the caller asked for it twice; :func:`_run_names` numbers them)."""
    first: dict[str, Path] = {}
    out = []
    for p in paths:
        real = os.path.realpath(p)
        seen = first.setdefault(real, p)
        if seen is not p and os.path.abspath(seen) != os.path.abspath(p):
            warnings.warn(f"load_runs: {p} is the same run as {seen} (both are {real}); "
                          f"loaded once, as {seen}", RuntimeWarning, stacklevel=3)
            continue
        out.append(p)
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
            A pattern is never guessed at: ``root[1]/*`` is a glob whose ``[1]`` matches the
            character ``1``; when it matches nothing but ``root[1]`` exists, the error says
            so and gives the pattern escaped with :func:`glob.escape` (``root[[]1]/*``).
            A run reached under two different names (e.g. a symlink ``runs/latest`` beside
            its target) is loaded once, under the first name, with a ``RuntimeWarning``
            naming the alias; the very same path listed twice is loaded twice (``#1``, ``#2``).
        skip_corrupt: Passed to :func:`load_run` for every run. A run whose chunks were all
            skipped has no rows, so it is absent from the table itself: a ``RuntimeWarning``
            names it, and ``frame.attrs["runs"]`` still lists it (see Returns).

    Returns:
        The concatenated frame (fresh RangeIndex). ``frame.attrs["runs"]`` maps every run's
        name to ``{"path", "status", "rows", "damaged", "problems"}``, so a run without rows
        (empty, or damaged and skipped) never vanishes without a trace.

    Raises:
        FileNotFoundError: a glob matches no run directory (names the pattern, and how to
            escape a part of it that exists literally), or a run directory or its
            ``meta.json`` is missing (names the path).
        ValueError: an empty iterable was given, or a run has a corrupt chunk and
            ``skip_corrupt`` is False (names the file).
    """
    paths = _drop_aliases(_expand(paths_or_glob))
    names = _run_names(paths)
    reserved = set(COLUMNS) | {"run", "status"}
    frames = []
    listing: dict[str, dict[str, Any]] = {}
    for name, p in zip(names, paths):
        run = load_run(p, skip_corrupt=skip_corrupt)
        listing[name] = {"path": str(run.path), "status": run.status, "rows": len(run.frame),
                         "damaged": run.damaged, "problems": list(run.problems)}
        if run.damaged and run.frame.empty:
            warnings.warn(f"load_runs: run {name} ({run.path}) is damaged and has no readable "
                          f"rows ({'; '.join(run.problems)}); it is not in the table, only in "
                          "frame.attrs['runs']", RuntimeWarning, stacklevel=2)
        f = run.frame  # freshly built by load_run, not shared
        f.insert(0, "run", name)
        f["status"] = run.status
        for k, v in _flatten(run.config).items():
            f[f"config.{k}" if k in reserved else k] = v
        frames.append(f)
    non_empty = [f for f in frames if len(f)] or frames[:1]
    if len(non_empty) == 1:
        table = non_empty[0].reset_index(drop=True)
    else:
        table = pd.concat(non_empty, ignore_index=True, sort=False)
    table.attrs = {"runs": listing}
    return table
