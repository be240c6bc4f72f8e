"""Depth x step heat maps of one quantity."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from ..analysis.rows import is_weight_layer
from . import _derive as d
from .footer import footer
from .style import STEP_LABEL, new_figure, order_levels, qlabel, short, use_log

__all__ = ["heatmap"]


def heatmap(frame: pd.DataFrame, quantity: str, run: str | None = None, mode: str = "train",
            *, log: bool | None = None, max_cols: int = 4) -> Figure:
    """Depth x step heat map of ``quantity``: where in the network and when during training it grows.

    One run (``run=`` a run name, or a frame holding a single run): every layer that has the
    quantity, in forward order, one row each (norm layers follow their conv). Several runs: one
    panel per scheme (and per other setting, e.g. learning rate: rows of panels), the mean over
    seeds in each cell; there only layers of a weight role are shown (conv, linear, ...:
    ``varprobe.analysis.rows.WEIGHT_ROLES``, when the quantity has them), one row per depth, so
    panels line up; where layers of one run share a depth (parallel branches), one row per layer
    of that depth, never their mean. x: training step (cells span the recorded steps). Colour: a
    log scale shared by all panels for positive quantities (``log=None`` decides: positive and
    spanning more than 30x), otherwise linear (diverging around 0 for signed quantities). Grey:
    not recorded or not finite.

    What a reader should see, e.g. for ``out.var``: without normalization rows brighten along
    the step axis, unevenly over depth (variance amplified during training), with a bright
    burst just before a collapse; normalized panels stay more uniform; a collapsed run ends
    early (grey to the right).
    """
    f, q = d.quantity_rows(frame, quantity, mode)
    if (q["layer"] == "").all():
        raise ValueError(f"quantity {quantity!r} is step-level (one value per step, no layers): "
                         "use curves(frame, quantity) instead")
    q = q[q["layer"] != ""]
    if run is not None:
        runs = list(dict.fromkeys(q["run"].astype(str)))
        if run not in runs:
            raise ValueError(f"run {run!r} not in the frame; runs: {', '.join(runs)}")
        q = q[q["run"] == run]
    single = q["run"].nunique() == 1
    if single:
        panels = [(q["run"].iloc[0] if run is not None or "scheme" not in q.columns
                   else str(q["scheme"].iloc[0]), q)]
        grid_rows, grid_cols = 1, 1
        ykey = "layer"
    else:
        weight = is_weight_layer(q)
        if weight.any():
            q = q[weight & (q["depth"] >= 0)]
        q, hue, style = d.hue_style(q)
        shared = q.groupby(["run", "depth"])["layer"].nunique()
        shared = set(shared[shared > 1].index.get_level_values("depth"))
        # a row per depth, or per (depth, layer) at a depth that some run has several layers at
        q = q.assign(_row=[(dp, la if dp in shared else "") for dp, la in zip(q["depth"], q["layer"])])
        hue_levels = order_levels(q[hue]) if hue else ["all runs"]
        style_levels = order_levels(q[style]) if style else [None]
        panels = []
        for s in style_levels:
            for h in hue_levels:
                sel = q
                if hue:
                    sel = sel[sel[hue].astype(str) == h]
                if s is not None:
                    sel = sel[sel[style].astype(str) == s]
                title = h if s is None else f"{h}, {s}"
                panels.append((title, sel))
        if style:
            grid_rows, grid_cols = len(style_levels), len(hue_levels)
        else:
            grid_cols = min(len(panels), max_cols)
            grid_rows = -(-len(panels) // grid_cols)
        ykey = "_row"

    # Matrices (rows: layers/depths in forward order, columns: steps), seeds averaged.
    mats = []
    end = q["step"].max()
    for title, sel in panels:
        n_seeds = sel["run"].nunique()
        vals = sel.assign(value=sel["value"].where(np.isfinite(sel["value"].to_numpy(dtype=float))))
        m = vals.groupby([ykey, "step"])["value"].mean().unstack("step")
        if ykey == "layer":
            m = m.reindex([l for l in d.layer_order(sel) if l in m.index])
            labels = [f"{l}" for l in m.index]
        else:
            m = m.sort_index()
            names = sel.drop_duplicates("depth").set_index("depth")["layer"]
            labels = [f"{int(dp)}  {la or names.get(dp, '')}" for dp, la in m.index]
        last = sel.groupby("run")["step"].max()
        stopped = int((last < end).sum())
        info = [f"mean of {n_seeds} seeds" if n_seeds > 1 else ""]
        if stopped and not single:
            info.append(f"{stopped} stopped by step {int(last[last < end].max())}")
        info = "; ".join(i for i in info if i)
        mats.append((title + (f"\n({info})" if info else ""), n_seeds, m, labels))
    allv = np.concatenate([m.to_numpy(dtype=float).ravel() for _, _, m, _ in mats])
    fin = allv[np.isfinite(allv)]
    if fin.size == 0:
        raise ValueError(f"quantity {quantity!r} has no finite values to show")
    positive = bool((fin > 0).all())
    if log is None:
        log = positive and use_log(fin)
    if log and not positive:
        raise ValueError(f"log=True needs positive values; {quantity!r} has values <= 0")
    if log:
        norm = mcolors.LogNorm(vmin=fin.min(), vmax=fin.max())
        cmap = "viridis"
    elif fin.min() < 0 < fin.max():
        lim = float(np.abs(fin).max())
        norm, cmap = mcolors.Normalize(-lim, lim), "RdBu_r"
    else:
        norm, cmap = mcolors.Normalize(fin.min(), fin.max()), "viridis"
    cmap_obj = matplotlib.colormaps[cmap].with_extremes(bad="#d9d9d9")
    n_layers = max(len(m) for _, _, m, _ in mats)
    panel_h = max(2.6, (0.16 if n_layers > 30 else 0.18) * n_layers + 1.0)
    label_w = max(len(l) for *_, labels in mats for l in labels)
    panel_w = 3.4 + (0.055 * label_w if single else 0.0)
    fig, axes = new_figure(grid_rows, grid_cols, panel=(panel_w, panel_h), extra=(0.4, 0), sharex=True,
                           sharey=not single)
    mesh = None
    for k, (title, n_seeds, m, labels) in enumerate(mats):
        ax = axes.flat[k]
        if m.empty:
            ax.set_axis_off()
            ax.set_title(f"{title}\n(no rows)", fontsize=9)
            continue
        steps = m.columns.to_numpy(dtype=float)
        edges = _edges(steps)
        data = np.ma.masked_invalid(m.to_numpy(dtype=float))
        ax.set_facecolor("#d9d9d9")  # outside the recorded steps: grey, like missing cells
        mesh = ax.pcolormesh(edges, np.arange(len(m) + 1) - 0.5, data, norm=norm, cmap=cmap_obj,
                             shading="flat", rasterized=True)
        ax.set_ylim(len(m) - 0.5, -0.5)  # first layer on top
        if single or k % grid_cols == 0:
            every = max(1, int(np.ceil(len(labels) / 80)))  # rows are >= 0.16 in tall: label all
            ax.set_yticks(range(0, len(labels), every), labels[::every],
                          fontsize=6.5 if len(labels) > 30 else 7 if len(labels) > 12 else 8)
            ax.set_ylabel("layer (forward order)" if single else "depth  (layer name)")
        ax.tick_params(axis="y", length=0)
        if not (single and title == "run"):  # a probe's own frame: the suptitle and footer say it all
            ax.set_title(title, fontsize=9.5)
        if k // grid_cols == grid_rows - 1 or single:
            ax.set_xlabel(STEP_LABEL)
    for k in range(len(mats), grid_rows * grid_cols):
        axes.flat[k].set_axis_off()
    if mesh is not None:
        shrink = 0.9 if grid_rows > 1 else 1.0
        cb = fig.colorbar(mesh, ax=axes, location="right", pad=0.01, aspect=30, shrink=shrink)
        # wrapped to the bar's length (about 12 characters an inch), so that it never runs into the title
        length = (panel_h * grid_rows - 0.9) * shrink  # less the panels' titles and axis labels
        meaning = " ".join(t for t in (short(quantity), "(log scale)" if log else "") if t)
        cb.set_label(qlabel(quantity, width=max(16, min(36, int(12 * length))), meaning=meaning))
    fig.suptitle(f"{quantity} over depth and training ({mode} mode)")
    spans = {(float(m.columns.min()), float(m.columns.max())) for _, _, m, _ in mats if not m.empty}
    grey = np.isnan(allv).any() or len(spans) > 1
    footer(fig, q, "Grey: not recorded (e.g. after a collapse) or not finite." if grey else "", mode=mode)
    return fig


def _edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around each step: midpoints between recorded steps."""
    if steps.size == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    mid = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[steps[0] - (mid[0] - steps[0])], mid, [steps[-1] + (steps[-1] - mid[-1])]])
