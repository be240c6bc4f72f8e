"""Which rows of a probe table belong to which kind of layer, by the ``role`` column, and the pooled
share of a layer-output part: the one definition of each that the claims, the analyses, the plots,
their captions and the sinks use. Layers are selected by role (``varprobe.vocabulary.ROLES``, decided
once by the probe's plan), never by a substring of ``module_type``."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..vocabulary import LEGACY_ROLES

__all__ = ["CONV_ROLES", "THEORY_ROLES", "WEIGHT_ROLES", "roles", "has_roles", "is_conv", "is_weight_layer",
           "conv_rows", "weight_rows", "pooled_shares"]

#: The convolutions the paper's claims, the "conv mean" of captions and the decomposition speak of
#: (not transposed convs, whose role is "conv_transpose").
CONV_ROLES: tuple[str, ...] = ("conv",)
#: The layers y = W x + b, a sum over taps of the input, whose output moments the i.i.d. theory
#: predicts (``varprobe.analysis.compare``; the probe's ``dec.*`` rows).
THEORY_ROLES: tuple[str, ...] = ("conv", "linear")
#: The layers with a weight laid out in filters (``varprobe.layouts``): what the figures draw over
#: depth (spp, heatmaps of several runs, transmission) and what comes first within a depth.
WEIGHT_ROLES: tuple[str, ...] = ("conv", "conv_transpose", "linear", "attention", "embedding")


def has_roles(frame: pd.DataFrame) -> bool:
    """Whether :func:`roles` can tell the role of each row: the frame has ``role`` or ``module_type``."""
    return "role" in frame.columns or "module_type" in frame.columns


def roles(frame: pd.DataFrame) -> pd.Series:
    """The role of each row of ``frame`` (a str Series on its index): its ``role`` column. A frame
    without one (built by hand, or a run-format-1 table not read through ``varprobe.load_runs``) gets
    it as ``load_runs`` fills a format-1 run: ``""`` for rows of layer ``""``, ``"block"`` for
    ``block.out.*`` and ``branch.out.*`` rows, else ``module_type`` looked up in the exact table
    ``varprobe.vocabulary.LEGACY_ROLES`` (``"other"`` for a name it lacks). ValueError, naming the
    columns, for a frame with neither ``role`` nor ``module_type``."""
    if "role" in frame.columns:
        return frame["role"].astype(str)
    if "module_type" not in frame.columns:
        raise ValueError("the frame has neither a 'role' nor a 'module_type' column, so its layers cannot be "
                         f"told apart; columns: {', '.join(map(str, frame.columns))} (Probe.frame() and "
                         "varprobe.load_runs give both)")
    role = frame["module_type"].astype(str).map(lambda t: LEGACY_ROLES.get(t, "other"))
    if "quantity" in frame.columns:
        role = role.where(~frame["quantity"].astype(str).str.startswith(("block.out.", "branch.out.")), "block")
    if "layer" in frame.columns:
        role = role.where(frame["layer"].astype(str) != "", "")
    return role


def is_conv(frame: pd.DataFrame) -> pd.Series:
    """Bool per row: the row's layer has a role of :data:`CONV_ROLES` (:func:`roles`)."""
    return roles(frame).isin(CONV_ROLES)


def is_weight_layer(frame: pd.DataFrame) -> pd.Series:
    """Bool per row: the row's layer has a role of :data:`WEIGHT_ROLES` (:func:`roles`)."""
    return roles(frame).isin(WEIGHT_ROLES)


def conv_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of conv layers (:func:`is_conv`)."""
    return frame[is_conv(frame)]


def weight_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of layers with a weight laid out in filters (:func:`is_weight_layer`)."""
    return frame[is_weight_layer(frame)]


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
