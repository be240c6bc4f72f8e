"""Host side of a Probe: recorded steps waiting for transfer, and their conversion to the long table."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

__all__ = ["Record", "Schema", "COLUMNS", "empty_frame", "records_to_frame"]

COLUMNS = ("step", "layer", "depth", "mode", "module_type", "quantity", "value")


class Schema:
    """The (layer, depth, module_type, quantity) of each row of a record, as column arrays."""

    def __init__(self, rows: tuple[tuple[str, int, str, str], ...]) -> None:
        self.rows = rows
        cols = list(zip(*rows)) if rows else [(), (), (), ()]
        self.layer = np.array(cols[0], dtype=object)
        self.depth = np.array(cols[1], dtype=np.int64)
        self.module_type = np.array(cols[2], dtype=object)
        self.quantity = np.array(cols[3], dtype=object)

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Record:
    """One closed step of one mode: device values (one per row of ``schema``) plus host values."""

    step: int
    mode: str
    schema: Schema
    values: Tensor | None
    host_schema: Schema | None = None
    host_values: list[float] = field(default_factory=list)


def empty_frame() -> pd.DataFrame:
    """A table with no rows and the right columns and dtypes."""
    return pd.DataFrame({"step": np.zeros(0, np.int64), "layer": np.zeros(0, object),
                         "depth": np.zeros(0, np.int64), "mode": np.zeros(0, object),
                         "module_type": np.zeros(0, object), "quantity": np.zeros(0, object),
                         "value": np.zeros(0, np.float64)}).astype({c: str for c in
                                                                      ("layer", "mode", "module_type",
                                                                       "quantity")})


def records_to_frame(records: list[Record]) -> pd.DataFrame:
    """The long-format table of ``records``, with one device-to-host transfer for all of them."""
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
    frame = pd.DataFrame({
        "step": np.repeat(np.array([p[0] for p in pieces], np.int64), sizes),
        "layer": np.concatenate([p[2].layer for p in pieces]),
        "depth": np.concatenate([p[2].depth for p in pieces]),
        "mode": np.repeat(np.array([p[1] for p in pieces], object), sizes),
        "module_type": np.concatenate([p[2].module_type for p in pieces]),
        "quantity": np.concatenate([p[2].quantity for p in pieces]),
        "value": np.concatenate([p[3] for p in pieces]).astype(np.float64),
    })
    return frame.astype({c: str for c in ("layer", "mode", "module_type", "quantity")})
