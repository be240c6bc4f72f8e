"""Each predictor of the competing explanation against the outcome it should rank (rows E1*, E2*)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..vocabulary import TRAINED
from .footer import footer
from .style import legend_right, new_figure, order_levels, scheme_colors, use_log

__all__ = ["predictors", "OUTCOME_LABELS"]

#: outcome column -> y label
OUTCOME_LABELS = {
    "collapse": f"did not train\n(final train accuracy < {TRAINED:g})",
    "growth": "variance growth: ln(last / first)\nof out.sq_mean, mean over convs",
}


def predictors(table: pd.DataFrame, names: Mapping[str, str], outcomes: Sequence[str] = ("collapse", "growth"),
               *, hue: str = "label", title: str | None = None) -> Figure:
    """One panel per (outcome, predictor): each run of ``table`` (one row per run: a column per
    predictor of ``names``, its early value; a column per outcome; ``hue``) a dot at (predictor,
    outcome). ``names``: predictor column -> axis label (e.g. "shift": "gw.shift_ratio (early)").

    ``collapse`` (a bool: the run did not train) is drawn as two rows of dots, "trained" and "did
    not train", spread a little in height so runs do not hide each other: a predictor that ranks it
    puts the upper row to the right. ``growth`` (the log growth of ``out.sq_mean``; +inf where the
    run blew up) is a scatter; infinite growths are drawn at the top of the panel as triangles and
    counted in the footer. Several learning rates (an ``lr`` column) get a marker shape each. x is logarithmic where a predictor's values are positive and span more
    than 30x. Runs without a predictor value (NaN) are left out of that panel and counted.

    What a reader should see: if the shift explains collapse, the runs that did not train sit to
    the right in the shift panels and the growth rises with the shift; if the relative update size
    does, the same in its column instead.
    """
    missing = [c for c in (*names, *outcomes, hue) if c not in table.columns]
    if missing:
        raise ValueError(f"predictors needs column(s) {', '.join(missing)}; columns: {', '.join(map(str, table.columns))}")
    if table.empty:
        raise ValueError("predictors got no runs")
    levels = order_levels(table[hue].astype(str))
    colors = scheme_colors(levels)
    fig, axes = new_figure(len(outcomes), len(names), panel=(3.3, 2.7), extra=(2.0, 0), sharey="row")
    rng = np.random.default_rng(0)
    lrs = sorted(set(table["lr"].astype(float)), reverse=True) if "lr" in table.columns else [None]
    shapes = dict(zip(lrs, ("o", "s", "D", "v", "P", "X")))
    lr_of = table["lr"].astype(float).to_numpy() if "lr" in table.columns else np.full(len(table), None)
    left_out, blown = [], 0
    for i, outcome in enumerate(outcomes):
        for j, (col, label) in enumerate(names.items()):
            ax = axes[i, j]
            xv = table[col].to_numpy(dtype=float)
            ok = np.isfinite(xv)
            if i == 0 and (~ok).any():
                left_out.append(f"{col} {int((~ok).sum())}")
            logx = use_log(xv[ok])
            if logx:
                ax.set_xscale("log")
            y = table[outcome].to_numpy(dtype=float)
            if outcome == "collapse":
                y = y + rng.uniform(-0.08, 0.08, size=y.size)
                ax.set_yticks([0, 1], ["trained", "did not\ntrain"])
                ax.set_ylim(-0.4, 1.4)
            top = np.nanmax(np.where(np.isfinite(y), y, np.nan)) if np.isfinite(y).any() else 1.0
            if outcome != "collapse":
                blown = int(np.isinf(y).sum())
            for lvl in levels:
                for lr, marker in shapes.items():
                    mine = ok & (table[hue].astype(str).to_numpy() == lvl) & (lr_of == lr)
                    fin = mine & np.isfinite(y)
                    ax.scatter(xv[fin], y[fin], s=18, color=colors[lvl], marker=marker, edgecolor="white",
                               linewidth=0.5, zorder=3)
                    if (mine & np.isinf(y)).any():
                        ax.scatter(xv[mine & np.isinf(y)], np.full(int((mine & np.isinf(y)).sum()), top * 1.1 + 0.5),
                                   marker="^", s=26, color=colors[lvl], edgecolor="black", linewidth=0.5, zorder=3)
            ax.grid(True, alpha=0.3)
            if i == len(outcomes) - 1:
                ax.set_xlabel(label + (" (log)" if logx else ""), fontsize=9)
            if j == 0:
                ax.set_ylabel(OUTCOME_LABELS.get(outcome, outcome), fontsize=9)
            if not ok.any():
                ax.text(0.5, 0.5, f"nothing to draw: no run has a value of {col}", transform=ax.transAxes,
                        ha="center", va="center", fontsize=7.5, color="#333333")
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=colors[lvl], marker="o", linestyle="none") for lvl in levels]
    labels = list(levels)
    if len(lrs) > 1:
        handles += [Line2D([], [], color="#555555", marker=m, linestyle="none") for m in shapes.values()]
        labels += [f"lr {lr:g}" for lr in shapes]
    leg = legend_right(fig, handles, labels, title="run")
    if leg is not None:
        leg.get_title().set_fontweight("bold")
    fig.suptitle(title or "Each predictor's early value against the outcome it should rank (one dot per run)",
                 fontsize=10.5)
    notes = [f"Runs without a predictor value, left out of its panels: {', '.join(left_out)}." if left_out else "",
             f"Runs whose growth is infinite (they blew up): {blown}, drawn as triangles at the top." if blown else ""]
    footer(fig, table, " ".join(n for n in notes if n))
    return fig
