"""The coordinate check of a width sweep: each layer's statistic against the width, at a few steps."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from ..analysis.slopes import WIDTH_BAND, WIDTH_VERDICTS
from .style import bold_headers, legend_right, new_figure, note, qlabel, short, tidy_log

__all__ = ["coord_check", "choose_steps", "ROWS", "VERDICT_STYLES"]

#: The figure's rows, the first one of each that the table has: forward (a layer's output, or a
#: residual block's), backward (the gradient reaching the output), update (the relative update).
ROWS: tuple[tuple[str, ...], ...] = (("out.sq_mean", "block.out.sq_mean"), ("grad_out.sq_mean",),
                                     ("w.update_ratio",))
#: Line style of each verdict of ``varprobe.analysis.slopes.width_verdict``.
VERDICT_STYLES: dict[str, str] = {"width-stable": "-", "grows": "--", "shrinks": "-.", "inconclusive": ":"}
_MAX_LABELS = 12  # slopes printed at the lines' ends up to this many layers per panel


def choose_steps(steps: Sequence[int], n: int = 3) -> list[int]:
    """The first, middle and last of the recorded ``steps`` (``n`` spread evenly, first and last
    included; fewer when fewer are recorded)."""
    s = sorted(set(int(v) for v in steps))
    if len(s) <= n:
        return s
    return sorted({s[round(i * (len(s) - 1) / (n - 1))] for i in range(n)})


def coord_check(coords: pd.DataFrame, slopes: pd.DataFrame, steps: Sequence[int] | None = None,
                rows: Sequence[str] | None = None, *, band: float = WIDTH_BAND,
                pooled: Sequence[str] = ()) -> Figure:
    """Each layer's statistic against the width (both log), one panel per step and row.

    ``coords`` and ``slopes`` are a sweep's coordinates and slopes tables
    (``varprobe.experiment.sweep``; ``varprobe.analysis.slopes.fit_slopes``). Columns: ``steps``
    (default :func:`choose_steps` of the steps the rows' quantities were recorded at). Rows:
    ``rows`` quantities (default the first available of each of :data:`ROWS`: forward, backward,
    update); a row's quantity not recorded at a step (``w.update_ratio`` at step 0) leaves its panel
    saying so.

    One line per layer, coloured by depth (dark = first), through the geometric mean over seeds at
    each width, with the band of the back-transformed Student-t interval of the logs
    (``varprobe.analysis.geometric_ci``) where there are two seeds or more. The line's style is the
    layer's verdict at that step and quantity (:data:`VERDICT_STYLES`), and its slope is printed at
    its right end (up to 12 layers a panel). ``pooled``: layers named in the legend as pooling
    several calls. Non-positive or non-finite values have no logarithm: they are left out and
    counted in the footnote. ValueError naming the quantities present when no row can be drawn.
    """
    import matplotlib

    from ..analysis.logscale import geometric_ci

    present = set(coords["quantity"].astype(str))
    if rows is None:
        rows = [next(q for q in group if q in present) for group in ROWS if any(q in present for q in group)]
    rows = [q for q in rows if q in present]
    if not rows:
        raise ValueError("coord_check: none of the row quantities is in the table; present: "
                         + ", ".join(sorted(present)))
    c = coords[coords["quantity"].isin(rows)]
    steps = choose_steps(c["step"]) if steps is None else [int(s) for s in steps]
    v = c["value"].to_numpy(dtype=np.float64)
    keep = np.isfinite(v) & (v > 0)
    dropped = int((~keep).sum())
    c = c[keep]
    depth = c.drop_duplicates(["layer", "role"]).sort_values(["depth", "layer"])
    layers = list(zip(depth["layer"], depth["role"]))
    cmap = matplotlib.colormaps["viridis"]
    color = {key: cmap(0.9 * i / max(1, len(layers) - 1)) for i, key in enumerate(layers)}
    table = slopes.set_index(["layer", "role", "quantity", "step"]).sort_index()
    fig, axes = new_figure(len(rows), len(steps), panel=(3.3, 2.7), extra=(2.4, 0), sharex=True)
    for i, quantity in enumerate(rows):
        for j, step in enumerate(steps):
            ax = axes[i, j]
            at = c[(c["quantity"] == quantity) & (c["step"] == step)]
            ax.set_xscale("log", base=2)
            if at.empty:
                ax.text(0.5, 0.5, f"no {quantity}\nat step {step}", transform=ax.transAxes, ha="center",
                        va="center", color="#777777", fontsize=9)
            for key in layers:
                g = at[(at["layer"] == key[0]) & (at["role"] == key[1])]
                if g.empty:
                    continue
                ws, mid, lo, hi = [], [], [], []
                for w, gw in g.groupby("width", sort=True):
                    ci = geometric_ci(gw["value"].to_numpy(dtype=np.float64))
                    ws.append(w)
                    mid.append(ci.estimate)
                    lo.append(ci.low if len(gw) > 1 else np.nan)
                    hi.append(ci.high if len(gw) > 1 else np.nan)
                row = table.loc[(*key, quantity, step)] if (*key, quantity, step) in table.index else None
                verdict = row["verdict"] if row is not None else "inconclusive"
                ax.plot(ws, mid, color=color[key], linestyle=VERDICT_STYLES.get(verdict, ":"), linewidth=1.4,
                        marker="o", markersize=3, markeredgewidth=0)
                lo_c, hi_c = np.clip(lo, min(mid) / 1e3, None), np.clip(hi, None, max(mid) * 1e3)
                ax.fill_between(ws, lo_c, hi_c, color=color[key], alpha=0.15, linewidth=0)
                if row is not None and len(layers) <= _MAX_LABELS:
                    ax.annotate(f"{row['slope']:+.2f}", (ws[-1], mid[-1]), xytext=(3, 0), textcoords="offset points",
                                fontsize=7, color=color[key], va="center")
            ax.set_yscale("log")
            tidy_log(ax)
            ax.grid(True, which="major", alpha=0.3)
            if i == 0:
                ax.set_title(f"step {step}", fontsize=10)
            if i == len(rows) - 1:
                ax.set_xlabel("width (log2)")
        meaning = short(quantity)
        axes[i, 0].set_ylabel(qlabel(quantity, width=30, meaning=(meaning + " (log)") if meaning else "(log)"),
                              fontsize=9)
    widths = sorted(set(c["width"].tolist()))
    for ax in axes.flat:
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.xaxis.set_minor_locator(NullLocator())
    _legend(fig, layers, color, depth, pooled, band)
    seeds = c["seed"].nunique() if "seed" in c.columns else 1
    fig.suptitle(f"coordinate check: statistics against width ({len(widths)} widths, {seeds} seed(s); "
                 "slope of log statistic on log width at each line's end)", fontsize=10.5)
    if dropped:
        note(fig, f"{dropped} non-positive or non-finite value(s) left out (no logarithm).")
    return fig


def _legend(fig, layers, color, depth: pd.DataFrame, pooled: Sequence[str], band: float) -> None:
    from matplotlib.lines import Line2D

    depth_of = dict(zip(zip(depth["layer"], depth["role"]), depth["depth"]))
    handles, labels, headers = [], [], []

    def header(text: str) -> None:
        headers.append(len(labels))
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(text)
    header("layer (colour: depth)")
    for key in layers:
        handles.append(Line2D([], [], color=color[key], linewidth=2))
        labels.append(f"{key[0]} ({key[1]}, depth {depth_of[key]})" + (", pooled calls" if key[0] in pooled else ""))
    header(f"verdict (band ±{band:g})")
    for verdict in WIDTH_VERDICTS:
        handles.append(Line2D([], [], color="#555555", linestyle=VERDICT_STYLES[verdict], linewidth=1.5))
        labels.append(verdict)
    leg = legend_right(fig, handles, labels)
    if leg is not None:
        bold_headers(leg, headers)
