"""Theory next to measurement: the i.i.d. variance-transmission prediction for every conv layer."""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["compare", "layer_table"]

_NEEDED = ("in.mean", "in.var", "out.ch_var", "out.ch_sq_mean")


def layer_table(frame: pd.DataFrame, quantities, mode: str = "train") -> pd.DataFrame:
    """Wide table, one row per (run, step, layer) of conv/linear layers, one column per quantity."""
    keys = [k for k in ("run", "scheme", "step", "layer", "depth", "module_type") if k in frame.columns]
    f = frame[(frame["mode"] == mode) & frame["quantity"].isin(list(quantities))]
    return f.pivot_table(index=keys, columns="quantity", values="value", observed=True).reset_index()


def compare(frame: pd.DataFrame, mode: str = "train") -> pd.DataFrame:
    """Join the i.i.d.-input prediction of ``varprobe.theory.second_moment_split`` to the probe's
    measurements, per conv/linear layer and recorded step.

    For inputs with common mean mu = ``in.mean`` and variance sigma^2 = ``in.var``, filter i's output
    channel has (over batch and positions, zero padding ignored)

        Var_c(y_i) = sigma^2 ||w_i||^2            (the zero-mean part; the bias does not enter)
        mean_c(y_i)^2 = (mu * 1^T w_i + b_i)^2     (the shift part, plus the bias)

    Averaged over filters: predicted ``out.ch_var`` = sigma^2 * sq_norm and predicted
    ``out.ch_sq_mean`` = mu^2 * filter_sum_sq, using the effective kernel's ``k.*`` statistics where
    the layer has them and the raw weight's ``w.*`` otherwise. The ``out.ch_sq_mean`` prediction leaves
    out the bias, so it is exact in expectation only for layers without a bias or with a zero bias
    (e.g. at initialisation). Correlated inputs (neighbouring pixels) make the measured values
    differ: that difference is what ``rel_error`` = measured / predicted - 1 shows.

    Returns a long table: run/scheme (when present), step, layer, depth, quantity, predicted,
    measured, rel_error.
    """
    weight_q = ("w.sq_norm", "w.filter_sum_sq", "k.sq_norm", "k.filter_sum_sq")
    # Eval forwards at step k see the weights that training step k reads: join on (run, step, layer).
    fwd, weights = layer_table(frame, _NEEDED, mode), layer_table(frame, weight_q, "train")
    wide = fwd.merge(weights, how="left", on=[c for c in fwd.columns if c in weights.columns])
    for q in weight_q:
        if q not in wide:
            wide[q] = np.nan
    sq_norm = wide["k.sq_norm"].fillna(wide["w.sq_norm"])
    filter_sum_sq = wide["k.filter_sum_sq"].fillna(wide["w.filter_sum_sq"])
    keys = [k for k in ("run", "scheme", "step", "layer", "depth") if k in wide.columns]
    parts = []
    for quantity, predicted in (("out.ch_var", wide["in.var"] * sq_norm),
                                ("out.ch_sq_mean", wide["in.mean"] ** 2 * filter_sum_sq)):
        part = wide[keys].copy()
        part["quantity"], part["predicted"], part["measured"] = quantity, predicted, wide[quantity]
        parts.append(part)
    out = pd.concat(parts, ignore_index=True).dropna(subset=["predicted", "measured"])
    out["rel_error"] = out["measured"] / out["predicted"] - 1.0
    return out.reset_index(drop=True)
