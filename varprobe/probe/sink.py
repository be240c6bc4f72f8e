"""Where a Probe's flushed tables go: sinks.

A sink is any callable ``sink(frame)`` that receives each flushed long-format table (columns
``varprobe.probe.table.COLUMNS``, the recorded steps since the previous flush). It may also have
``open(config)`` (called at each ``Probe.attach()``, before the run directory is created, with the
run configuration that ``meta.json`` stores: a sink that cannot take the run raises there, so the
error comes before any training and no run is left behind), ``update_meta(**fields)`` (run-level
facts as they become known, e.g. ``collapsed_step``) and ``close(status, **fields)`` (called once
when the probe is closed). ``ParquetSink``, the run
directory of ``varprobe.record``, is the default sink of ``Probe(out=...)``; more sinks (a
dashboard, a logger) go in ``Probe(sinks=[...])`` without touching the probe.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

__all__ = ["Sink", "ParquetSink", "SinkError", "deliver", "save_run"]

Sink = Callable[[pd.DataFrame], Any]


class SinkError(RuntimeError):
    """A sink raised; the message names it. Earlier sinks (the run directory first) got the table."""


class ParquetSink:
    """The run directory ``path`` (``meta.json`` + append-only Parquet chunks, ``RunWriter``)."""

    def __init__(self, path: str | os.PathLike, meta: dict, *, overwrite: bool = False) -> None:
        from ..record import RunWriter
        self.path = os.fspath(path)
        self.writer = RunWriter(path, meta, overwrite=overwrite)

    def __call__(self, frame: pd.DataFrame) -> None:
        self.writer.append(frame)

    def update_meta(self, **fields: Any) -> None:
        self.writer.update_meta(**fields)

    def close(self, status: str = "finished", **fields: Any) -> None:
        self.writer.close(status, **fields)

    def __repr__(self) -> str:
        return f"ParquetSink({self.path!r})"


def _name(sink: object) -> str:
    return getattr(sink, "__qualname__", None) or repr(sink)


def deliver(sinks: Sequence[object], method: str | None, *args: Any, **kwargs: Any) -> None:
    """Call every sink (``method`` None: the sink itself; else that method where it has one), in
    order. Every sink is called even if an earlier one raises; then the first error is raised as
    a :class:`SinkError` naming its sink. Each sink gets its own shallow copy of a table: an edit
    it makes in place reaches neither the probe's table nor the other sinks (pandas copies on
    write)."""
    first: tuple[object, BaseException] | None = None
    for sink in sinks:
        fn = sink if method is None else getattr(sink, method, None)
        if fn is None:
            continue
        try:
            fn(*(a.copy(deep=False) if isinstance(a, pd.DataFrame) else a for a in args), **kwargs)
        except Exception as exc:
            if first is None:
                first = (sink, exc)
    if first is not None:
        sink, exc = first
        what = "" if method is None else f".{method}()"
        raise SinkError(f"Probe sink {_name(sink)}{what} raised {type(exc).__name__}: {exc}") from exc


def save_run(path: str | os.PathLike, frame: pd.DataFrame, config: dict, collapsed_step: int | None, *,
             overwrite: bool = False, status: str | None = None) -> None:
    """Write ``frame`` as a new run directory (``meta.json`` + one Parquet chunk), status
    "collapsed" (with ``collapsed_step``) or "finished" unless ``status`` is given; a failed write
    leaves the run marked "failed"."""
    from ..record import RunWriter
    writer = RunWriter(path, config, overwrite=overwrite)
    try:
        writer.append(frame)
    except BaseException:
        writer.close("failed")
        raise
    if status is None:
        status = "collapsed" if collapsed_step is not None else "finished"
    writer.close(status, **({"collapsed_step": collapsed_step} if collapsed_step is not None else {}))
