"""Values that are zero up to float rounding, found and marked the same way in every figure.

The rule: a value is zero up to float32 rounding when it lies below :data:`ROUNDING` (100 float32
epsilons) times its scale, to the power of the quantity's degree: a ratio is measured against 1,
a squared quantity against the square of the scale of what it is the square of
(:data:`SCALES`: a squared channel mean against the channel variance of the same layer and step,
a squared filter sum against the squared filter norm). On a log axis such values say nothing but
"rounding" and would squash the axis by many decades (a train-mode BN output's squared channel
mean sits at 1e-15): :func:`clip` lifts them into a band of two decades below the rounding level,
and :func:`shade` hatches that band and labels it, so no figure shows rounding as a measurement;
:func:`note` is the footer's sentence stating the rule.
Pure pandas and matplotlib; nothing is loaded or saved.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["ROUNDING", "SCALES", "BAND_DECADES", "LABEL", "at_rounding", "clip", "shade", "rule", "note"]

#: 100 float32 epsilons (about 1.2e-5): the relative size below which a value is zero up to rounding.
ROUNDING = 100 * float(np.finfo(np.float32).eps)
#: quantity -> (the quantity of the same run, step and layer it is measured against, or None for a
#: ratio measured against 1; the degree: 2 for a square). Quantities absent here are never marked.
SCALES: dict[str, tuple[str | None, int]] = {
    "gw.shift_ratio": (None, 1),
    "train_eval_gap": (None, 1),
    "out.ch_sq_mean": ("out.ch_var", 2),
    "block.out.ch_sq_mean": ("block.out.ch_var", 2),
    "branch.out.ch_sq_mean": ("branch.out.ch_var", 2),
    "k.filter_sum_sq": ("k.sq_norm", 2),
    "w.filter_sum_sq": ("w.sq_norm", 2),
}
#: Decades below the rounding level that the band spans; values further down are drawn at its bottom.
BAND_DECADES = 2
#: The band's label (the level follows on a second line).
LABEL = "zero up to float32 rounding"


def at_rounding(frame: pd.DataFrame, quantity: str) -> tuple[pd.Series, float]:
    """For the rows of ``quantity`` in the long ``frame`` (``run``, ``step``, ``layer``, ``quantity``,
    ``value``): whether each is zero up to rounding (a boolean Series on those rows' index), and the
    level a figure marks, ``ROUNDING**degree`` times the median scale of those rows (NaN when the
    quantity has no rule in :data:`SCALES` or its scale was not recorded: then nothing is marked)."""
    rows = frame[frame["quantity"] == quantity]
    if quantity not in SCALES or rows.empty:
        return pd.Series(False, index=rows.index), float("nan")
    ref, degree = SCALES[quantity]
    factor = ROUNDING ** degree
    if ref is None:
        scale = pd.Series(1.0, index=rows.index)
    else:
        keys = [c for c in ("run", "step", "layer", "mode") if c in frame.columns]
        other = frame[frame["quantity"] == ref].drop_duplicates(keys).set_index(keys)["value"]
        scale = pd.Series(other.reindex(pd.MultiIndex.from_frame(rows[keys])).to_numpy(dtype=float),
                          index=rows.index)
    value = rows["value"].to_numpy(dtype=float)
    s = scale.to_numpy(dtype=float)
    known = np.isfinite(s) & (s > 0)
    if not known.any():
        return pd.Series(False, index=rows.index), float("nan")
    flags = known & np.isfinite(value) & (np.abs(value) < factor * np.where(known, s, 0.0))
    return pd.Series(flags, index=rows.index), float(factor * np.median(s[known]))


def clip(data: pd.DataFrame, flags: pd.Series, level: float, column: str = "value") -> pd.DataFrame:
    """``data`` with the ``column`` of the rows ``flags`` marks (zero up to rounding) held inside the
    band below ``level``: at most ``level``, at least ``level`` / 10**:data:`BAND_DECADES`."""
    marked = flags.reindex(data.index, fill_value=False).to_numpy(dtype=bool)
    if not marked.any() or not np.isfinite(level):
        return data
    v = data[column].to_numpy(dtype=float).copy()
    v[marked] = np.clip(np.nan_to_num(v[marked], nan=level), level / 10 ** BAND_DECADES, level)
    return data.assign(**{column: v})


def rule(quantity: str) -> str:
    """The rule of :data:`SCALES` for ``quantity`` in words, for a footer: "below 100 ε" or "below
    (100 ε)² × out.ch_var of the same layer and step"; "" for a quantity without a rule."""
    if quantity not in SCALES:
        return ""
    ref, degree = SCALES[quantity]
    eps = "100 ε" if degree == 1 else f"(100 ε)^{degree}".replace("^2", "²")
    return f"below {eps}" + (f" × {ref} of the same layer and step" if ref else "")


def note(quantity: str, n: int, log: bool = True) -> str:
    """The footer's sentence for ``n`` values of ``quantity`` found zero up to rounding ("" for none)."""
    if not n:
        return ""
    return (f"{n} {quantity} values {rule(quantity)} (ε the float32 epsilon) are zero up to float32 rounding"
            + (": drawn in the hatched band." if log else "."))


def shade(ax, level: float) -> None:
    """Hatch the band of a log y axis from ``level`` / 10**:data:`BAND_DECADES` to ``level`` and label
    it :data:`LABEL` with the level; the axis grows to show the band. Nothing on a linear axis or at
    a NaN level."""
    if not np.isfinite(level) or ax.get_yscale() != "log":
        return
    low = level / 10 ** BAND_DECADES
    lo, hi = ax.get_ylim()
    lo, hi = min(lo, low / 2), max(hi, level * 10)
    ax.axhspan(low / 2, level, facecolor="#eeeeee", edgecolor="#bbbbbb", hatch="///", linewidth=0, zorder=0)
    ax.set_ylim(lo, hi)
    ax.annotate(f"{LABEL} (< {level:.2g})", (0.99, level), xycoords=("axes fraction", "data"), xytext=(0, -2),
                textcoords="offset points", ha="right", va="top", fontsize=7, color="#555555", zorder=5)
