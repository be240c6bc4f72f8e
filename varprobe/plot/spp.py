"""Signal-propagation plots over depth, as small multiples over training steps."""
from __future__ import annotations

from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure

from . import _derive as d
from . import rounding
from .footer import footer
from .lines import Lines, log_step_grid
from .style import DEPTH_LABEL, finite, qlabel

__all__ = ["spp"]

#: Two-line y labels: the quantity, then what it is (log scale); the figure title says of what.
_MEANING = {"ch_var": "mean channel variance (log)", "ch_sq_mean": "mean squared channel mean (log)"}


def spp(frame: pd.DataFrame, steps: Sequence[int] | int | None = None, mode: str = "train",
        *, blocks: bool = True) -> Figure:
    """Signal-propagation plot: how the activation statistics grow or stay put with depth, and how
    that changes during training.

    Rows: ``out.ch_var`` (mean over channels of each channel's variance) and ``out.ch_sq_mean``
    (mean over channels of the squared channel mean, the SPP quantity of Brock et al.), log y.
    Columns: training steps (default: first, a middle and the last recorded step; an int n picks
    n evenly spread steps; a list is snapped to recorded steps). x: depth, i.e. the output of
    each layer of a weight role (conv, transposed conv, linear, attention, embedding:
    ``varprobe.analysis.rows.WEIGHT_ROLES``) in forward order; norm layers are left out, so nets
    with and without norm layers line up. Layers of one run at one depth (parallel branches) are
    one point, their geometric mean, and the legend names each such group ("depth 3: a, b"); a
    layer of another role at that depth (a LayerNorm, whatever its type is called) is never in it.
    For models with residual blocks (rows of role "block": ``ResidualBlock``, blocks found in
    the model, Taps; and ``blocks=True``) the residual stream after each block's add is plotted
    instead, x = block index in forward order. Colour: scheme (or run); runs that differ only by
    seed are averaged with a 95% CI band; other settings (e.g. learning rate) get dashes.

    What a reader should see: at step 0 all schemes roughly agree (flat or gently sloping over
    depth; the linear head's logits start small). As training goes on, without normalization
    (plain, and WN) the variance and especially the squared channel mean (the mean shift) grow
    and vary from layer to layer, most at a large learning rate; if the paper's claim holds, BN
    and PWS stay lower and flatter. A run missing from a later column stopped early (collapsed);
    the column title says how many. A squared channel mean below 100 float32 epsilons squared of
    its channel's variance (a train-mode BN output's) is zero up to rounding: it is drawn in a
    hatched band at the bottom of its panel (``varprobe.plot.rounding``), not decades below.

    Args:
        frame: a probe table (``Probe.frame()``) or several runs from ``varprobe.load_runs``.
        steps: steps to show (see above).
        mode: "train" (training forwards) or "eval" (eval-mode forwards, where recorded).
        blocks: prefer ``block.out.*`` rows when present.
    """
    f = d.prepare(frame, mode)
    steps = d.pick_steps(f[f["quantity"].isin(["out.ch_var", "block.out.ch_var"])], steps)
    rows, kind = d.spp_table(f, steps, prefer_blocks=blocks)
    if rows.empty:
        raise ValueError("no out.ch_var / out.ch_sq_mean rows of conv/linear layers (or block.out.* "
                         "rows of blocks) in the frame; record them with Probe(..., quantities='all' or "
                         "'forward')")
    rows, hue, style = d.hue_style(rows)
    prefix = "block.out." if kind == "block" else "out."
    flags, level = rounding.at_rounding(rows, prefix + "ch_sq_mean")
    rows = rounding.clip(rows, flags, level)
    dropped = finite(rows, positive=True)[1]
    lines = Lines(rows, hue, style)
    stats = ["ch_var", "ch_sq_mean"]
    n_runs = f["run"].nunique()

    def title(step, at):
        missing = n_runs - at["run"].nunique()
        return f"step {step}" + (f"\n({missing} of {n_runs} runs had stopped)" if missing else "")
    fig, axes = log_step_grid(lines, rows, steps, "stat", stats, "x",
                           ylabels=[qlabel(prefix + stat, meaning=_MEANING[stat], width=40) for stat in stats],
                           xlabel="residual block (forward order)" if kind == "block" else DEPTH_LABEL,
                           title=title)
    if flags.any():
        for ax in axes[1]:
            rounding.shade(ax, level)
    what = ("residual stream after each block's add" if kind == "block"
            else "output of each conv/linear layer")
    fig.suptitle(f"Signal propagation over depth ({what}, {mode} mode)")
    lines.legend(fig, pooled=d.pooled_notes(rows, "x"))
    notes = [f"{dropped} non-finite or non-positive values left out (log scale)." if dropped else "",
             rounding.note(prefix + "ch_sq_mean", int(flags.sum()))]
    footer(fig, rows, " ".join(n for n in notes if n), mode=mode)
    return fig
