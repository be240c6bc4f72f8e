"""Theory next to measurement: the best prediction varprobe has of every conv/linear layer's channel
variance and squared channel mean, joined to the probe's measurement, and the share of layers it
gets within a band (one source for the theory figure and for tables)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..theory import split_from_norms
from ..vocabulary import COLUMNS
from .rows import THEORY_ROLES, roles

__all__ = ["compare", "compare_summary", "layer_table", "below_floor", "PREDICTIONS", "CHANNEL", "POOLED",
           "FLOOR", "BAND"]

#: The ``prediction`` column of :func:`compare`: its values, best first, and what each is.
CHANNEL = "per-channel, padding-aware"
POOLED = "pooled, no padding"
PREDICTIONS: dict[str, str] = {
    CHANNEL: "dec.pred_ch_var, dec.pred_ch_sq_mean: input entries independent, each input channel with its own "
             "mean and variance over the step, zero padding counted (varprobe.theory.channel_moments)",
    POOLED: "in.var * sq_norm and in.mean^2 * filter_sum_sq: i.i.d. inputs with the input's pooled mean and "
            "variance, zero padding ignored (varprobe.theory.split_from_norms)",
}
#: A prediction below FLOOR x its measurement is zero up to float rounding, not a prediction: the
#: filter sums of zero-sum kernels (PWS, centered) are float32 rounding, about 1e-7 of a weight,
#: and the pooled squared-mean prediction their square (measured 1e-21 to 1e-12 against 1e-3 to 1).
#: A genuine miss by a factor 1e6 is drawn and counted the same way: as no prediction.
FLOOR = 1e-6
#: The default band of :func:`compare_summary` and the figure: |measured / predicted - 1| <= BAND.
BAND = 0.2
_NEEDED = ("in.mean", "in.var", "out.ch_var", "out.ch_sq_mean", "dec.pred_ch_var", "dec.pred_ch_sq_mean")
_WEIGHT_Q = ("w.sq_norm", "w.filter_sum_sq", "k.sq_norm", "k.filter_sum_sq")
_CHOICES = ("best", "channel", "pooled")


def layer_table(frame: pd.DataFrame, quantities, mode: str = "train") -> pd.DataFrame:
    """Wide table, one row per (run, step, layer) of the layers of role ``THEORY_ROLES`` (conv and
    linear, ``varprobe.analysis.rows``), one column per quantity."""
    keys = [k for k in ("run", "scheme", "step", "layer", "depth", "module_type", "role") if k in frame.columns]
    f = frame[(frame["mode"] == mode) & frame["quantity"].isin(list(quantities))]
    f = f[roles(f).isin(THEORY_ROLES)]
    return f.pivot_table(index=keys, columns="quantity", values="value", observed=True).reset_index()


def below_floor(predicted, measured, floor: float = FLOOR) -> np.ndarray:
    """Bool array: ``predicted < floor * measured`` (a prediction that is zero up to rounding)."""
    p = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    return p < floor * m


def compare(frame: pd.DataFrame, mode: str = "train", prediction: str = "best") -> pd.DataFrame:
    """Predicted against measured ``out.ch_var`` and ``out.ch_sq_mean`` per conv/linear layer (role
    "conv" or "linear", :data:`varprobe.analysis.rows.THEORY_ROLES`) and step.

    Two predictions, for input entries that are independent (``PREDICTIONS``):

    - ``CHANNEL`` ("per-channel, padding-aware"), the probe's ``dec.pred_ch_var`` and
      ``dec.pred_ch_sq_mean`` (training mode; ``varprobe.theory.channel_moments``): input channel
      c with its own mean mu_c and variance var_c, zero padding counted, the bias included;
    - ``POOLED`` ("pooled, no padding"), from one pooled mean mu = ``in.mean`` and variance
      sigma^2 = ``in.var`` of the input (``varprobe.theory.split_from_norms``): predicted
      ``out.ch_var`` = sigma^2 sq_norm and ``out.ch_sq_mean`` = mu^2 filter_sum_sq, with the
      effective kernel's ``k.*`` where the layer has them and the raw weight's ``w.*`` otherwise
      (the bias left out: exact in expectation only at a zero bias, e.g. at initialisation).

    ``prediction``: "best" (``CHANNEL`` where the frame has it, else ``POOLED``), "channel" or
    "pooled" (only that one; rows without it are left out). Correlated inputs (neighbouring
    pixels) make the measured values differ: that is what ``rel_error`` = measured / predicted - 1
    shows.

    Returns a long table: run/scheme (when present), step, layer, depth, module_type, role, quantity,
    prediction, predicted, measured, rel_error, below_floor (``below_floor(predicted, measured)``),
    then the runs' config columns of a ``varprobe.load_runs`` frame (model, lr, seed, ...).
    """
    if prediction not in _CHOICES:
        raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(_CHOICES)}")
    # Eval forwards at step k see the weights that training step k reads: join on (run, step, layer).
    fwd, weights = layer_table(frame, _NEEDED, mode), layer_table(frame, _WEIGHT_Q, "train")
    wide = fwd.merge(weights, how="left", on=[c for c in fwd.columns if c in weights.columns])
    for q in _NEEDED + _WEIGHT_Q:
        if q not in wide:
            wide[q] = np.nan
    pooled = split_from_norms(wide["k.sq_norm"].fillna(wide["w.sq_norm"]),
                              wide["k.filter_sum_sq"].fillna(wide["w.filter_sum_sq"]),
                              wide["in.mean"], wide["in.var"])
    keys = [k for k in ("run", "scheme", "step", "layer", "depth", "module_type", "role") if k in wide.columns]
    parts = []
    for quantity, channel, pool in (("out.ch_var", wide["dec.pred_ch_var"], pooled.zero_mean),
                                    ("out.ch_sq_mean", wide["dec.pred_ch_sq_mean"], pooled.shift)):
        channel, pool = np.asarray(channel, dtype=np.float64), np.asarray(pool, dtype=np.float64)
        use_channel = np.isfinite(channel) & (prediction != "pooled")
        if prediction == "channel":
            pool = np.full_like(pool, np.nan)
        part = wide[keys].copy()
        part["quantity"] = quantity
        part["prediction"] = np.where(use_channel, CHANNEL, POOLED)
        part["predicted"] = np.where(use_channel, channel, pool)
        part["measured"] = wide[quantity].to_numpy(dtype=np.float64)
        parts.append(part)
    columns = keys + ["quantity", "prediction", "predicted", "measured"]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    out = out.dropna(subset=["predicted", "measured"]).reset_index(drop=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rel_error"] = out["measured"] / out["predicted"] - 1.0
    out["below_floor"] = below_floor(out["predicted"], out["measured"])
    config = [c for c in frame.columns if c not in COLUMNS and c not in out.columns]
    if "run" in out.columns and config:  # the runs' configs, so a figure of the table can name them
        out = out.merge(frame.drop_duplicates("run")[["run", *config]], on="run", how="left")
    return out


def compare_summary(table: pd.DataFrame, band: float = BAND, floor: float = FLOOR,
                    by: str | None = "scheme") -> pd.DataFrame:
    """Per quantity and ``by`` (default scheme; when ``table`` has that column) of a
    :func:`compare` table: how many of its points the prediction gets within ``band``.

    Points: rows with a finite measured value > 0 and a finite predicted value >= 0 (those a
    log-log figure can show; a prediction below ``floor`` x measured is shown at the floor).
    ``within``: points with |measured / predicted - 1| <= band and not below the floor;
    ``share`` = within / n; ``below_floor``: points whose prediction is below the floor;
    ``median_abs_error``: median |measured / predicted - 1| over the points that are not below the
    floor (NaN when none); ``prediction``: the prediction(s) used, "; "-joined. The theory figure
    prints exactly these numbers (``varprobe.plot.theory_vs_measured``).

    Columns: quantity, [``by``,] prediction, n, within, share, below_floor, median_abs_error.
    """
    if not (0 < band < 1):
        raise ValueError(f"band must be in (0, 1), got {band!r}")
    missing = [c for c in ("predicted", "measured") if c not in table.columns]
    if missing:
        raise ValueError(f"compare_summary needs columns 'predicted' and 'measured'; missing {', '.join(missing)}")
    t = table.copy()
    if "quantity" not in t.columns:
        t["quantity"] = ""
    if "prediction" not in t.columns:
        t["prediction"] = ""
    p, m = t["predicted"].to_numpy(dtype=np.float64), t["measured"].to_numpy(dtype=np.float64)
    t = t[np.isfinite(p) & np.isfinite(m) & (m > 0) & (p >= 0)].copy()
    p, m = t["predicted"].to_numpy(dtype=np.float64), t["measured"].to_numpy(dtype=np.float64)
    t["_floor"] = below_floor(p, m, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        t["_err"] = np.abs(m / p - 1.0)
    t["_within"] = (t["_err"] <= band) & ~t["_floor"]
    by = ["quantity"] + ([by] if by is not None and by in t.columns else [])
    rows = []
    for key, g in t.groupby(by, sort=True, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        key = tuple(str(k) for k in key)
        ok = g.loc[~g["_floor"], "_err"]
        rows.append({**dict(zip(by, key)),
                     "prediction": "; ".join(sorted(set(g["prediction"].astype(str)))),
                     "n": len(g), "within": int(g["_within"].sum()), "share": float(g["_within"].mean()),
                     "below_floor": int(g["_floor"].sum()),
                     "median_abs_error": float(ok.median()) if len(ok) else float("nan")})
    return pd.DataFrame(rows, columns=by + ["prediction", "n", "within", "share", "below_floor",
                                            "median_abs_error"])
