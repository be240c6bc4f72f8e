"""Captions computed from a figure's own data: one pure function per figure kind.

Each ``caption_<kind>(frame) -> str`` takes the very frame the figure function is given (a long
probe table from ``varprobe.load_runs``, or the one-row-per-run / predicted-measured table that
figure takes) and returns one or two sentences whose every number is read off that frame, so a
caption cannot say something else than its picture. No torch, no matplotlib drawing.

Conventions: "conv mean" is the mean over a run's conv layers (role "conv",
``varprobe.analysis.rows.conv_rows``) at one step; "over seeds" values are per-seed numbers listed in seed order or their mean
with [min, max]; numbers are printed with 3 significant digits (:func:`num`).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..analysis.rows import conv_rows, is_weight_layer
from . import _derive as d
from .rounding import ROUNDING

__all__ = ["caption_amplification", "caption_curves", "caption_collapse", "caption_shift", "caption_spp",
           "caption_decomposition", "caption_attribution", "caption_theory", "caption_per_run", "caption_predictors",
           "caption_coord_check", "num", "BOUND", "ROUNDING"]

#: The amplification caption's bound on E[y^2] of a layer output (inputs are about unit scale,
#: so 100 is two decades of growth).
BOUND = 100.0


def num(x: float) -> str:
    """3 significant digits; 1e4 and up or below 1e-3 in e-notation (2.3e+04 -> "2.3e4")."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        m, e = f"{x:.2e}".split("e")
        return f"{float(m):g}e{int(e)}"
    return f"{float(f'{x:.3g}'):g}"  # 6410, not 6.41e+03


def _schemes(frame: pd.DataFrame) -> list[str]:
    from .style import order_levels
    return order_levels(frame["scheme"]) if "scheme" in frame.columns else ["all runs"]


def _by_scheme(frame: pd.DataFrame, scheme: str) -> pd.DataFrame:
    return frame if "scheme" not in frame.columns else frame[frame["scheme"].astype(str) == scheme]


def _seed_order(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.sort_values("seed") if "seed" in runs.columns else runs


def _lrs(frame: pd.DataFrame) -> str:
    if "lr" not in frame.columns:
        return ""
    lrs = sorted(set(float(v) for v in frame["lr"].dropna()))
    return "lr " + ", ".join(f"{v:g}" for v in lrs)


def caption_amplification(frame: pd.DataFrame, quantity: str = "out.sq_mean", bound: float = BOUND,
                          mode: str = "train") -> str:
    """Which schemes kept ``quantity`` (default E[y^2] of each layer output) within ``bound`` at
    every recorded step and every layer of the frame (not only the layers a figure shows), per
    seed: "plain 1 of 3 seeds (peaks 2.3e4, 12, 5.1e3)". A run's peak is the max over its finite
    values; a run with a non-finite value counts as outside the bound (peak inf)."""
    f = d.prepare(frame, mode)
    q = f[(f["quantity"] == quantity) & (f["layer"] != "")]
    weight = is_weight_layer(q)
    if weight.any():
        q = q[weight]  # the layers the figure draws from
    if q.empty:
        raise ValueError(f"no {quantity} rows to caption")
    n_layers = q["layer"].nunique()
    parts = []
    for sc in _schemes(q):
        sub = _by_scheme(q, sc)
        runs = _seed_order(d.run_table(sub))
        peaks = []
        for run in runs["run"]:
            v = sub.loc[sub["run"] == run, "value"].to_numpy(dtype=float)
            peaks.append(math.inf if not np.isfinite(v).all() else float(v.max()))
        inside = sum(p <= bound for p in peaks)
        parts.append(f"{sc} {inside} of {len(peaks)} seed{'s' if len(peaks) != 1 else ''} "
                     f"(peak{'s' if len(peaks) != 1 else ''} {', '.join(num(p) for p in peaks)})")
    where = f" at {_lrs(q)}" if _lrs(q) else ""
    return (f"Runs whose {quantity} stayed at or below {num(bound)} in all {n_layers} conv/linear layers at every recorded "
            f"step{where}: " + "; ".join(parts) + ".")


def _conv_mean_by_run(frame: pd.DataFrame, quantity: str) -> pd.DataFrame:
    """Rows run, step, value: the conv mean of ``quantity`` (all layers when none is a conv)."""
    q = frame[(frame["quantity"] == quantity) & (frame["layer"] != "")]
    c = conv_rows(q)
    q = c if len(c) else q
    q = q[np.isfinite(q["value"].to_numpy(dtype=float))]
    return q.groupby(["run", "step"], sort=True)["value"].mean().reset_index()


def caption_curves(frame: pd.DataFrame, quantity: str, mode: str = "train", *, negligible: float = 1e-6) -> str:
    """Growth of ``quantity`` from the first to the last recorded step, per scheme: each run's
    conv mean at its last step over that at its first, mean over seeds [min, max]. A scheme whose
    values all stay below ``negligible`` x the largest value of the figure is named as at float
    rounding instead (a zero-sum kernel's filter sums): a growth of rounding noise means nothing."""
    f = d.prepare(frame, mode)
    means = {sc: _conv_mean_by_run(_by_scheme(f, sc), quantity) for sc in _schemes(f)}
    means = {sc: m for sc, m in means.items() if not m.empty}
    if not means:
        raise ValueError(f"no {quantity} rows to caption")
    top = max(float(np.abs(m["value"].to_numpy(dtype=float)).max()) for m in means.values())
    parts = []
    for sc, m in means.items():
        peak = float(np.abs(m["value"].to_numpy(dtype=float)).max())
        if top > 0 and peak < negligible * top:
            parts.append(f"{sc} at most {num(peak)}, zero up to float rounding (below {negligible:g} of the "
                         "largest value), so no growth to speak of")
            continue
        g = m.groupby("run")["value"]
        ratio = (g.last() / g.first()).to_numpy(dtype=float)
        parts.append(f"{sc} x{num(ratio.mean())}" + (f" [{num(ratio.min())}, {num(ratio.max())}]"
                                                     if ratio.size > 1 else ""))
    steps = f.loc[f["quantity"] == quantity, "step"]
    where = f" at {_lrs(f)}" if _lrs(f) else ""
    return (f"Growth of {quantity} (mean over conv layers) from step {int(steps.min())} to {int(steps.max())}"
            f"{where}, mean [min, max] over seeds: " + "; ".join(parts) + ".")


def caption_collapse(frame: pd.DataFrame) -> str:
    """Per learning rate (largest first), by the collapse figure's two rules
    (``varprobe.plot.collapse.RULES``): which schemes had seeds that did not train (k/n; unknown
    when the table has no train accuracy) and which blew up, and the scheme with the highest mean
    final training loss there. ``frame``: what ``collapse_map`` takes."""
    from .collapse import run_outcomes
    runs = run_outcomes(frame)
    known = runs["did_not_train"].notna().all()
    out = []
    for lr in sorted(runs["lr"].unique(), reverse=True):
        at = runs[runs["lr"] == lr]
        schemes = _schemes(at)
        seeds = "/".join(str(s) for s in sorted(set(at.groupby("scheme").size())))
        parts = []
        for key, what in (("did_not_train", "did not train"), ("blew_up", "blew up")):
            if key == "did_not_train" and not known:
                parts.append("did not train: unknown (no train accuracy)")
                continue
            bad = [f"{sc} {int(at.loc[at['scheme'] == sc, key].sum())}/{int((at['scheme'] == sc).sum())}"
                   for sc in schemes if at.loc[at["scheme"] == sc, key].sum() > 0]
            parts.append(f"{what} " + ", ".join(bad) + (", every other scheme 0" if len(bad) < len(schemes) else "")
                         if bad else f"no run {what}")
        worst = None
        for sc in schemes:
            loss = at.loc[at["scheme"] == sc, "final_loss"].to_numpy(dtype=float)
            mean = float(np.mean(loss)) if loss.size else math.nan
            if not math.isnan(mean) and (worst is None or mean > worst[1]):
                worst = (sc, mean)
        text = f"lr {lr:g} ({len(schemes)} schemes x {seeds} seeds): " + "; ".join(parts)
        if worst is not None:
            text += f"; highest mean final loss {worst[0]} ({num(worst[1])})"
        out.append(text)
    return ". ".join(out) + "."


def caption_shift(frame: pd.DataFrame, mode: str = "train") -> str:
    """``gw.shift_ratio`` per scheme (each run's conv mean averaged over its recorded steps; mean
    over seeds [min, max]), with the schemes below :data:`ROUNDING` named as zero up to
    rounding, and the growth of ``w.filter_sum_var`` first -> last step (mean over seeds)."""
    f = d.prepare(frame, mode)
    parts, zero = [], []
    for sc in _schemes(f):
        m = _conv_mean_by_run(_by_scheme(f, sc), "gw.shift_ratio")
        if m.empty:
            continue
        per_run = m.groupby("run")["value"].mean().to_numpy(dtype=float)
        text = f"{sc} {num(per_run.mean())}" + (f" [{num(per_run.min())}, {num(per_run.max())}]"
                                                if per_run.size > 1 else "")
        if per_run.max() < ROUNDING:
            zero.append(sc)
        s = _conv_mean_by_run(_by_scheme(f, sc), "w.filter_sum_var")
        if len(s):
            g = s.groupby("run")["value"]
            text += f", filter-sum spread x{num(float((g.last() / g.first()).mean()))}"
        parts.append(text)
    if not parts:
        raise ValueError("no gw.shift_ratio rows to caption")
    where = f" at {_lrs(f)}" if _lrs(f) else ""
    tail = (f" {', '.join(zero)}: below {num(ROUNDING)}, i.e. zero up to float32 rounding." if zero else "")
    return (f"Shift ratio (mean over conv layers and steps; 0.8 = no shift){where}, mean [min, max] over seeds, "
            "and growth of the filter-sum spread first to last step: " + "; ".join(parts) + "." + tail)


def caption_spp(frame: pd.DataFrame, mode: str = "train") -> str:
    """Per scheme: the largest channel variance over depth (the ``spp`` figure's top row: its log
    axis draws the geometric mean over seeds at each depth, exp of the mean of ln) at the first and
    the last recorded step; the depths where it pools layers of one run (``_derive.pool_shared``)
    are named."""
    f = d.prepare(frame, mode)
    steps = d.pick_steps(f[f["quantity"].isin(["out.ch_var", "block.out.ch_var"])], None)
    rows, kind = d.spp_table(f, steps)
    rows = rows[(rows["stat"] == "ch_var") & np.isfinite(rows["value"].to_numpy(dtype=float))]
    if rows.empty:
        raise ValueError("no ch_var rows to caption")
    first, last = min(steps), max(steps)
    parts = []
    for sc in _schemes(rows):
        sub = _by_scheme(rows, sc)
        pos = sub[sub["value"] > 0]
        m = np.exp(np.log(pos["value"].astype(float)).groupby([pos["step"], pos["x"]]).mean())
        a = float(m.loc[first].max()) if first in m.index.get_level_values(0) else math.nan
        b = float(m.loc[last].max()) if last in m.index.get_level_values(0) else math.nan
        parts.append(f"{sc} {num(a)} -> {num(b)}")
    what = "residual stream after a block" if kind == "block" else "conv/linear output"
    where = f" at {_lrs(f)}" if _lrs(f) else ""
    pooled = d.pooled_notes(rows, "x")
    tail = (" Geometric mean of the layers sharing a depth at " + "; ".join(pooled) + ".") if pooled else ""
    return (f"Largest channel variance over depth ({what}, geometric mean over seeds){where}, step {first} -> {last}: "
            + "; ".join(parts) + "." + tail)


def caption_decomposition(frame: pd.DataFrame, mode: str = "train", min_depth: int = 1) -> str:
    """Per scheme (and setting): the filter-sum (shift) and rest shares of E[(y-b)^2], pooled over
    conv layers at depth >= ``min_depth``, at the first and last recorded step (mean over seeds),
    and the growth of the pooled E[(y-b)^2] (the numbers of ``decomposition``'s panels)."""
    from .decomposition import decomposition_table
    table = decomposition_table(frame, mode, min_depth)
    runs, hue, style = d.hue_style(d.prepare(frame, mode))
    runs = runs.drop_duplicates("run").set_index("run")
    label = runs[hue].astype(str) if hue else (runs["scheme"].astype(str) if "scheme" in runs.columns
                                               else pd.Series("all layers", index=runs.index))
    if style:
        label = label + " (" + runs[style].astype(str) + ")"
    table = table.assign(group=table["run"].map(label))
    from ..vocabulary import SCHEMES
    rank = {s: i for i, s in enumerate(SCHEMES)}
    groups = sorted(set(table["group"]), key=lambda g: (rank.get(g.split(" (")[0], len(rank)), g))
    parts = []
    for group in groups:
        sub = table[table["group"] == group]
        first, last = sub["step"].min(), sub["step"].max()
        share = sub.groupby(["part", "step"])["share"].mean()
        growth = sub.groupby("step")["measured"].mean()
        parts.append(f"{group}: shift {num(share[('dec.shift', first)])} -> {num(share[('dec.shift', last)])}, "
                     f"rest {num(share[('dec.rest', first)])} -> {num(share[('dec.rest', last)])}, "
                     f"E[(y-b)^2] x{num(growth.loc[last] / growth.loc[first])}")
    where = f" at {_lrs(table)}" if _lrs(table) else ""
    return (f"Shares of E[(y-b)^2] (conv layers at depth >= {min_depth}, pooled){where}, first -> last step: "
            + "; ".join(parts) + ".")


def caption_attribution(runs: pd.DataFrame, value: str = "train_accuracy", col: str = "control",
                        row: str = "lr") -> str:
    """Per ``row`` value (largest first): ``value`` of each ``col`` level, mean [min, max] over runs
    (what ``result_map`` prints in its cells), best and worst first."""
    out = []
    for r in sorted(runs[row].unique(), reverse=True):
        at = runs[runs[row] == r]
        cells = []
        for c in dict.fromkeys(at[col].astype(str)):
            v = at.loc[at[col].astype(str) == c, value].to_numpy(dtype=float)
            cells.append((float(np.nanmean(v)) if np.isfinite(v).any() else math.nan, c, v))
        cells.sort(key=lambda t: -t[0] if not math.isnan(t[0]) else math.inf)
        text = ", ".join(f"{c} {num(m)}" + (f" [{num(np.nanmin(v))}, {num(np.nanmax(v))}]" if v.size > 1 else "")
                         for m, c, v in cells)
        out.append(f"{row} {r:g}: {text}" if isinstance(r, (int, float, np.floating)) else f"{row} {r}: {text}")
    return f"{value} by {col}, mean [min, max] over seeds, highest first. " + ". ".join(out) + "."


def caption_theory(compared: pd.DataFrame, band: float = 0.2) -> str:
    """How many (predicted, measured) pairs lie within +-``band`` relative error, per scheme (and
    per ``quantity`` when the table has that column), counting only finite positive pairs, as
    ``theory_vs_measured`` does."""
    p = compared["predicted"].to_numpy(dtype=float)
    m = compared["measured"].to_numpy(dtype=float)
    ok = np.isfinite(p) & np.isfinite(m) & (p > 0) & (m > 0)
    data = compared[ok].assign(_in=np.abs(m[ok] / p[ok] - 1) <= band)
    keys = [k for k in ("quantity", "scheme") if k in data.columns]
    parts = []
    if keys:
        for key, g in data.groupby(keys, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            parts.append(f"{' '.join(map(str, key))} {int(g['_in'].sum())} of {len(g)}")
    total = f"{int(data['_in'].sum())} of {len(data)} points within ±{band:.0%}"
    return total + (": " + ", ".join(parts) if parts else "") + "."


def caption_coord_check(slopes: pd.DataFrame, steps=None, rows=None, band: float | None = None) -> str:
    """What the coordinate-check figure shows (``varprobe.plot.coord_check``), from the same slopes
    table: per row quantity and step of the figure, how many layers are width-stable, grow, shrink
    or are inconclusive, and every layer that grows or shrinks with its slope and interval, e.g.
    "out.sq_mean at step 0: 5 of 6 layers width-stable; grows: head +1.01 [0.95, 1.07]." ``steps``
    and ``rows`` default to the figure's (``choose_steps``, ``ROWS``); ``band`` to
    ``varprobe.analysis.slopes.WIDTH_BAND``."""
    from ..analysis.slopes import WIDTH_BAND
    from .coord_check import ROWS, choose_steps

    band = WIDTH_BAND if band is None else band
    present = set(slopes["quantity"].astype(str))
    if rows is None:
        rows = [next(q for q in group if q in present) for group in ROWS if any(q in present for q in group)]
    rows = [q for q in rows if q in present]
    if not rows:
        raise ValueError("no slopes of the figure's quantities to caption; present: " + ", ".join(sorted(present)))
    at = slopes[slopes["quantity"].isin(rows)]
    steps = choose_steps(at["step"]) if steps is None else list(steps)
    parts = []
    for q in rows:
        for step in steps:
            g = at[(at["quantity"] == q) & (at["step"] == step)]
            if g.empty:
                continue
            counts = g["verdict"].value_counts()
            text = f"{q} at step {step}: {counts.get('width-stable', 0)} of {len(g)} layers width-stable"
            for verdict in ("grows", "shrinks", "inconclusive"):
                if verdict in counts:
                    rows_v = g[g["verdict"] == verdict]
                    listed = ", ".join(f"{r.layer} {r.slope:+.2f} [{num(r.ci_low)}, {num(r.ci_high)}]"
                                       for r in rows_v.head(4).itertuples())
                    more = f" and {len(rows_v) - 4} more" if len(rows_v) > 4 else ""
                    text += f"; {verdict}: {listed}{more}"
            parts.append(text + ".")
    seeds = int(at["n"].max()) if len(at) else 0
    return (f"Slope of log statistic on log width per layer, mean over up to {seeds} seeds with its 95% t interval; "
            f"width-stable: the interval within ±{band:g}. " + " ".join(parts))


def caption_per_run(runs: pd.DataFrame, value: str, x: str, hue: str = "scheme") -> str:
    """What ``varprobe.plot.results.per_run`` draws, in numbers: per ``hue`` level, the mean over
    seeds [min, max] of ``value`` at each ``x`` (a numeric x: from the largest to the smallest, with
    the change between them); levels whose every value is below :data:`ROUNDING` are named as zero
    up to float32 rounding."""
    data = runs.assign(_v=runs[value].astype(float), _h=runs[hue].astype(str))
    from .style import order_levels
    numeric = x != hue and pd.api.types.is_numeric_dtype(data[x]) and data[x].nunique() > 1
    parts = []
    for lvl in order_levels(data["_h"]):
        mine = data[data["_h"] == lvl]
        v = mine["_v"].to_numpy(dtype=float)
        if not np.isfinite(v).any():
            parts.append(f"{lvl}: no finite value")
            continue
        if numeric:
            cells = mine.groupby(x)["_v"].agg(["mean", "min", "max"]).sort_index(ascending=False)
            at = ", ".join(f"{x} {k:g} {num(r['mean'])} [{num(r['min'])}, {num(r['max'])}]" for k, r in cells.iterrows())
            change = cells["mean"].iloc[-1] - cells["mean"].iloc[0]
            parts.append(f"{lvl}: {at} (change {'+' if change >= 0 else ''}{num(change)})")
        else:
            text = f"{lvl} {num(np.nanmean(v))} [{num(np.nanmin(v))}, {num(np.nanmax(v))}]"
            if np.nanmax(np.abs(v)) < ROUNDING:
                text += ", zero up to float32 rounding"
            parts.append(text)
    how = "largest first, " if numeric else ""
    return f"{value} by {x if numeric else hue}, mean [min, max] over seeds ({how}n={len(data)} runs): " + \
        "; ".join(parts) + "."


def caption_predictors(table: pd.DataFrame, names: dict[str, str],
                       outcomes: tuple[str, ...] = ("collapse", "growth")) -> str:
    """Per outcome, each predictor's statistic over the runs of ``table`` pooled (as the E rows pool
    them, ``varprobe.claims.summary``): the AUC for ``collapse`` (Newcombe interval), Spearman's r_s
    for ``growth`` (Fisher-z interval), with how many runs did not train or blew up."""
    if "lr" in table.columns and table["lr"].nunique() > 1:
        return " ".join(caption_predictors(table[table["lr"] == lr], names, outcomes)
                        for lr in sorted(table["lr"].unique(), reverse=True))
    from ..analysis import auc_ci, spearman_ci
    out = []
    for outcome in outcomes:
        y = table[outcome].to_numpy(dtype=float)
        stats = []
        for col in names:
            x = table[col].to_numpy(dtype=float)
            ci = auc_ci(x, y.astype(bool)) if outcome == "collapse" else spearman_ci(x, y)
            stats.append(f"{col} {num(ci.estimate)} [{num(ci.low)}, {num(ci.high)}] (n={ci.n})")
        if outcome == "collapse":
            head = f"collapse ({int(np.nansum(y))} of {len(y)} runs did not train), AUC"
        else:
            head = f"variance growth ({int(np.isinf(y).sum())} of {len(y)} runs blew up), Spearman r_s"
        out.append(f"{head}: " + ", ".join(stats))
    lrs = f" at {_lrs(table)}" if _lrs(table) else ""
    return f"Runs pooled over seeds{lrs}. " + "; ".join(out) + "."
