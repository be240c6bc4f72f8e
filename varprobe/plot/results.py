"""One number per run against a setting, per scheme: every seed a dot, the mean over seeds a line."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import rounding
from .footer import footer
from .style import fmt_num, legend_right, new_figure, order_levels, scheme_colors, use_log

__all__ = ["per_run"]


def per_run(runs: pd.DataFrame, value: str, x: str, *, hue: str = "scheme", log: bool | None = None,
            thresholds: Mapping[str, float] | None = None, title: str | None = None,
            ylabel: str | None = None) -> Figure:
    """``value`` of each run (one row per run of ``runs``) against ``x``, coloured by ``hue``.

    A numeric ``x`` with several values (e.g. ``batch_size``): each run a dot, the mean over the
    runs of a (hue, x) cell (the seeds) a line across x, on a log2 x axis when x spans more than 4x.
    A categorical ``x`` (or ``x == hue``): one column per level, each run a dot (spread sideways so
    seeds do not hide each other), the mean a short bar. y is logarithmic when ``log`` is True, or
    None and the values are positive and span more than 30x. ``thresholds``: label -> y, drawn as
    dotted lines (a claim's threshold). Values that are ratios zero up to float32 rounding
    (:data:`varprobe.plot.rounding.ROUNDING`, when ``value`` is in ``rounding.SCALES``) are drawn
    in the hatched band. A hue level with no finite value says so in the panel.

    What a reader should see, e.g. for test accuracy against batch size: a scheme whose line
    falls as the batch shrinks depends on the batch (BN's batch statistics); a flat line does not.
    """
    if not isinstance(runs, pd.DataFrame):
        raise TypeError(f"expected a DataFrame with one row per run, got {type(runs).__name__}")
    missing = [c for c in (value, x, hue) if c not in runs.columns]
    if missing:
        raise ValueError(f"per_run needs column(s) {', '.join(missing)}; columns: {', '.join(map(str, runs.columns))}")
    if runs.empty:
        raise ValueError("per_run got no runs")
    v = runs[value].to_numpy(dtype=float)
    data = runs.assign(**{value: v, hue: runs[hue].astype(str)})
    flags, level = rounding.at_rounding(data.assign(quantity=value, value=v), value)
    data = rounding.clip(data, flags, level, column=value)
    finite = data[np.isfinite(data[value].to_numpy(dtype=float))]
    if log is None:
        log = use_log(finite[value])
    if log:
        finite = finite[finite[value] > 0]
    levels = order_levels(data[hue])
    colors = scheme_colors(levels)
    numeric = x != hue and pd.api.types.is_numeric_dtype(data[x]) and data[x].nunique() > 1
    xs = sorted(data[x].unique()) if numeric else order_levels(data[x])
    fig, axes = new_figure(1, 1, panel=(max(4.2, 0.9 * len(xs) + 2.2), 3.4), extra=(1.6, 0))
    ax = axes[0, 0]
    if log:
        ax.set_yscale("log")
    notes, handles, labels = [], [], []
    from matplotlib.lines import Line2D
    for k, lvl in enumerate(levels):
        mine = finite[finite[hue] == lvl]
        if mine.empty:
            n = int((data[hue] == lvl).sum())
            notes.append(f"{lvl}: nothing to draw: {'all ' + str(n) + ' values non-finite' if n else 'no runs'}"
                         + (" or <= 0 (log axis)" if log and n else ""))
        if numeric:
            pos = mine[x].to_numpy(dtype=float)
            mean = mine.groupby(x)[value].agg(lambda s: float(np.exp(np.log(s).mean())) if log else float(s.mean()))
            ax.plot(mean.index.to_numpy(dtype=float), mean.to_numpy(), color=colors[lvl], linewidth=1.6, zorder=2)
        else:
            where = {c: i for i, c in enumerate(xs)}
            spread = (k - (len(levels) - 1) / 2) * 0.12 if x != hue else 0.0
            pos = np.array([where[str(c)] for c in mine[x].astype(str)], dtype=float) + spread
            pos = pos + (np.arange(len(mine)) % 5 - 2) * 0.025
            for c, g in mine.groupby(mine[x].astype(str)):
                m = float(np.exp(np.log(g[value]).mean())) if log else float(g[value].mean())
                ax.plot([where[c] + spread - 0.14, where[c] + spread + 0.14], [m, m], color=colors[lvl],
                        linewidth=2.2, zorder=2)
        ax.scatter(pos, mine[value].to_numpy(dtype=float), s=16, color=colors[lvl], edgecolor="white",
                   linewidth=0.5, zorder=3)
        handles.append(Line2D([], [], color=colors[lvl], marker="o", linewidth=1.6 if numeric else 0))
        labels.append(lvl)
    if numeric:
        if max(xs) / max(min(xs), 1e-300) > 4 and min(xs) > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [fmt_num(float(t)) for t in xs])
        ax.minorticks_off() if not log else None
    else:
        ax.set_xticks(range(len(xs)), xs)
        ax.set_xlim(-0.6, len(xs) - 0.4)
    for name, y in (thresholds or {}).items():
        ax.axhline(y, color="#777777", linestyle=":", linewidth=1.2)
        ax.annotate(name, (0.01, y), xycoords=("axes fraction", "data"), xytext=(0, 2), textcoords="offset points",
                    ha="left", va="bottom", fontsize=7.5, color="#555555")
    if flags.any():
        rounding.shade(ax, level)
    if notes:
        ax.text(0.02, 0.02, "\n".join(notes), transform=ax.transAxes, ha="left", va="bottom", fontsize=7,
                color="#333333", bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5})
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or value + (" (log)" if log else ""))
    leg = legend_right(fig, handles + [Line2D([], [], color="#555555", linewidth=2.2 if not numeric else 1.6)],
                       labels + ["mean over seeds" + (" (geometric)" if log else "")], title=hue)
    if leg is not None:
        leg.get_title().set_fontweight("bold")
    fig.suptitle(title or f"{value} by {x}: each seed a dot, the mean a {'line' if numeric else 'bar'}", fontsize=10.5)
    footer(fig, runs, rounding.note(value, int(flags.sum())))
    return fig
