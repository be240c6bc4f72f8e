"""Predicted against measured values (theory checks): one panel per quantity, colour by depth."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..analysis.compare import BAND, CHANNEL, FLOOR, POOLED, below_floor, compare_summary
from .footer import footer
from .style import DEPTH_LABEL, legend_right, new_figure, order_levels

__all__ = ["theory_vs_measured", "share_lines", "QUANTITY_LABELS"]

#: Panel titles of the quantities ``varprobe.analysis.compare`` predicts.
QUANTITY_LABELS = {"out.ch_var": "channel variance (out.ch_var)",
                   "out.ch_sq_mean": "squared channel mean (out.ch_sq_mean)"}
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p"]
_CMAP = "viridis"
#: Where each prediction of ``varprobe.analysis.compare`` comes from, for the subtitle.
_SOURCE = {CHANNEL: "probe's dec.pred_*, theory.channel_moments", POOLED: "in.mean, in.var, theory.split_from_norms"}


def share_lines(summary: pd.DataFrame, quantity: str, hue: str | None, levels: list, band: float) -> list[str]:
    """The table a panel prints, from :func:`compare_summary`'s rows of ``quantity``: a header,
    then per level of ``hue`` (or once) "LEVEL  WITHIN/N (SHARE)  MEDIAN|err|  BELOW-FLOOR"."""
    rows = summary[summary["quantity"] == quantity]
    width = max([len(str(lvl)) for lvl in levels] + [len(hue or ""), 3]) + 1
    lines = [f"{(hue or 'all'):<{width}}{'within ±' + format(band, '.0%'):>14}{'median |err|':>14}"
             f"{'< floor':>9}"]
    for lvl in (levels if hue else [None]):
        r = rows[rows[hue].astype(str) == lvl] if hue else rows
        if r.empty:
            continue
        r = r.iloc[0]
        err = "n/a" if np.isnan(r["median_abs_error"]) else f"{r['median_abs_error']:.1%}"
        within = f"{int(r['within'])}/{int(r['n'])} ({r['share']:.0%})"
        lines.append(f"{str(lvl if hue else 'all'):<{width}}{within:>14}{err:>14}{int(r['below_floor']):>9}")
    return lines


def theory_vs_measured(frame: pd.DataFrame, band: float = BAND, *, quantity: str | None = None,
                       hue: str | None = None, title: str | None = None, floor: float = FLOOR) -> Figure:
    """Predicted against measured values on log-log axes, one panel per quantity, with the y = x
    line and a shaded band of +-``band`` relative error (measured within [(1 - band), (1 + band)]
    x predicted).

    ``frame``: a :func:`varprobe.analysis.compare` table, or any table with columns ``predicted``
    and ``measured``; optionally ``quantity`` (one panel each; else one panel named by the
    ``quantity`` argument), ``depth`` (the colour: layers told apart from shallow to deep),
    ``scheme`` (the marker; or name another column with ``hue``) and ``prediction`` (which
    prediction is shown, in the subtitle). A prediction below ``floor`` x its measurement (zero up
    to float rounding: the squared-mean prediction of zero-sum kernels) is not a point: it is
    drawn as a triangle at the panel's left edge, left of the dashed floor line, at its measured
    value. Under each panel, per scheme, the points within the band and the median |error|:
    exactly :func:`varprobe.analysis.compare_summary` of the frame.

    What a reader should see: points hugging the diagonal inside the band where the theory holds
    (e.g. at initialization); a scheme or depth whose points leave the band in one direction is
    where the theory's assumptions break (inputs correlated across positions, or the shift term
    once training has offset the gradients).
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a DataFrame with columns predicted, measured; got {type(frame).__name__}")
    missing = [c for c in ("predicted", "measured") if c not in frame.columns]
    if missing:
        raise ValueError(f"theory_vs_measured needs columns 'predicted' and 'measured'; missing "
                         f"{', '.join(missing)}; columns: {', '.join(map(str, frame.columns))}")
    if not (0 < band < 1):
        raise ValueError(f"band must be in (0, 1), got {band!r}")
    hue = hue if hue is not None else ("scheme" if "scheme" in frame.columns else None)
    if hue is not None and hue not in frame.columns:
        raise ValueError(f"hue column {hue!r} not in the frame; columns: {', '.join(map(str, frame.columns))}")
    data = frame.copy()
    if "quantity" not in data.columns:
        data["quantity"] = quantity or ""
    p, m = data["predicted"].to_numpy(dtype=float), data["measured"].to_numpy(dtype=float)
    ok = np.isfinite(p) & np.isfinite(m) & (m > 0) & (p >= 0)
    data = data[ok].copy()
    if data.empty:
        raise ValueError("no rows with a finite predicted value >= 0 and a finite measured value > 0")
    data["_floor"] = below_floor(data["predicted"], data["measured"], floor)
    points = data[~data["_floor"] & (data["predicted"] > 0)]
    summary = compare_summary(data.drop(columns="_floor"), band, floor, by=hue)
    quantities = [q for q in QUANTITY_LABELS if q in set(data["quantity"])]
    quantities += sorted(set(data["quantity"].astype(str)) - set(quantities))
    levels = order_levels(data[hue]) if hue else []
    markers = {lvl: _MARKERS[i % len(_MARKERS)] for i, lvl in enumerate(levels)}
    n_lines = max(len(levels), 1)
    fig, axes = new_figure(2, len(quantities), panel=(4.4, 4.2), extra=(3.6, 0.0))
    axes[0, 0].get_gridspec().set_height_ratios([4.2, 0.22 * n_lines + 0.15])
    fig.set_figheight(4.2 + 0.22 * n_lines + 0.15 + 0.8)
    has_depth = "depth" in data.columns and data["depth"].notna().any()
    norm = Normalize(float(data["depth"].min()), max(float(data["depth"].max()), float(data["depth"].min()) + 1)) \
        if has_depth else None
    cmap = fig.colorbar(ScalarMappable(norm=norm, cmap=_CMAP), ax=list(axes[0]), location="right", shrink=0.8,
                        pad=0.02, label=DEPTH_LABEL).cmap if has_depth else None
    for j, q in enumerate(quantities):
        ax, text_ax = axes[0, j], axes[1, j]
        d = data[data["quantity"].astype(str) == q]
        pts = points[points["quantity"].astype(str) == q]
        low = d[d["_floor"]]
        vals = np.concatenate([pts["predicted"].to_numpy(float), d["measured"].to_numpy(float)])
        lo, hi = float(vals.min()) / 1.5, float(vals.max()) * 1.5
        left = lo / 6.0 if len(low) else lo  # room for the below-floor strip
        xs = np.geomspace(lo, hi, 200)
        ax.fill_between(xs, xs * (1 - band), xs * (1 + band), color="#999999", alpha=0.25, linewidth=0, zorder=0)
        ax.plot(xs, xs, color="#333333", linewidth=1, zorder=1)
        for lvl in (levels if hue else [None]):
            g = pts[pts[hue].astype(str) == lvl] if hue else pts
            gl = low[low[hue].astype(str) == lvl] if hue else low
            color = cmap(norm(g["depth"].to_numpy(float))) if has_depth else "#1f77b4"
            ax.scatter(g["predicted"], g["measured"], s=26, c=color, marker=markers.get(lvl, "o"), alpha=0.85,
                       edgecolor="#222222", linewidth=0.3, zorder=2)
            if len(gl):
                lc = cmap(norm(gl["depth"].to_numpy(float))) if has_depth else "#1f77b4"
                ax.scatter(np.full(len(gl), left * 1.5), gl["measured"], s=30, c=lc, marker="<",
                           edgecolor="#222222", linewidth=0.3, zorder=2, clip_on=False)
        if len(low):
            ax.axvspan(left, lo / 1.2, color="#eeeeee", zorder=0)
            ax.axvline(lo / 1.2, color="#555555", linestyle="--", linewidth=0.8, zorder=1)
            ax.text(lo / 1.45, np.sqrt(lo * hi), f"below floor: predicted < {floor:.0e} × measured", fontsize=7,
                    rotation=90, va="center", ha="right", color="#333333")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(left, hi)
        ax.set_ylim(lo, hi)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("predicted (theory)")
        ax.set_ylabel("measured (probe)")
        ax.set_title(QUANTITY_LABELS.get(q, q), fontsize=10)
        text_ax.axis("off")
        text_ax.text(0.0, 1.0, "\n".join(share_lines(summary, q, hue, levels, band)), transform=text_ax.transAxes,
                     va="top", ha="left", fontsize=7.5, family="monospace")
    handles, labels = [], []
    for lvl in levels:
        handles.append(Line2D([], [], marker=markers[lvl], linestyle="none", color="#777777",
                              markeredgecolor="#222222", markeredgewidth=0.3))
        labels.append(lvl)
    handles += [Line2D([], [], color="#333333", linewidth=1), Patch(color="#999999", alpha=0.35)]
    labels += ["y = x", f"±{band:.0%} error band"]
    if data["_floor"].any():
        handles.append(Line2D([], [], marker="<", linestyle="none", color="#777777"))
        labels.append(f"prediction < {floor:.0e} × measured\n(zero up to float rounding)")
    leg = legend_right(fig, handles, labels)
    if hue and leg is not None:
        leg.set_title(hue, prop={"weight": "bold"})
    used = sorted(set(data["prediction"].astype(str))) if "prediction" in data.columns else []
    sub = "; ".join(f"{u} ({_SOURCE.get(u, 'given')})" for u in used)
    fig.suptitle((title or "Theory vs measurement") + (f"\nprediction: {sub}" if sub else ""), fontsize=11)
    footer(fig, frame, f"{int((~ok).sum())} rows with a non-finite value, a measured value <= 0 or a negative "
                       "prediction left out (log-log)." if (~ok).any() else "")
    return fig
