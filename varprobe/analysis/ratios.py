"""Variance transmission ratios per layer, derived from stored probe quantities."""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["transmission_ratios"]

_NEED = ("out.var", "in.var", "grad_in.var", "grad_out.var")


def transmission_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """Per layer and recorded step, long format: ``fwd.var_ratio`` = out.var / in.var (forward
    transmission) and ``bwd.var_ratio`` = grad_in.var / grad_out.var (backward), with the layer's
    ``depth``, ``module_type`` and ``role``. A layer without ``in.var`` or ``grad_in.var`` (the first layer,
    whose input needs no gradient) has no row for that ratio, nor has a non-finite ratio. The
    ratios are not stored by the probe: they are derived here, once."""
    keys = [c for c in ("run", "step", "mode", "layer") if c in frame.columns]
    cols = ["fwd.var_ratio", "bwd.var_ratio"]
    base = frame[frame["quantity"].isin(_NEED)]
    if base.empty:
        return pd.DataFrame(columns=[*keys, "depth", "module_type", "role", "quantity", "value"])
    wide = base.pivot_table(index=keys, columns="quantity", values="value", aggfunc="first")
    wide = wide.reindex(columns=list(_NEED))
    with np.errstate(divide="ignore", invalid="ignore"):
        wide["fwd.var_ratio"] = wide["out.var"] / wide["in.var"]
        wide["bwd.var_ratio"] = wide["grad_in.var"] / wide["grad_out.var"]
    long = wide[cols].reset_index().melt(id_vars=keys, value_vars=cols, var_name="quantity", value_name="value")
    long["value"] = long["value"].replace([np.inf, -np.inf], np.nan)
    long = long.dropna(subset=["value"])
    layer_keys = [c for c in ("run", "layer") if c in frame.columns]
    attrs = [c for c in ("depth", "module_type", "role") if c in frame.columns]
    per_layer = frame[layer_keys + attrs].drop_duplicates(layer_keys)
    return long.merge(per_layer, on=layer_keys, how="left")
