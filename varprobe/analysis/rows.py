"""Which rows of a probe table belong to conv (or conv and linear) layers, and the pooled share of a
layer-output part: the one definition of each that the claims, the plots and their captions use."""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["is_conv", "is_weight_layer", "conv_rows", "pooled_shares"]

_CONV = re.compile("conv", re.IGNORECASE)  # Conv2d, PWSConv2d, WSConv2d, Conv1D (transformers), ...
_WEIGHT = re.compile("conv|linear", re.IGNORECASE)  # the layers that define ``depth``


def is_conv(module_type: pd.Series) -> pd.Series:
    """Bool per row: the row's ``module_type`` names a convolution ("conv" in any case)."""
    return module_type.astype(str).str.contains(_CONV)


def is_weight_layer(module_type: pd.Series) -> pd.Series:
    """Bool per row: the module is a conv or linear layer ("conv" or "linear" in any case)."""
    return module_type.astype(str).str.contains(_WEIGHT)


def conv_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of conv layers (all rows of a frame without a ``module_type`` column)."""
    return frame[is_conv(frame["module_type"])] if "module_type" in frame.columns else frame


def pooled_shares(frame: pd.DataFrame, parts: Sequence[str], *, mode: str = "train",
                  min_depth: int = 1) -> pd.DataFrame:
    """Per run (when the frame has a ``run`` column) and step: each of ``parts`` (dec.* quantities)
    summed over the conv layers at depth >= ``min_depth`` and divided by ``dec.measured`` summed
    over the same layers (a ratio of sums, so a dead layer with a near-zero second moment cannot
    blow it up), and ``measured``, the mean of dec.measured over those layers. Only layers and
    steps where every part and dec.measured are finite count. Columns: [run,] step, part, share,
    measured. ValueError when the frame has no such rows or lacks a part."""
    needed = ["dec.measured", *parts]
    f = conv_rows(frame[(frame["mode"] == mode) & frame["quantity"].isin(needed) & (frame["depth"] >= min_depth)])
    if f.empty:
        raise ValueError(f"no dec.* rows of conv layers at depth >= {min_depth} in the frame (record "
                         "with Probe(..., quantities='all') or quantities=['dec.*'] in training mode)")
    keys = (["run"] if "run" in f.columns else []) + ["step"]
    wide = f.pivot_table(index=[*keys, "layer"], columns="quantity", values="value", aggfunc="first")
    missing = [q for q in needed if q not in wide.columns]
    if missing:
        raise ValueError(f"the frame lacks {', '.join(missing)}: record every dec.* quantity")
    wide = wide[needed]
    wide = wide[np.isfinite(wide.to_numpy()).all(axis=1)]
    sums = wide.groupby(level=keys).sum()
    shares = sums[list(parts)].div(sums["dec.measured"], axis=0)
    measured = wide["dec.measured"].groupby(level=keys).mean()
    long = shares.stack().rename("share").reset_index().rename(columns={"quantity": "part"})
    return long.join(measured.rename("measured"), on=keys)
