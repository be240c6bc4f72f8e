"""Where the variance of conv outputs comes from: the i.i.d., filter-sum (shift) and remaining parts."""
from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from ..analysis.rows import pooled_shares
from ..vocabulary import SCHEMES
from . import _derive as d
from .captions import num
from .footer import footer
from .lines import mean_band
from .style import STEP_LABEL, new_figure, order_levels

__all__ = ["decomposition", "decomposition_table", "PARTS", "SYMBOLS"]

#: dec.* part -> (legend label: the quantity the probe records, padding-aware; colour)
PARTS = {
    "dec.iid": ("i.i.d. inputs, padding-aware:\nVar(x)·Σ_t C_tt‖K_i[:,t]‖²", "#4c72b0"),
    "dec.shift": ("filter sum (shift), padding-aware:\nmean(x)²·s_iᵀ C s_i\n(mean(x)²·(1ᵀK_i)² without padding)",
                  "#c44e52"),
    "dec.rest": ("rest: correlated or\nunequal input channels", "#dd8452"),
}
#: The footer's definitions of the legend's symbols.
SYMBOLS = ("s_i[t]: filter i's kernel summed over input channels at tap t; C[t, u]: the fraction of output "
           "positions at which taps t and u both read the input, not the zero padding (so s_iᵀ C s_i is not "
           "zero for a zero-sum filter at the border of a small feature map); mean over filters i.")


def decomposition_table(frame: pd.DataFrame, mode: str = "train", min_depth: int = 1) -> pd.DataFrame:
    """Per run, step and part: the part's share of ``dec.measured`` over the conv layers at depth >=
    ``min_depth``, pooled: the part summed over those layers divided by dec.measured summed over
    them (a ratio of sums, so a dead layer whose output second moment is near zero cannot blow it
    up); columns run, step, part, share, measured (the mean over those layers of dec.measured),
    plus the runs' config columns (``varprobe.analysis.rows.pooled_shares``). The three shares add
    up to 1."""
    f = d.prepare(frame, mode)
    long = pooled_shares(f, list(PARTS), mode=mode, min_depth=min_depth)
    return long.merge(d.run_table(f), on="run", how="left")


def decomposition(frame: pd.DataFrame, mode: str = "train", *, min_depth: int = 1, ncols: int = 4) -> Figure:
    """Where conv output variance comes from over training, one panel per scheme (and setting).

    For each conv layer the probe splits the output second moment without bias, dec.measured =
    mean_i E[(y_i - b_i)^2], into dec.iid (what inputs with i.i.d. entries would give, Var(x)
    ||K_i||^2 without padding), dec.shift (the filter-sum term, mean(x)^2 (1^T K_i)^2 without padding)
    and dec.rest (what the
    i.i.d. model leaves out: filters aligned with correlated inputs, channels with unequal means or
    variances); padding-aware, see ``varprobe.probe.QUANTITIES``: the legend gives the recorded
    terms (mean(x)^2 s_i^T C s_i, not (1^T K_i)^2) and the footer defines s_i and C. Lines: each part's share of
    dec.measured, pooled over the conv layers at depth >= ``min_depth`` (the first conv reads the
    data; :func:`decomposition_table`), mean over seeds with a 95% CI band. Panel titles give the
    growth of dec.measured from the first to the last recorded step.

    What a reader should see: if the shift drives variance growth (the paper's story), the red
    filter-sum share climbs in the nets where E[y^2] grows (plain, WN at a large learning rate)
    and stays near zero where filters are centred (PWS, centering; not exactly zero where padding
    cuts taps off at the border of small feature maps). Variance that grows while the shift share
    stays flat came from elsewhere: a rising orange share means filters aligned with correlated
    or unequal input channels, a blue one growing weight norms.
    """
    table = decomposition_table(frame, mode, min_depth)
    prepared = d.prepare(frame, mode)
    runs, hue, style = d.hue_style(prepared)  # seeds merge; scheme, then other settings
    runs = runs.drop_duplicates("run").set_index("run")
    if hue:
        label = runs[hue].astype(str)
    elif "scheme" in runs.columns:  # one run: name its scheme, not "run"
        label = runs["scheme"].astype(str)
    else:
        label = pd.Series("all layers", index=runs.index)
    if style:
        label = label + ", " + runs[style].astype(str)
    table = table.assign(group=table["run"].map(label))
    rank = {s: i for i, s in enumerate(SCHEMES)}
    groups = sorted(order_levels(table["group"]), key=lambda g: (rank.get(g.split(",")[0], len(rank)), g))
    cols = min(ncols, len(groups))
    rows = math.ceil(len(groups) / cols)
    single = len(groups) == 1  # one panel: larger, legend in one column below it
    fig, axes = new_figure(rows, cols, panel=(5.6, 3.4) if single else (3.4, 2.8), extra=(2.0, 0.3),
                           sharex=True, sharey=True)
    import seaborn as sns
    for ax, group in zip(axes.flat, groups):
        sub = table[table["group"] == group]
        sns.lineplot(data=sub, x="step", y="share", hue="part", hue_order=list(PARTS), ax=ax, legend=False,
                     palette={k: c for k, (_, c) in PARTS.items()}, errorbar=mean_band, linewidth=1.5,
                     err_kws={"alpha": 0.18, "linewidth": 0})
        ax.axhline(0.0, color="#999999", linewidth=0.8)
        growth = sub.groupby("step")["measured"].mean()
        ax.set_title(f"{group}\nE[(y−b)²] ×{num(growth.iloc[-1] / growth.iloc[0])} first→last", fontsize=9)
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel("share of E[(y − b)²]\n(pooled over conv layers)")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=c, linewidth=2) for _, c in PARTS.values()]
    # Legend right of the panels, each entry the recorded quantity: the footer (what was drawn) takes the bottom.
    fig.legend(handles, [label for label, _ in PARTS.values()], labelspacing=1.0,
               loc="outside right center", frameon=False, title="part (as recorded)",
               title_fontproperties={"weight": "bold"})
    fig.suptitle(f"Where conv output variance comes from ({mode} mode, conv layers at depth ≥ {min_depth})",
                 fontsize=10.5 if single else 12)
    footer(fig, prepared[prepared["run"].isin(set(table["run"]))], SYMBOLS, mode=mode)
    return fig
