"""Host side of a Probe: recorded steps waiting for transfer, and their conversion to the long table."""
from __future__ import annotations

from collections.abc import Callable
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..record.schema import empty_frame
from ..vocabulary import COLUMNS

__all__ = ["Record", "Schema", "Program", "COLUMNS", "empty_frame", "records_to_frame", "collapse_step"]



class Schema:
    """The (layer, depth, module_type, role, quantity) of each row of a record, as column arrays."""

    def __init__(self, rows: tuple[tuple[str, int, str, str, str], ...]) -> None:
        self.rows = rows
        cols = list(zip(*rows)) if rows else [(), (), (), (), ()]
        self.layer = np.array(cols[0], dtype=object)
        self.depth = np.array(cols[1], dtype=np.int64)
        self.module_type = np.array(cols[2], dtype=object)
        self.role = np.array(cols[3], dtype=object)
        self.quantity = np.array(cols[4], dtype=object)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def watch(self) -> np.ndarray:
        """Bool per row: the rows that can mark a run collapsed (``loss``, ``*.nonfinite``)."""
        w = self.__dict__.get("_watch")
        if w is None:
            w = self.__dict__["_watch"] = np.array([q == "loss" or q.endswith("nonfinite") for q in self.quantity],
                                                  dtype=bool)
        return w

    def columns(self, mode: str) -> tuple[pd.Series, ...]:
        """(layer, mode, module_type, role, quantity) as string Series, built once per mode: a flush
        concatenates them instead of converting every row's strings again."""
        cache = self.__dict__.setdefault("_columns", {})
        hit = cache.get(mode)
        if hit is None:
            n = len(self.rows)
            hit = cache[mode] = tuple(pd.Series(pd.array(a, dtype=str)) for a in (
                self.layer, np.full(n, mode, dtype=object), self.module_type, self.role, self.quantity))
        return hit


class Program:
    """How the values of a step's rows follow from what its ``step()`` kept (``raw``: the raw
    reductions laid end to end, one float64 vector per step), computed at the flush for all the
    buffered steps with the same layout at once.

    ``inputs``: name -> (offset, numel, shape) of each kept tensor in ``raw``; ``blocks``: (size,
    finish) of each block of values, ``finish(env)`` giving (S, size) (any trailing shape of that
    size) from ``env``, a dict of the inputs with the steps on a leading axis (finishers may keep
    what later ones reuse in it); ``index``: each row's position in the blocks laid end to end."""

    def __init__(self, inputs: dict[str, tuple[int, int, tuple[int, ...]]],
                 blocks: list[tuple[int, Callable[[dict], Tensor]]], index: Tensor) -> None:
        self.inputs, self.blocks, self.index = inputs, blocks, index

    def run(self, raw: Tensor) -> Tensor:
        """The rows' values (S, rows) of the steps ``raw`` (S, numel)."""
        env = _Env(raw, self.inputs)
        n = raw.shape[0]
        values = [_rows(finish(env), n, size) for size, finish in self.blocks]
        flat = values[0] if len(values) == 1 else torch.cat(values, 1)
        return flat.index_select(1, self.index)


def _rows(v: Tensor, n: int, size: int) -> Tensor:
    return v if v.shape == (n, size) else v.reshape(n, size)


class _Env(dict):
    def __init__(self, raw: Tensor, inputs: dict[str, tuple[int, int, tuple[int, ...]]]) -> None:
        super().__init__()
        self.raw, self.inputs = raw, inputs

    def __missing__(self, name: str) -> Tensor:
        at, n, shape = self.inputs[name]
        v = self.raw[:, at:at + n]
        if shape != (n,):
            v = v.reshape((self.raw.shape[0],) + shape)
        self[name] = v
        return v


@dataclass
class Record:
    """One closed step of one mode: device values (one per row of ``schema``) plus host values.

    A record of ``step()`` holds ``raw`` and its ``program`` instead of ``values`` until the flush
    (:func:`finish`)."""

    step: int
    mode: str
    schema: Schema
    values: Tensor | None
    host_schema: Schema | None = None
    host_values: list[float] = field(default_factory=list)
    raw: Tensor | None = None
    program: Program | None = None

    @property
    def nbytes(self) -> int:
        """Device bytes the record holds."""
        t = self.values if self.values is not None else self.raw
        return 0 if t is None else t.numel() * t.element_size()


def finish(records: list[Record]) -> tuple[list[Record], BaseException | None]:
    """Compute the values of every record that holds raw reductions: one :meth:`Program.run` per
    layout, over all its records at once. Where that run fails, each of its records is run alone,
    so a failure costs only the steps it is in (as when the derivation ran in ``step()``).

    Returns the records with their values (those that failed left out) and the first error of a
    step that failed, or None."""
    groups: dict[int, list[Record]] = {}
    for r in records:
        if r.values is None and r.raw is not None:
            groups.setdefault(id(r.program), []).append(r)
    failed: dict[int, BaseException] = {}
    for rs in groups.values():
        try:
            raw = rs[0].raw[None] if len(rs) == 1 else torch.stack([r.raw for r in rs])
            values = rs[0].program.run(raw).unbind(0)
        except Exception as exc:
            if len(rs) == 1:
                failed[id(rs[0])] = exc
                continue
            values, before = [], len(failed)
            for r in rs:
                try:
                    values.append(r.program.run(r.raw[None])[0])
                except Exception as err:
                    failed[id(r)] = err
                    values.append(None)
            if len(failed) == before:
                warnings.warn(f"Probe: deriving the rows of {len(rs)} buffered steps at once failed ({exc!r}); "
                              "they were derived step by step", RuntimeWarning, stacklevel=3)
        for r, v in zip(rs, values):
            if v is not None:
                r.values, r.raw, r.program = v, None, None
    kept = [r for r in records if id(r) not in failed]
    return kept, next(iter(failed.values()), None)


def collapse_step(frame: pd.DataFrame, records: list[Record]) -> int | None:
    """The first step of ``frame`` (= ``records_to_frame(records)``) with a non-finite loss or a
    positive non-finite count, or None; reads only the rows that can say so."""
    watch = [m for r in records for m in ((r.schema.watch,) if r.values is not None and r.values.numel() else ())
             + ((r.host_schema.watch,) if r.host_schema is not None and len(r.host_schema) else ())]
    if not watch or len(frame) != sum(len(w) for w in watch):
        return None
    mask = np.concatenate(watch)
    v = frame["value"].to_numpy()[mask]
    q = frame["quantity"].to_numpy()[mask]
    bad = np.array([(not np.isfinite(x)) if name == "loss" else x > 0 for name, x in zip(q, v)], dtype=bool)
    return int(frame["step"].to_numpy()[mask][bad].min()) if bad.any() else None


def records_to_frame(records: list[Record]) -> pd.DataFrame:
    """The long-format table of ``records``, with one device-to-host transfer for all of them
    (their values computed first: :func:`finish`; a record whose values cannot be computed raises)."""
    records, error = finish(records)
    if error is not None:
        raise error
    device_parts = [r.values for r in records if r.values is not None and r.values.numel()]
    flat = torch.cat(device_parts).cpu().numpy() if device_parts else np.zeros(0)
    pieces: list[tuple[int, str, Schema, np.ndarray]] = []
    at = 0
    for r in records:
        if r.values is not None and r.values.numel():
            n = len(r.schema)
            pieces.append((r.step, r.mode, r.schema, flat[at:at + n]))
            at += n
        if r.host_schema is not None and len(r.host_schema):
            pieces.append((r.step, r.mode, r.host_schema, np.asarray(r.host_values, np.float64)))
    if not pieces:
        return empty_frame()
    sizes = [len(p[2]) for p in pieces]
    layer, mode, module_type, role, quantity = _strings([(p[2], p[1]) for p in pieces])
    return pd.DataFrame({
        "step": np.repeat(np.array([p[0] for p in pieces], np.int64), sizes),
        "layer": layer,
        "depth": np.concatenate([p[2].depth for p in pieces]),
        "mode": mode,
        "module_type": module_type,
        "role": role,
        "quantity": quantity,
        "value": np.concatenate([p[3] for p in pieces]).astype(np.float64),
    })


def _strings(pieces: list[tuple[Schema, str]]) -> tuple[pd.Series, ...]:
    """The string columns (layer, mode, module_type, role, quantity) of ``pieces`` laid end to end.
    A flush of the same layouts as the last flush that began with the same schema reuses its
    columns, kept on that schema (pandas copies on write: the frames cannot change each other's)."""
    first = pieces[0][0].__dict__
    last, cols = first.get("_joined", ((), ()))
    if len(last) == len(pieces) and all(a is s and b == m for (a, b), (s, m) in zip(last, pieces)):
        return cols
    per = [s.columns(m) for s, m in pieces]
    cols = tuple(pd.concat([c[j] for c in per], ignore_index=True) if len(per) > 1 else per[0][j].copy()
                 for j in range(5))
    first["_joined"] = (pieces, cols)
    return cols
