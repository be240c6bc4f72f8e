"""The shift of the average gradient over training, by scheme."""
from __future__ import annotations


import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..theory import NULL_SHIFT_RATIO
from . import _derive as d
from . import rounding
from .rounding import ROUNDING
from .footer import footer
from .lines import Lines
from .style import STEP_LABEL, finite, new_figure, tidy_log, use_log

__all__ = ["shift", "growth", "ROUNDING"]


def shift(frame: pd.DataFrame, mode: str = "train", *, log: bool | None = None) -> Figure:
    """The shift of the average gradient (Liu et al. 2021) over training, by scheme.

    Left: ``gw.shift_ratio``, the mean over filters of |g_i| (g_i the average of dL/dW over
    filter i) relative to rms(dL/dW)/sqrt(n); about 0.8 (dotted line) when the per-filter
    average gradient is just noise, >> 1 when every filter's gradient is offset. Values below
    :data:`ROUNDING` (100 float32 epsilons) are zero up to float rounding; that band is shaded
    (``varprobe.plot.rounding``, as in every figure) and values further down are drawn at its bottom.
    Each scheme also gets its own marker, staggered along the line, so lines that lie on top of
    each other stay visible. Right: growth of ``w.filter_sum_var`` (the variance over filters of
    each filter's weight sum, which the shifted gradient pumps up): each run's value divided by
    its value at the first recorded step, so seeds that start at different spreads line up and
    the band shows how much their growth differs (log y when it spans more than 10x). Each value
    is the mean over the run's conv layers; colour = scheme, dashes = other settings, mean over
    seeds with a 95% CI band.

    What a reader should see: in the plain and WN nets the shift ratio sits well above 0.8 and
    the filter sums' spread grows over training (faster and further at a larger learning
    rate); BN keeps it flat; PWS centres each filter's gradient, so its shift ratio sits in the
    rounding region, far below the line, and its raw filter sums stay put.
    """
    f = d.prepare(frame, mode)
    qs = ["gw.shift_ratio", "w.filter_sum_var"]
    m = d.conv_mean(f, qs)
    if m.empty:
        raise ValueError("no gw.shift_ratio / w.filter_sum_var rows of conv layers in the frame "
                         "(record with Probe(..., quantities='all') in training mode)")
    m = growth(m, "w.filter_sum_var")
    m, hue, style = d.hue_style(m)
    lines = Lines(m, hue, style)
    fig, axes = new_figure(1, 2, panel=(4.2, 3.3), extra=(1.8, 0), sharex=True)
    dropped = zero = 0
    for ax, qn in zip(axes[0], qs):
        rows = m[m["quantity"] == qn]
        lg = use_log(rows["value"], ratio=10) if log is None else log
        flags, level = rounding.at_rounding(rows, qn)
        rows = rounding.clip(rows, flags, level)
        zero += int(flags.sum())
        dropped += finite(rows, positive=lg)[1]
        lines.draw(ax, rows, "step", marker=False, log=lg)
        rows = finite(rows, positive=lg)[0]
        _markers(ax, rows, lines, lg)
        if lg:
            ax.set_yscale("log")
            tidy_log(ax)
        if qn == "gw.shift_ratio":
            ax.axhline(NULL_SHIFT_RATIO, color="#777777", linestyle=":", linewidth=1.2)
            ax.annotate("no shift (≈0.8)", (0.01, NULL_SHIFT_RATIO), xycoords=("axes fraction", "data"),
                        xytext=(0, -2), textcoords="offset points", ha="left", va="top",
                        fontsize=7.5, color="#555555")
            if lg and flags.any():
                rounding.shade(ax, level)
            ax.set_ylabel("gw.shift_ratio, mean over conv layers\n|avg. filter gradient| / (rms/√n)"
                          + (", log" if lg else ""), fontsize=9)
        else:
            ax.axhline(1.0, color="#777777", linestyle=":", linewidth=1.0)
            ax.set_ylabel("w.filter_sum_var ÷ its first value\n(spread of filter sums, growth"
                          + (", log)" if lg else ")"), fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(STEP_LABEL)
        ax.set_title({"gw.shift_ratio": "shift of the average gradient",
                      "w.filter_sum_var": "growth of the spread of filter sums"}[qn], fontsize=10)
    lines.legend(fig, markers={lvl: _MARKERS[i % len(_MARKERS)] for i, lvl in enumerate(lines.hue_order)})
    fig.suptitle(f"Shift of the average gradient over training ({mode} mode)")
    notes = [f"{dropped} non-finite or non-positive values left out." if dropped else "",
             rounding.note("gw.shift_ratio", zero)]
    footer(fig, m, " ".join(n for n in notes if n), mode=mode)
    return fig


def growth(m: pd.DataFrame, quantity: str) -> pd.DataFrame:
    """``m`` (rows run, step, quantity, value) with each run's ``quantity`` divided by that run's
    value at its first recorded step (growth factor, 1 at the start); other quantities unchanged."""
    sel = m["quantity"] == quantity
    q = m[sel].sort_values("step")
    first = q.groupby("run")["value"].first()
    out = m.copy()
    out.loc[sel, "value"] = m.loc[sel, "value"] / m.loc[sel, "run"].map(first)
    return out


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _markers(ax, rows: pd.DataFrame, lines: Lines, log: bool) -> None:
    """One marker shape per hue level on each of its lines (one per style level), at staggered
    steps, so coinciding lines (e.g. plain and gn) can both be seen; each marker sits on its line:
    the mean over seeds, geometric on a log axis, as :meth:`Lines.draw` draws it."""
    if not lines.hue or rows.empty:
        return
    n = len(lines.hue_order)
    styles = lines.style_order if lines.style else [None]
    for i, lvl in enumerate(lines.hue_order):
        for st in styles:
            sub = rows[rows[lines.hue].astype(str) == lvl]
            if st is not None:
                sub = sub[sub[lines.style].astype(str) == st]
            if log:
                sub = sub[sub["value"] > 0]
                g = np.exp(np.log(sub["value"].astype(float)).groupby(sub["step"]).mean())
            else:
                g = sub.groupby("step")["value"].mean()
            if g.empty:
                continue
            stride = max(1, len(g) // 6)  # about 6 markers per line, each level shifted by its index
            pick = g.index[(i * max(1, stride // n)) % stride::stride]
            ax.plot(pick, g.loc[pick].to_numpy(), linestyle="none", marker=_MARKERS[i % len(_MARKERS)],
                    markersize=4.5, color=lines.colors[lvl], markeredgecolor="white", markeredgewidth=0.5,
                    zorder=3)