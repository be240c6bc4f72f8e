"""Which (learning rate, scheme) combinations collapse."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from . import _derive as d
from .footer import footer
from .style import cell_grid, fmt_num, new_figure, order_levels

__all__ = ["collapse_map"]

_CMAP = mcolors.LinearSegmentedColormap.from_list("collapse", ["#c7e9c0", "#fdd49e", "#de2d26"])


def collapse_map(frame: pd.DataFrame) -> Figure:
    """Learning rate x scheme grid of outcomes: which settings collapse.

    Cell colour: the fraction of seeds whose run collapsed (green: all finished, red: all
    collapsed). Cell text: the final training loss (the last recorded loss of each run, mean over
    seeds; inf or nan when a run blew up) and "k/n collapsed". Other statuses (failed, running,
    interrupted) are counted in the text. White: not run. Other settings that vary besides
    scheme, lr and seed (e.g. batch size) get one panel each.

    ``frame``: runs from ``varprobe.load_runs`` (needs ``run``, ``status``, ``scheme``, ``lr``
    and ``loss`` rows), or a one-row-per-run summary with ``scheme``, ``lr``, ``status`` and
    optionally ``final_loss``.

    What a reader should see: green cells with a low loss at small learning rates for every
    scheme; at large learning rates unnormalized schemes turn orange/red (some or all seeds
    collapsed). If the paper's claim holds, BN and PWS stay green further up the learning-rate
    axis; a red BN or PWS cell is evidence against it in that setting.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a DataFrame of runs, got {type(frame).__name__}")
    if "quantity" in frame.columns:
        runs = d.final_state(d.prepare(frame, None))
    else:
        runs = frame.copy()
        if "run" not in runs.columns:
            runs["run"] = [f"run{i}" for i in range(len(runs))]
        if "final_loss" not in runs.columns:
            runs["final_loss"] = np.nan
    missing = [c for c in ("scheme", "lr", "status") if c not in runs.columns]
    if missing:
        raise ValueError(f"collapse_map needs the runs' {', '.join(missing)} (config columns from "
                         f"varprobe.load_runs); columns: {', '.join(map(str, frame.columns))}")
    runs = runs.assign(lr=runs["lr"].astype(float), scheme=runs["scheme"].astype(str))
    # Other settings that vary besides scheme and lr: one panel each.
    labels = d.setting_labels(runs, exclude=("scheme", "lr"))
    panels = [(None, runs)] if labels is None else [
        (lvl, runs[labels.astype(str) == lvl]) for lvl in order_levels(labels)]
    schemes = order_levels(runs["scheme"])
    lrs = sorted(runs["lr"].unique(), reverse=True)  # largest on top
    fig, axes = new_figure(1, len(panels), panel=(0.95 * len(schemes) + 1.6, 0.62 * len(lrs) + 1.2),
                           extra=(1.2, 0), sharey=True)
    mesh = None
    for k, (label, sub) in enumerate(panels):
        ax = axes[0, k]
        frac = np.full((len(lrs), len(schemes)), np.nan)
        for i, lr in enumerate(lrs):
            for j, sc in enumerate(schemes):
                cell = sub[(sub["lr"] == lr) & (sub["scheme"] == sc)]
                if cell.empty:
                    ax.text(j, i, "not run", ha="center", va="center", fontsize=7.5, color="#888888")
                    continue
                n = len(cell)
                st = cell["status"].astype(str)
                n_col = int((st == "collapsed").sum())
                frac[i, j] = n_col / n
                loss = cell["final_loss"].to_numpy(dtype=float)
                lines = [f"loss {fmt_num(float(np.mean(loss)) if loss.size else float('nan'))}",
                         f"{n_col}/{n} collapsed"]
                other = st[~st.isin(["finished", "collapsed"])]
                if len(other):
                    lines.append(", ".join(f"{c} {s}" for s, c in other.value_counts().items()))
                ax.text(j, i, "\n".join(lines), ha="center", va="center", fontsize=8,
                        color="white" if frac[i, j] > 0.75 else "#1a1a1a")
        mesh = ax.imshow(np.ma.masked_invalid(frac), cmap=_CMAP.with_extremes(bad="white"),
                         vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(schemes)), schemes)
        ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        cell_grid(ax, len(schemes), len(lrs))
        ax.set_xlabel("scheme")
        if k == 0:
            ax.set_ylabel("learning rate")
        if label is not None:
            ax.set_title(label, fontsize=10)
    cb = fig.colorbar(mesh, ax=axes, location="right", shrink=0.9)
    cb.set_label("fraction of seeds collapsed")
    fig.suptitle("Outcome by learning rate and scheme")
    footer(fig, runs, "Text: final training loss (last recorded, mean over seeds) and collapsed/seeds.")
    return fig
