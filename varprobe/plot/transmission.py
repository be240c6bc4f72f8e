"""Forward and backward variance transmission ratios per layer."""
from __future__ import annotations

from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure

from ..analysis.rows import is_weight_layer
from . import _derive as d
from .footer import footer
from .lines import Lines, log_step_grid
from .style import DEPTH_LABEL, finite, qlabel

__all__ = ["transmission"]

#: Two-line y labels (the expression never split across lines); the title says 1 = preserved.
_MEANING = {"fwd.var_ratio": "Var(out) / Var(in), log",
            "bwd.var_ratio": "Var(dL/d in) / Var(dL/d out), log"}


def transmission(frame: pd.DataFrame, steps: Sequence[int] | int | None = None,
                 mode: str = "train") -> Figure:
    """Variance transmission per layer: what each conv/linear layer does to the variance of the
    signal going forward and of the gradient going backward.

    Top row: forward ratio Var(out) / Var(in) (``out.var / in.var`` of the layer). Bottom row:
    backward ratio Var(dL/d in) / Var(dL/d out) (``grad_in.var / grad_out.var``; the first
    layer has none, its input needs no gradient; for a layer whose input also feeds a residual
    path the gradient reaching its input includes that path). x: depth (layers of a weight role,
    ``varprobe.analysis.rows.WEIGHT_ROLES``, in forward order; layers of one run at one depth are
    one point, the geometric mean of their ratios, and the legend names each such group), log y,
    dotted line at 1 (variance preserved). Columns: training steps
    (default first, a middle and the last recorded; ratios derived by
    ``varprobe.analysis.transmission_ratios``). Colour = scheme, dashes = other settings, mean over seeds
    with a 95% CI band.

    What a reader should see: at step 0 the forward ratios agree across schemes, about 2-3 for a
    He-initialized conv after a ReLU (He init preserves E[x^2], not the variance of the ReLU
    output); during training the unnormalized nets' ratios drift far above that, so their product
    (the variance at depth) grows; if the paper's claim holds, BN and PWS keep them close to
    their initial values. Backward ratios show the same for gradients flowing back.
    """
    f = d.prepare(frame, mode)
    r = d.ratios(f)
    r = r[is_weight_layer(r)]
    r = r[r["depth"] >= 0] if "depth" in r.columns else r
    if r.empty:
        raise ValueError("no transmission ratios: the frame needs out.var and in.var (forward) or "
                         "grad_in.var and grad_out.var (backward) of conv/linear layers")
    steps = d.pick_steps(r, steps)
    r = d.pool_shared(r[r["step"].isin(steps)], ["run", "step", "quantity", "depth"])
    dropped = finite(r, positive=True)[1]
    r, hue, style = d.hue_style(r)
    lines = Lines(r, hue, style)
    qs = list(d.RATIO_QUANTITIES)
    fig, _ = log_step_grid(lines, r, steps, "quantity", qs, "depth",
                           ylabels=[qlabel(qn, meaning=_MEANING[qn]) for qn in qs],
                           xlabel=DEPTH_LABEL, unity=True)
    lines.legend(fig, pooled=d.pooled_notes(r, "depth"))
    fig.suptitle(f"Variance transmission per layer ({mode} mode; 1 = preserved)")
    footer(fig, r, f"{dropped} non-finite or non-positive ratios left out (log scale)." if dropped else "",
           mode=mode)
    return fig
