"""One number per run (e.g. final train accuracy), as a grid of settings x learning rates."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .footer import footer
from .style import cell_grid, fmt_num, new_figure

__all__ = ["result_map"]


def result_map(runs: pd.DataFrame, col: str = "control", row: str = "lr", value: str = "train_accuracy", *,
               vmin: float | None = 0.0, vmax: float | None = 1.0, title: str | None = None) -> Figure:
    """Grid of ``row`` (largest value on top) x ``col`` (in order of first appearance) of a per-run
    ``value``: cell colour the mean over the runs in the cell (seeds), text the mean and the
    per-run minimum and maximum with the number of runs.

    ``runs``: one row per run, with columns ``row``, ``col`` and ``value`` (e.g. built from run
    metas: control, lr, seed, train_accuracy). ``vmin``/``vmax``: colour scale (None: the data's).

    What a reader should see for the attribution controls at a large learning rate: which single
    change turns a plain net that fails to train into one that trains (a bright cell next to a
    dark one in the same row).
    """
    if not isinstance(runs, pd.DataFrame):
        raise TypeError(f"expected a DataFrame with one row per run, got {type(runs).__name__}")
    missing = [c for c in (row, col, value) if c not in runs.columns]
    if missing:
        raise ValueError(f"result_map needs column(s) {', '.join(missing)}; "
                         f"columns: {', '.join(map(str, runs.columns))}")
    if runs.empty:
        raise ValueError("result_map got no runs")
    cols = list(dict.fromkeys(runs[col].astype(str)))
    rows = sorted(runs[row].unique(), reverse=True)
    grid = np.full((len(rows), len(cols)), np.nan)
    lo = vmin if vmin is not None else float(np.nanmin(runs[value].to_numpy(dtype=float)))
    hi = vmax if vmax is not None else float(np.nanmax(runs[value].to_numpy(dtype=float)))
    fig, axes = new_figure(1, 1, panel=(1.05 * len(cols) + 1.4, 0.75 * len(rows) + 1.3), extra=(1.0, 0))
    ax = axes[0, 0]
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            cell = runs.loc[(runs[row] == r) & (runs[col].astype(str) == c), value].to_numpy(dtype=float)
            if cell.size == 0:
                ax.text(j, i, "not run", ha="center", va="center", fontsize=7.5, color="#888888")
                continue
            grid[i, j] = np.nanmean(cell) if np.isfinite(cell).any() else np.nan
            ax.text(j, i, f"{fmt_num(grid[i, j])}\n[{fmt_num(np.nanmin(cell))}, {fmt_num(np.nanmax(cell))}]"
                          f"\nn={cell.size}", ha="center", va="center", fontsize=7.5,
                    color="white" if hi > lo and (grid[i, j] - lo) / (hi - lo) > 0.7 else "#1a1a1a")
    mesh = ax.imshow(np.ma.masked_invalid(grid), cmap="YlGn", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [fmt_num(float(r)) if isinstance(r, (int, float)) else str(r) for r in rows])
    cell_grid(ax, len(cols), len(rows))
    ax.set_xlabel(col)
    ax.set_ylabel(row)
    fig.colorbar(mesh, ax=ax, location="right", shrink=0.9).set_label(f"{value} (mean over runs)")
    fig.suptitle(title or f"{value} by {row} and {col}: mean [min, max] over runs")
    footer(fig, runs)
    return fig
