"""A quantity over training steps."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from . import _derive as d
from . import rounding
from .footer import footer
from .lines import Lines
from .style import STEP_LABEL, finite, legend_right, new_figure, qlabel, short, tidy_log, use_log

__all__ = ["curves"]


def curves(frame: pd.DataFrame, quantity: str, layers=None, mode: str = "train", *,
           log: bool | None = None, max_layers: int = 6, ncols: int = 3) -> Figure:
    """``quantity`` over training steps, per layer.

    Several schemes/settings: one panel per layer (small multiples, shared y), colour = scheme,
    dashes = other settings (e.g. learning rate), mean over seeds with a 95% CI band. A single
    scheme (or one run): one panel, one line per layer, coloured by depth (dark = first layer).
    Step-level quantities (``loss``, ``lr``) give one panel.

    ``layers``: None (all layers that have the quantity, or ``max_layers`` of them spread over
    depth when there are more; the title says so), or names, glob patterns (``"features.*"``) and
    ints (depths). y is log when ``log`` is True, or None and the values are positive and span
    more than 30x.

    What a reader should see, e.g. for ``out.var``: unnormalized curves climb over the first
    tens of steps and differ from layer to layer, spiking before a collapse; normalized ones stay
    nearer their start; a curve that stops early belongs to a collapsed run, and where one seed
    stopped the band disappears (one run left). A scheme with nothing to draw in a panel says why
    there. Values of a quantity with a rounding rule (``varprobe.plot.rounding.SCALES``, e.g.
    ``k.filter_sum_sq`` against ``k.sq_norm``) that are zero up to float32 rounding are drawn in a
    hatched band (log axis) and counted in the footer.
    """
    f, q = d.quantity_rows(frame, quantity, mode)
    step_level = bool((q["layer"] == "").all())
    subset = False
    if step_level:
        if layers is not None:
            raise ValueError(f"quantity {quantity!r} is step-level (one value per step, no layers): layers "
                             f"{layers!r} cannot be chosen; leave layers out (--layers in varprobe plot)")
        chosen = [""]
    else:
        q = q[q["layer"] != ""]
    q, hue, style = d.hue_style(q)
    one_group = hue is None or (style is None and q[hue].nunique() == 1)
    if not step_level:
        chosen, pool = d.select_layers(q, layers, max_default=max_layers * (2 if one_group else 1),
                                        weight_only=not one_group)
        q = q[q["layer"].isin(chosen)]
        subset = layers is None and len(chosen) < pool
    flags, level = rounding.at_rounding(pd.concat([q, f[f["quantity"] != quantity]]), quantity)
    q = rounding.clip(q, flags, level)
    whole = q  # every row of the chosen layers: Lines.draw says why a scheme has nothing to draw
    q, dropped = finite(q)
    if log is None:
        log = use_log(q["value"])
    if log:
        q, more = finite(q, positive=True)
        dropped += more
    depth_of = q.drop_duplicates("layer").set_index("layer")["depth"] if "depth" in q.columns else {}
    sub = (f"\n({len(chosen)} of {pool} layers, spread over depth; others: layers=[...], or --layers in varprobe plot)"
           if subset else "")

    if one_group and not step_level:
        # One group: every layer in one panel, coloured by depth.
        import matplotlib
        fig, axes = new_figure(1, 1, panel=(6.0, 3.6), extra=(2.2 if len(chosen) <= 24 else 0, 0))
        ax = axes[0, 0]
        cmap = matplotlib.colormaps["viridis"]
        for i, layer in enumerate(chosen):
            g = q[q["layer"] == layer].groupby("step")["value"].mean()
            color = cmap(i / max(1, len(chosen) - 1) * 0.9)
            ax.plot(g.index, g.to_numpy(), color=color, linewidth=1.4,
                    label=f"{layer} (depth {depth_of.get(layer, '?')})")
        _axes_style(ax, quantity, log)
        if flags.any():
            rounding.shade(ax, level)
        ax.set_xlabel(STEP_LABEL)
        if len(chosen) <= 24:
            h, l = ax.get_legend_handles_labels()
            leg = legend_right(fig, h, l)
            leg.set_title("layer", prop={"weight": "bold"})
        else:
            sm = matplotlib.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(0, len(chosen) - 1))
            fig.colorbar(sm, ax=ax, label="layer index (forward order)")
        n_runs = q["run"].nunique()
        one = str(q["run"].iloc[0])
        who = (f"scheme {q[hue].iloc[0]}" if hue == "scheme" else ("one run" if one == "run" else one)
               if n_runs == 1 else f"{n_runs} runs")
        if n_runs > 1:
            who += f", mean of {n_runs} runs"
        fig.suptitle(f"{quantity} over training, per layer ({who}; {mode} mode){sub}", fontsize=10.5)
    else:
        lines = Lines(whole, hue, style)
        n = len(chosen)
        cols = min(n, ncols)
        rows = -(-n // cols)
        fig, axes = new_figure(rows, cols, panel=(3.5, 2.6), extra=(1.8, 0), sharex=True, sharey=True)
        for k, layer in enumerate(chosen):
            ax = axes.flat[k]
            lines.draw(ax, whole[whole["layer"] == layer], "step", marker=False, log=log)
            _axes_style(ax, quantity, log, label=k % cols == 0)
            if flags.any():
                rounding.shade(ax, level)
            if k // cols == rows - 1 or k + cols >= n:
                ax.set_xlabel(STEP_LABEL)
                ax.tick_params(labelbottom=True)
            else:
                ax.set_xlabel("")
            ax.set_title(quantity if step_level else f"{layer} (depth {depth_of.get(layer, '?')})",
                         fontsize=9.5)
        for k in range(n, rows * cols):
            axes.flat[k].set_axis_off()
        lines.legend(fig)
        fig.suptitle(f"{quantity} over training ({mode} mode){sub}", fontsize=10.5)
    notes = [f"{dropped} non-finite{' or non-positive' if log else ''} values left out." if dropped else "",
             rounding.note(quantity, int(flags.sum()), log)]
    footer(fig, q, " ".join(n for n in notes if n), mode=mode)
    return fig


def _axes_style(ax, quantity: str, log: bool, label: bool = True) -> None:
    if log:
        ax.set_yscale("log")
        tidy_log(ax)
    ax.grid(True, alpha=0.3)
    meaning = short(quantity)
    ax.set_ylabel(qlabel(quantity, width=34, meaning=(meaning + " (log)" if meaning else "(log)") if log else None)
                  if label else "")
