"""Width slopes: how each layer's statistics scale with the width of a network, with an interval over
seeds and a verdict fixed before anything runs (the coordinate check of a width sweep).

Input: a long *coordinates* table, one row per statistic of one layer at one recorded step of one
run, with the columns :data:`COORD_COLUMNS` (``layer, role, depth, quantity, step, width, seed,
value``; more are kept and ignored), as ``varprobe.experiment.sweep`` builds from its runs' frames.
A coordinate is a (``layer``, ``role``) pair: layers are matched across widths by name and role,
never by position.

For each (layer, role, quantity, step) and each seed, the slope is the least-squares slope of
``log(value)`` on ``log(width)`` over that seed's widths (:func:`varprobe.theory.loglog_slope`).
Over seeds the slopes are summarised by the report's statistic for ratios
(:func:`varprobe.analysis.geometric_ci`, the claims' "ratio" kind): per seed the growth factor per
doubling of the width ``2^slope``, its geometric mean with the back-transformed Student-t interval
of the logs, reported back on the slope scale (``log2``). That is the mean of the per-seed slopes
with their Student-t interval; a claim row can use the same per-seed factors as a "ratio" row.

The verdict (:func:`width_verdict`): "width-stable" when the whole interval lies within
``[-band, band]``, "grows" / "shrinks" when it lies wholly above ``band`` / below ``-band``,
"inconclusive" otherwise (one seed gives an infinite interval: inconclusive).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..theory.width import loglog_slope
from .logscale import geometric_ci
from .uncertainty import Interval

__all__ = ["WIDTH_BAND", "SWEEP_QUANTITIES", "COORD_COLUMNS", "SLOPE_COLUMNS", "WIDTH_VERDICTS", "SlopeFit",
           "fit_slopes", "slope_interval", "width_verdict", "compare_slopes"]

#: Half-width of the band around slope 0 within which an interval is "width-stable", fixed before
#: any sweep was run. Width-scaling theory (the abc-parametrisations behind muP) gives every one of
#: :data:`SWEEP_QUANTITIES` a width exponent that is a multiple of 1/2 (second moments: of 1), so the
#: nearest slope to 0 a wrong parametrisation produces is +-1/2; 1/4 is half-way. An interval inside
#: [-1/4, 1/4] excludes every such non-zero exponent and lies nearer 0 than any of them; one wholly
#: above 1/4 (below -1/4) is nearer a growing (shrinking) exponent. On the scale of the statistic it
#: is a factor 2^(1/4) = 1.19 per doubling of the width.
WIDTH_BAND = 0.25
#: What a sweep fits by default: the positive scale statistics of the forward pass (layer outputs and
#: residual-stream outputs), the backward pass (output and weight gradients) and the update size.
#: Signed (``out.mean``, ``gw.bias_corr``), count (``out.nonfinite``) and fraction (``out.dead_frac``,
#: ``gw.sign_persistence``) quantities have no log-log slope and are not in it.
SWEEP_QUANTITIES: tuple[str, ...] = (
    "out.var", "out.sq_mean", "out.ch_var", "out.ch_sq_mean",
    "block.out.var", "block.out.sq_mean", "block.out.ch_var", "block.out.ch_sq_mean",
    "grad_out.var", "grad_out.sq_mean", "gw.avg_abs", "gw.rms", "gw.shift_ratio", "w.update_ratio")
#: The columns a coordinates table must have.
COORD_COLUMNS: tuple[str, ...] = ("layer", "role", "depth", "quantity", "step", "width", "seed", "value")
#: The columns of the slopes table (``DIR/slopes.csv`` of ``varprobe sweep``), in this order.
SLOPE_COLUMNS: tuple[str, ...] = ("layer", "role", "quantity", "step", "slope", "ci_low", "ci_high", "n", "verdict")
#: The verdicts of :func:`width_verdict`.
WIDTH_VERDICTS: tuple[str, ...] = ("width-stable", "grows", "shrinks", "inconclusive")
_KEY = ["layer", "role", "quantity", "step"]
_SHOWN = 5


@dataclass(frozen=True)
class SlopeFit:
    """What :func:`fit_slopes` found.

    Attributes:
        table: One row per (layer, role, quantity, step) with at least one seed's slope, columns
            :data:`SLOPE_COLUMNS`: ``slope`` the mean of the per-seed slopes, [``ci_low``,
            ``ci_high``] their interval at ``level``, ``n`` the seeds, ``verdict``.
        per_seed: One row per (layer, role, quantity, step, seed) with a slope: those columns,
            ``slope`` and ``widths`` (how many widths the fit used).
        left_out: The coordinate rows not used, with a ``reason``: "non-positive value",
            "non-finite value", or "only one width for this seed" (nothing to fit).
        partial: Layers (layer, role) that are not at every width of the table: ``layer``,
            ``role``, ``widths`` (the widths they are at) and ``missing`` (those they are not
            at), both as sorted tuples. Their slopes use the widths they have.
        band: The band of the verdicts.
    """

    table: pd.DataFrame
    per_seed: pd.DataFrame
    left_out: pd.DataFrame
    partial: pd.DataFrame
    band: float = WIDTH_BAND


def width_verdict(ci: Interval, band: float = WIDTH_BAND) -> str:
    """The verdict of a slope's interval (module docstring): "width-stable" when ``-band <= low``
    and ``high <= band``, "grows" when ``low > band``, "shrinks" when ``high < -band``, else (or nan)
    "inconclusive"."""
    lo, hi = ci.low, ci.high
    if -band <= lo and hi <= band:
        return "width-stable"
    if lo > band:
        return "grows"
    if hi < -band:
        return "shrinks"
    return "inconclusive"


def slope_interval(slopes: np.ndarray, level: float = 0.95) -> Interval:
    """The interval over seeds of one coordinate's per-seed ``slopes``: the report's ratio statistic
    (:func:`~varprobe.analysis.geometric_ci`) on the per-doubling factors 2^slope, back on the slope
    scale: the mean slope with its Student-t interval. NaN when a slope is not finite; [-inf, inf]
    for one seed."""
    ci = geometric_ci(np.exp2(slopes), level)
    with np.errstate(divide="ignore"):
        low, high = float(np.log2(ci.low)), float(np.log2(ci.high))
    return Interval(float(np.mean(slopes)), low, high, ci.n, level)


def fit_slopes(coords: pd.DataFrame, *, band: float = WIDTH_BAND, level: float = 0.95,
               warn: bool = True) -> SlopeFit:
    """Per (layer, role, quantity, step): the slope of log(value) on log(width) per seed, its interval
    over seeds and its verdict (module docstring). Pure: reads ``coords``, writes nothing.

    Rows whose value is not finite or not positive have no logarithm: they are left out, listed in
    :attr:`SlopeFit.left_out` and, with ``warn``, named in one ``RuntimeWarning`` (with the layers
    found at only some widths).

    Raises:
        ValueError: a missing column (naming it and the columns needed), ``band`` not > 0, or two
            rows for one (layer, role, quantity, step, width, seed) (naming the first).
    """
    missing = [c for c in COORD_COLUMNS if c not in coords.columns]
    if missing:
        raise ValueError(f"fit_slopes needs the columns {', '.join(COORD_COLUMNS)}; missing {', '.join(missing)}")
    if not (band > 0 and math.isfinite(band)):
        raise ValueError(f"band must be a finite number > 0, got {band!r}")
    c = coords[list(COORD_COLUMNS)].copy()
    c["value"] = c["value"].astype(np.float64)
    dup = c.duplicated(_KEY + ["width", "seed"], keep=False)
    if dup.any():
        first = c[dup].iloc[0]
        raise ValueError(f"fit_slopes: {int(dup.sum())} rows share a coordinate, e.g. {first['quantity']} of layer "
                         f"{first['layer']!r} at step {first['step']}, width {first['width']}, seed {first['seed']}; "
                         "give one value per layer, role, quantity, step, width and seed")
    widths_all = tuple(sorted(set(c["width"].tolist())))
    present = c.groupby(["layer", "role"], sort=True)["width"].agg(lambda w: tuple(sorted(set(w.tolist()))))
    partial = pd.DataFrame([{"layer": k[0], "role": k[1], "widths": w,
                             "missing": tuple(x for x in widths_all if x not in w)}
                            for k, w in present.items() if w != widths_all],
                           columns=["layer", "role", "widths", "missing"])

    v = c["value"].to_numpy()
    reason = np.where(~np.isfinite(v), "non-finite value", np.where(v <= 0, "non-positive value", ""))
    left = [c[reason != ""].assign(reason=reason[reason != ""])]
    ok = c[reason == ""]
    n_widths = ok.groupby(_KEY + ["seed"], sort=False)["width"].transform("nunique")
    left.append(ok[n_widths < 2].assign(reason="only one width for this seed"))
    ok = ok[n_widths >= 2]
    left_out = pd.concat(left, ignore_index=True)

    rows = []
    for key, g in ok.groupby(_KEY + ["seed"], sort=True):
        rows.append((*key, loglog_slope(g["width"].to_numpy(), g["value"].to_numpy()), g["width"].nunique()))
    per_seed = pd.DataFrame(rows, columns=_KEY + ["seed", "slope", "widths"])
    out = []
    for key, g in per_seed.groupby(_KEY, sort=True):
        ci = slope_interval(g["slope"].to_numpy(dtype=np.float64), level)
        out.append((*key, ci.estimate, ci.low, ci.high, ci.n, width_verdict(ci, band)))
    table = pd.DataFrame(out, columns=list(SLOPE_COLUMNS))
    if warn and (len(left_out) or len(partial)):
        warnings.warn(_describe(left_out, partial), RuntimeWarning, stacklevel=2)
    return SlopeFit(table, per_seed, left_out.reset_index(drop=True), partial, band)


def _describe(left_out: pd.DataFrame, partial: pd.DataFrame) -> str:
    parts = []
    if len(left_out):
        counts = left_out["reason"].value_counts()
        shown = "; ".join(f"{r['quantity']} of {r['layer']!r} at step {r['step']}, width {r['width']}, seed {r['seed']} "
                          f"({r['reason']}: {r['value']!r})" for _, r in left_out.head(_SHOWN).iterrows())
        more = f"; and {len(left_out) - _SHOWN} more" if len(left_out) > _SHOWN else ""
        parts.append(f"left out {len(left_out)} value(s) with no log-log slope "
                     f"({', '.join(f'{n} {r}' for r, n in counts.items())}): {shown}{more}")
    if len(partial):
        shown = "; ".join(f"{r['layer']!r} ({r['role']}) only at widths {', '.join(map(str, r['widths']))}"
                          for _, r in partial.head(_SHOWN).iterrows())
        more = f"; and {len(partial) - _SHOWN} more" if len(partial) > _SHOWN else ""
        parts.append(f"{len(partial)} layer(s) not at every width, fitted over the widths they have: {shown}{more}")
    return "fit_slopes: " + "; ".join(parts)


def compare_slopes(slopes: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    """Predicted slopes next to the measured ones, like :func:`varprobe.analysis.compare`.

    ``predicted`` has a ``predicted`` column and any of the key columns ``layer``, ``role``,
    ``quantity``, ``step`` (those it has are joined on; e.g. without ``step`` one prediction holds at
    every step). Returns the rows of ``slopes`` that have a prediction, with ``predicted``,
    ``error`` = slope - predicted and ``within``: whether the prediction lies inside [ci_low,
    ci_high]. ValueError naming the columns when ``predicted`` has no key column or no ``predicted``.
    """
    keys = [k for k in _KEY if k in predicted.columns]
    if "predicted" not in predicted.columns or not keys:
        raise ValueError("compare_slopes needs a 'predicted' column and at least one of "
                         f"{', '.join(_KEY)}; got {', '.join(map(str, predicted.columns))}")
    out = slopes.merge(predicted[keys + ["predicted"]], on=keys, how="inner")
    out["error"] = out["slope"] - out["predicted"]
    out["within"] = (out["ci_low"] <= out["predicted"]) & (out["predicted"] <= out["ci_high"])
    return out.reset_index(drop=True)
