"""Predicted against measured values (theory checks)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .style import footer, legend_right, new_figure, order_levels, scheme_colors

__all__ = ["theory_vs_measured"]


def theory_vs_measured(frame: pd.DataFrame, band: float = 0.2, *, quantity: str | None = None,
                       hue: str | None = None, title: str | None = None) -> Figure:
    """Scatter of predicted against measured values on log-log axes, with the y = x line and a
    shaded band of +-``band`` relative error (measured within [(1 - band), (1 + band)] x predicted).

    ``frame``: columns ``predicted`` and ``measured`` (positive numbers), optionally ``scheme``
    (colour; or name another column with ``hue``), ``layer``, ``step``. ``quantity`` names what
    is compared, for the axis labels (e.g. "out.var"). The title reports how many points fall
    inside the band.

    What a reader should see: points hugging the diagonal inside the band where the theory holds
    (e.g. at initialization); a scheme whose points leave the band in one direction is where the
    theory's assumptions break (e.g. the shift term once training has offset the gradients).
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a DataFrame with columns predicted, measured; got {type(frame).__name__}")
    missing = [c for c in ("predicted", "measured") if c not in frame.columns]
    if missing:
        raise ValueError(f"theory_vs_measured needs columns 'predicted' and 'measured'; missing "
                         f"{', '.join(missing)}; columns: {', '.join(map(str, frame.columns))}")
    if not (0 < band < 1):
        raise ValueError(f"band must be in (0, 1), got {band!r}")
    p = frame["predicted"].to_numpy(dtype=float)
    m = frame["measured"].to_numpy(dtype=float)
    ok = np.isfinite(p) & np.isfinite(m) & (p > 0) & (m > 0)
    data = frame[ok]
    if data.empty:
        raise ValueError("no rows with finite, positive predicted and measured values")
    hue = hue if hue is not None else ("scheme" if "scheme" in frame.columns else None)
    if hue is not None and hue not in frame.columns:
        raise ValueError(f"hue column {hue!r} not in the frame; columns: {', '.join(map(str, frame.columns))}")
    fig, axes = new_figure(1, 1, panel=(4.4, 4.4), extra=(1.8, 0))  # axes about square
    ax = axes[0, 0]
    lo = float(min(data["predicted"].min(), data["measured"].min())) / 1.5
    hi = float(max(data["predicted"].max(), data["measured"].max())) * 1.5
    xs = np.geomspace(lo, hi, 200)
    ax.fill_between(xs, xs * (1 - band), xs * (1 + band), color="#999999", alpha=0.25, linewidth=0, zorder=0)
    ax.plot(xs, xs, color="#333333", linewidth=1, zorder=1)
    handles, labels = [], []
    if hue:
        levels = order_levels(data[hue])
        colors = scheme_colors(levels)
        for lvl in levels:
            g = data[data[hue].astype(str) == lvl]
            ax.scatter(g["predicted"], g["measured"], s=22, color=colors[lvl], alpha=0.8,
                       edgecolor="white", linewidth=0.4, zorder=2)
            handles.append(Line2D([], [], marker="o", linestyle="none", color=colors[lvl]))
            labels.append(lvl)
    else:
        ax.scatter(data["predicted"], data["measured"], s=22, color="#1f77b4", alpha=0.8,
                   edgecolor="white", linewidth=0.4, zorder=2)
    handles += [Line2D([], [], color="#333333", linewidth=1), Patch(color="#999999", alpha=0.35)]
    labels += ["y = x", f"±{band:.0%} error band"]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.grid(True, which="major", alpha=0.3)
    what = f" {quantity}" if quantity else ""
    ax.set_xlabel(f"predicted{what} (theory)")
    ax.set_ylabel(f"measured{what} (probe)")
    rel = data["measured"].to_numpy(dtype=float) / data["predicted"].to_numpy(dtype=float)
    inside = int(((rel >= 1 - band) & (rel <= 1 + band)).sum())
    ax.set_title(f"{inside} of {len(data)} points within ±{band:.0%}", fontsize=9.5)
    fig.suptitle(title or f"Theory vs measurement{(': ' + quantity) if quantity else ''}")
    leg = legend_right(fig, handles, labels)
    if hue and leg is not None:
        leg.set_title(hue, prop={"weight": "bold"})
    footer(fig, frame, f"{int((~ok).sum())} rows with non-finite or non-positive values left out (log-log)." if (~ok).any() else "")
    return fig
