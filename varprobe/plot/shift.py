"""The shift of the average gradient over training, by scheme."""
from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from . import _derive as d
from .style import STEP_LABEL, Lines, finite, new_figure, note, qlabel, tidy_log, use_log

__all__ = ["shift"]

#: E|g| / rms(g) for a zero-mean Gaussian: the shift ratio of filters without a shifted gradient.
NO_SHIFT = math.sqrt(2 / math.pi)


def shift(frame: pd.DataFrame, mode: str = "train", *, log: bool | None = None) -> Figure:
    """The shift of the average gradient (Liu et al. 2021) over training, by scheme.

    Left: ``gw.shift_ratio``, the mean over filters of |g_i| (g_i the average of dL/dW over
    filter i) relative to rms(dL/dW)/sqrt(n); about 0.8 (dotted line) when the per-filter
    average gradient is just noise, >> 1 when every filter's gradient is offset. Right:
    ``w.filter_sum_var``, the variance over filters of each filter's weight sum, which the
    shifted gradient pumps up (log y). Each value is the mean over the run's conv layers;
    colour = scheme, dashes = other settings, mean over seeds with a 95% CI band.

    What a reader should see: in the plain and WN nets the shift ratio sits well above 0.8 and
    the filter sums' variance climbs over training (faster and further at a larger learning
    rate); BN keeps the filter-sum variance low; PWS centres each filter's gradient, so its shift
    ratio drops to rounding level (~1e-6, far below the line) and its raw filter sums stay put.
    """
    f = d.prepare(frame, mode)
    qs = ["gw.shift_ratio", "w.filter_sum_var"]
    m = d.conv_mean(f, qs)
    if m.empty:
        raise ValueError("no gw.shift_ratio / w.filter_sum_var rows of conv layers in the frame "
                         "(record with Probe(..., quantities='all') in training mode)")
    m, hue, style = d.hue_style(m)
    lines = Lines(m, hue, style)
    fig, axes = new_figure(1, 2, panel=(4.2, 3.3), extra=(1.8, 0), sharex=True)
    dropped = 0
    for ax, qn in zip(axes[0], qs):
        rows = m[m["quantity"] == qn]
        lg = use_log(rows["value"], ratio=10) if log is None else log
        rows, n = finite(rows, positive=lg)
        dropped += n
        lines.draw(ax, rows, "step", marker=False)
        if lg:
            ax.set_yscale("log")
            tidy_log(ax)
        if qn == "gw.shift_ratio":
            ax.axhline(NO_SHIFT, color="#777777", linestyle=":", linewidth=1.2)
            ax.annotate("no shift (≈0.8)", (0.01, NO_SHIFT), xycoords=("axes fraction", "data"),
                        xytext=(0, -2), textcoords="offset points", ha="left", va="top",
                        fontsize=7.5, color="#555555")
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel(qlabel(qn, width=36) + "\n(mean over conv layers)")
        ax.set_title({"gw.shift_ratio": "shift of the average gradient",
                      "w.filter_sum_var": "spread of filter sums (raw weights)"}[qn], fontsize=10)
    lines.legend(fig)
    fig.suptitle(f"Shift of the average gradient over training ({mode} mode)")
    if dropped:
        note(fig, f"{dropped} non-finite or non-positive values left out.")
    return fig
