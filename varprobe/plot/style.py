"""Shared figure helpers of :mod:`varprobe.plot`: backend, figure grid, labels, colours, legends.

Figures are built with matplotlib's object-oriented API on an Agg canvas (``Figure`` plus
``FigureCanvasAgg``), not registered with pyplot: nothing opens a window, figures made in a loop
are freed when dropped, and a notebook shows a returned figure once. Save with ``fig.savefig``
(the format follows the file's extension) or display it by returning it from a notebook cell
(:class:`PlotFigure` has a PNG representation, so this works without pyplot).
"""
from __future__ import annotations

import io
import math
import os
import sys

import matplotlib

if (sys.platform.startswith("linux") and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("MPLBACKEND")
        and "matplotlib.pyplot" not in sys.modules):
    matplotlib.use("Agg")  # headless: never try an interactive backend

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["new_figure", "qlabel", "short", "scheme_colors", "legend_right", "legend_below",
           "bold_headers", "use_log", "fmt_num", "ci95", "order_levels", "Lines", "finite", "note",
           "describe", "footer", "tidy_log", "log_step_grid", "SHORT", "STEP_LABEL", "DEPTH_LABEL", "SCHEME_ORDER"]

#: One-line meanings of the recorded quantities, for axis labels (full definitions:
#: ``varprobe.probe.quantities.QUANTITIES``; kept in sync by the tests).
SHORT: dict[str, str] = {
    "in.mean": "mean of the layer input",
    "in.var": "variance of the layer input",
    "in.sq_mean": "E[x²] of the layer input",
    "grad_out.var": "variance of dL/d(output)",
    "grad_out.sq_mean": "E[(dL/d output)²]",
    "grad_in.var": "variance of dL/d(input), all consumers",
    "w.fan_var": "fan_in × filter variance, raw weight",
    "w.filter_mean_abs": "mean |filter mean|, raw weight",
    "w.filter_sum_var": "variance over filters of the filter sum (shift)",
    "w.filter_sum_sq": "mean squared filter sum, raw weight",
    "w.sq_norm": "mean squared filter norm, raw weight",
    "w.update_ratio": "‖W_t − W_t−1‖ / ‖W_t−1‖, raw weight",
    "k.fan_var": "fan_in × filter variance, effective kernel",
    "k.filter_mean_abs": "mean |filter mean|, effective kernel",
    "k.filter_sum_var": "variance over filters of the kernel sum",
    "k.filter_sum_sq": "mean squared kernel sum",
    "k.sq_norm": "mean squared kernel filter norm",
    "k.alpha_mean": "PWS gain alpha, mean over filters",
    "k.shrink": "PWS shrink by gamma' (1 = none)",
    "dec.measured": "E[(y − b)²] of the layer output",
    "dec.iid": "i.i.d.-input part Var(x)·‖K‖²",
    "dec.shift": "filter-sum part mean(x)²·(1ᵀK)²",
    "dec.rest": "rest: correlated or unequal input channels",
    "dec.pred_ch_var": "predicted out.ch_var, per-channel i.i.d.",
    "dec.pred_ch_sq_mean": "predicted out.ch_sq_mean, per-channel i.i.d.",
    "gw.avg_abs": "mean |average filter gradient|",
    "gw.rms": "rms of dL/dW",
    "gw.shift_ratio": "|avg. filter gradient| / (rms/√n); ≈0.8 unshifted",
    "gw.sign_persistence": "filters whose avg. gradient kept its sign",
    "gw.bias_corr": "corr(avg. filter gradient, input mean × dL/db)",
    "bn.mean_gap": "BN |batch mean − running mean| / running std",
    "bn.var_ratio": "BN batch var / running var",
    "norm.weight_mean": "mean norm gain gamma",
    "norm.bias_mean": "mean norm bias beta",
    "loss": "training loss",
    "lr": "learning rate",
}
_OUT = {
    "mean": "mean of {t}",
    "var": "variance of {t}",
    "sq_mean": "E[x²] of {t}",
    "ch_var": "mean channel variance of {t}",
    "ch_sq_mean": "mean squared channel mean of {t}",
    "dead_frac": "fraction of dead channels of {t}",
    "nonfinite": "non-finite elements of {t}",
}
for _s, _d in _OUT.items():
    SHORT[f"out.{_s}"] = _d.format(t="the layer output")
    SHORT[f"block.out.{_s}"] = _d.format(t="the block output (residual stream)")
    SHORT[f"branch.out.{_s}"] = _d.format(t="the residual branch")
# Derived in varprobe.plot._derive.
SHORT["amp.skipped"] = "step skipped by the GradScaler (1) or not (0)"
SHORT["fwd.var_ratio"] = "Var(out) / Var(in), forward"
SHORT["bwd.var_ratio"] = "Var(dL/d in) / Var(dL/d out), backward"

STEP_LABEL = "training step"
DEPTH_LABEL = "depth (conv/linear layer)"

#: Fixed colours per normalization scheme, so that a scheme looks the same in every figure.
_SCHEME_COLORS = {
    "plain": "#4d4d4d",   # dark grey: the unnormalized baseline
    "plain+gn": "#999999",  # light grey: the baseline with PWS's two GroupNorms
    "bn": "#1f77b4",
    "wn": "#d62728",
    "pws": "#2ca02c",
    "gn": "#9467bd",
    "ws": "#ff7f0e",
    "centered": "#8c564b",
}
_EXTRA_COLORS = ["#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a",
                 "#ff9896", "#c5b0d5", "#c49c94"]


def short(quantity: str) -> str:
    """The one-line meaning of ``quantity`` ("" if unknown)."""
    return SHORT.get(quantity, "")


def qlabel(quantity: str, *, log: bool = False, width: int = 42, meaning: str | None = None) -> str:
    """Axis label: the quantity's name, then its meaning (``meaning``, or :data:`SHORT`'s) on a
    second line (wrapped if long, never inside parentheses)."""
    meaning = short(quantity) if meaning is None else meaning
    text = quantity if not meaning else f"{quantity}\n{_wrap(meaning, width)}"
    return text + (" (log)" if log and "\n" not in text else "")


def _wrap(text: str, width: int) -> str:
    """Greedy word wrap at ``width`` characters that never breaks inside parentheses or brackets,
    so an expression such as "Var(dL/d out)" stays on one line."""
    words, depth, cur_word = [], 0, ""
    for w in text.split():
        cur_word = f"{cur_word} {w}" if cur_word else w
        depth += sum(w.count(c) for c in "([{") - sum(w.count(c) for c in ")]}")
        if depth <= 0:
            words.append(cur_word)
            cur_word, depth = "", 0
    if cur_word:
        words.append(cur_word)
    lines, cur = [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    lines.append(cur)
    return "\n".join(lines)


def scheme_colors(names) -> dict:
    """A colour per hue level: the fixed colour of a known scheme, the next spare colour otherwise."""
    out, spare = {}, iter(_EXTRA_COLORS * 10)
    for name in names:
        out[name] = _SCHEME_COLORS.get(str(name).split(",")[0].strip(), None) or next(spare)
    return out


class PlotFigure(Figure):
    """A matplotlib ``Figure`` that Jupyter shows as a PNG when returned from a cell, even where
    pyplot (and with it the inline backend's display hook) was never imported."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()


def new_figure(nrows: int, ncols: int, *, panel: tuple[float, float] = (3.6, 2.9),
               extra: tuple[float, float] = (0.0, 0.0), sharex: bool | str = False,
               sharey: bool | str = False, squeeze: bool = False) -> tuple[Figure, np.ndarray]:
    """A figure of ``nrows`` x ``ncols`` panels of size ``panel`` inches, plus ``extra`` inches
    (right, bottom) for a legend, with constrained layout, on an Agg canvas (not pyplot).
    Returns ``(fig, axes)``, axes a 2-d array."""
    fig = PlotFigure(figsize=(ncols * panel[0] + extra[0], nrows * panel[1] + extra[1] + 0.5),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=squeeze)
    return fig, axes


def legend_right(fig: Figure, handles, labels, title: str | None = None):
    """One legend for the whole figure, outside the panels on the right."""
    if handles:
        return fig.legend(handles, labels, loc="outside right upper", title=title, frameon=False)


def legend_below(fig: Figure, handles, labels, title: str | None = None, ncol: int | None = None):
    """One legend for the whole figure, outside the panels below them."""
    if handles:
        return fig.legend(handles, labels, loc="outside lower center", title=title, frameon=False,
                          ncol=ncol or min(len(labels), 5))


def bold_headers(legend, indices) -> None:
    """Make the legend entries at ``indices`` (section headers without a line) bold."""
    texts = legend.get_texts()
    for i in indices:
        texts[i].set_fontweight("bold")


def use_log(values, *, ratio: float = 30.0) -> bool:
    """Log scale when every finite value is positive and they span more than ``ratio``."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0 or (v <= 0).any():
        return False
    return float(v.max() / v.min()) > ratio


def fmt_num(x: float) -> str:
    """Short number for annotations: 3 significant digits, inf/nan spelled out."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"


# --------------------------------------------------------------------------- lines with CI bands

SCHEME_ORDER = ("plain", "plain+gn", "bn", "gn", "wn", "ws", "centered", "pws")
DASHES = ["", (4, 1.5), (1, 1.2), (3, 1.25, 1.5, 1.25), (5, 1, 1, 1), (2, 2), (6, 2, 2, 2)]
#: Resamples of the bootstrap confidence interval of the mean over seeds.
N_BOOT = 1000


def ci95(values) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (the runs that differ only by
    seed at one x): what seaborn's ``errorbar=("ci", 95)`` computes, vectorized (seaborn's own
    resampling loop made a 6-panel, 8-group figure take 12 s). Seeded, so figures are
    reproducible."""
    v = np.asarray(values, dtype=float)
    idx = np.random.default_rng(0).integers(0, v.size, (N_BOOT, v.size))
    lo, hi = np.nanpercentile(v[idx].mean(axis=1), (2.5, 97.5))
    return float(lo), float(hi)


#: Seaborn ``errorbar`` of every line plot: the 95% bootstrap CI of the mean over seeds.
ERRORBAR = ci95


def order_levels(values) -> list:
    """Hue levels in a stable order: known schemes first (in ``SCHEME_ORDER``), then the rest sorted."""
    vals = list(dict.fromkeys(str(v) for v in values if v is not None and v == v))
    known = [s for s in SCHEME_ORDER if s in vals]
    return known + sorted(v for v in vals if v not in known)


class Lines:
    """Seaborn line plots with a shared, consistent encoding across panels: colour = hue
    (scheme), dash = style (other settings), mean over runs that differ only by seed with a
    95% CI band, and one legend for the figure."""

    def __init__(self, data, hue: str | None, style: str | None):
        self.hue, self.style = hue, style
        self.hue_order = order_levels(data[hue]) if hue else []
        self.colors = scheme_colors(self.hue_order)
        self.style_order = order_levels(data[style]) if style else []
        self.dashes = {lvl: DASHES[i % len(DASHES)] for i, lvl in enumerate(self.style_order)}
        keys = [c for c in (hue, style) if c]
        if keys and "run" in data.columns:
            self.max_runs = int(data.groupby(keys)["run"].nunique().max())
        else:
            self.max_runs = int(data["run"].nunique()) if "run" in data.columns else 1

    def draw(self, ax, data, x: str, y: str = "value", *, marker: bool = True) -> None:
        import seaborn as sns
        if data.empty:
            return
        kw = dict(data=data.assign(**{c: data[c].astype(str) for c in (self.hue, self.style) if c}),
                  x=x, y=y, ax=ax, legend=False, errorbar=ERRORBAR,
                  linewidth=1.5, err_kws={"alpha": 0.18, "linewidth": 0})
        if self.hue:
            kw.update(hue=self.hue, hue_order=self.hue_order, palette=self.colors)
        else:
            kw.update(color="#1f77b4")
        if self.style:
            kw.update(style=self.style, style_order=self.style_order, dashes=self.dashes)
        if marker:
            kw.update(marker="o", markersize=3.5, markeredgewidth=0)
        sns.lineplot(**kw)

    def legend(self, fig, *, hue_title: str | None = None, where: str = "right", markers: dict | None = None) -> None:
        """One legend for the figure: a section per encoding (``markers``: a marker per hue level,
        for figures that also mark their lines)."""
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        handles, labels, headers = [], [], []

        def header(text):
            headers.append(len(labels))
            handles.append(Line2D([], [], linestyle="none"))
            labels.append(text)
        if self.hue:
            header(hue_title or self.hue)
            for lvl in self.hue_order:
                handles.append(Line2D([], [], color=self.colors[lvl], linewidth=2,
                                      marker=(markers or {}).get(lvl), markeredgecolor="white"))
                labels.append(lvl)
        if self.style:
            header("setting")
            for lvl in self.style_order:
                d = self.dashes[lvl]
                handles.append(Line2D([], [], color="#555555", linewidth=1.5,
                                      linestyle=(0, d) if d else "-"))
                labels.append(lvl)
        if self.max_runs > 1:
            handles.append(Patch(facecolor="#888888", alpha=0.3, linewidth=0))
            labels.append("mean over seeds,\n95% CI band")
        leg = (legend_below if where == "below" else legend_right)(fig, handles, labels)
        if leg is not None:
            bold_headers(leg, headers)
        return leg


def log_step_grid(lines: Lines, data, steps, key: str, levels, x: str, *, ylabels, xlabel: str,
                  title=lambda step, at: f"step {step}", unity: bool = False):
    """A figure of ``len(levels)`` rows x ``len(steps)`` columns of log-y panels: panel (i, j) draws
    the rows of ``data`` at ``steps[j]`` whose ``key`` is ``levels[i]`` with ``lines`` over ``x``.
    Column titles are ``title(step, rows at that step)``, row labels ``ylabels``; ``unity`` adds a
    dotted line at 1. Returns ``(fig, axes)``."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = new_figure(len(levels), len(steps), panel=(3.3, 2.7), extra=(1.8, 0), sharex=True,
                           sharey="row")
    for j, step in enumerate(steps):
        at = data[data["step"] == step]
        for i, level in enumerate(levels):
            ax = axes[i, j]
            lines.draw(ax, at[at[key] == level], x)
            ax.set_yscale("log")
            tidy_log(ax)  # plain 2, 5, 10 on short log ranges, never "6x10^0"
            if unity:
                ax.axhline(1.0, color="#777777", linestyle=":", linewidth=1.2)
            ax.grid(True, which="major", alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0, j].set_title(title(step, at), fontsize=10)
        axes[-1, j].set_xlabel(xlabel)
    for i, label in enumerate(ylabels):
        axes[i, 0].set_ylabel(label, fontsize=9)
    return fig, axes


def finite(data, *, positive: bool = False):
    """Rows with a finite value (and > 0 if ``positive``), and how many were left out."""
    v = data["value"].to_numpy(dtype=float)
    keep = np.isfinite(v) & ((v > 0) if positive else True)
    return data[keep], int((~keep).sum())


def note(fig, text: str) -> None:
    """A small footnote in the figure's lower left corner (outside the panels)."""
    if text:
        fig.supxlabel(text, fontsize=7.5, color="#555555", x=0.0, ha="left")


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def _values(col) -> list:
    """Distinct non-missing values of a column, sorted where they compare (numbers), else in
    order of first appearance."""
    vals = [v for v in dict.fromkeys(col.tolist()) if v is not None and v == v]
    try:
        return sorted(vals)
    except TypeError:
        return vals


def describe(frame, mode: str | None = None) -> str:
    """What a figure was drawn from, in one line, read from the run metadata columns of ``frame``
    (the config columns ``varprobe.load_runs`` adds: model, data, size, channels, batch_size,
    scheme, lr, seed, steps; ``run``; ``step``): e.g. "resnet8 on digits 8 px, batch 64 · schemes
    plain, bn, pws · lr 0.2 · 3 seeds (0–2) · steps 0–145 recorded (of 150) · 9 runs · train mode".
    A column that is absent is left out; a value that differs between runs is listed. Works on
    long probe tables and on one-row-per-run tables alike."""
    import pandas as pd
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        return ""
    cols = frame.columns
    runs = frame.drop_duplicates("run") if "run" in cols else frame
    parts = []

    def one(col, fmt="{}"):
        if col not in cols:
            return None
        vals = _values(runs[col])
        return ", ".join(fmt.format(_fmt(v)) for v in vals) if vals else None
    what = one("model")
    data = one("data")
    if data:
        size = one("size", "{} px")
        ch = one("channels", "x {} channels")
        data = " ".join(x for x in (data, size, ch) if x)
        what = f"{what} on {data}" if what else data
    batch = one("batch_size")
    if batch:
        what = f"{what}, batch {batch}" if what else f"batch {batch}"
    if what:
        parts.append(what)
    if "scheme" in cols:
        schemes = order_levels(runs["scheme"])
        parts.append(("scheme " if len(schemes) == 1 else "schemes ") + ", ".join(schemes))
    if "control" in cols:
        parts.append("controls " + ", ".join(dict.fromkeys(runs["control"].astype(str))))
    lr = one("lr")
    if lr:
        parts.append(f"lr {lr}")
    if "seed" in cols:
        seeds = [int(s) for s in _values(runs["seed"])]
        if len(seeds) == 1:
            parts.append(f"seed {seeds[0]}")
        else:
            span = (f"{seeds[0]}–{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1))
                    else ", ".join(map(str, seeds)))
            parts.append(f"{len(seeds)} seeds ({span})")
    if "step" in cols and len(frame):
        lo, hi = int(frame["step"].min()), int(frame["step"].max())
        planned = one("steps")
        parts.append(f"steps {lo}–{hi} recorded" + (f" (of {planned})" if planned else ""))
    elif "steps" in cols:
        parts.append(f"{one('steps')} steps")
    if "run" in cols:
        n = runs["run"].nunique()
        parts.append(f"{n} run" + ("s" if n != 1 else ""))
    if mode:
        parts.append(f"{mode} mode")
    return " · ".join(parts)


def footer(fig, frame, text: str = "", *, mode: str | None = None) -> None:
    """The figure's footer, outside the panels, lower left: ``describe(frame)`` (what the figure
    was drawn from; ``frame`` may also be that line itself), wrapped to the figure's width, then
    ``text`` (a note on what was left out or how to read the figure) on its own line."""
    what = frame if isinstance(frame, str) else describe(frame, mode)
    width = max(40, int(fig.get_size_inches()[0] * 16))
    packed, cur = [], ""
    for part in what.split(" · ") if what else []:  # break between parts, never inside one
        if cur and len(cur) + 3 + len(part) > width:
            packed.append(cur)
            cur = part
        else:
            cur = f"{cur} · {part}" if cur else part
    packed.append(cur)
    lines = ["\n".join(packed), _wrap(text, width) if text else ""]
    body = "\n".join(x for x in lines if x)
    if body:
        fig.supxlabel(body, fontsize=7.5, color="#555555", x=0.0, ha="left", multialignment="left")


def tidy_log(ax, axis: str = "y") -> None:
    """On a log axis spanning less than two decades, label ticks as plain numbers (2, 5, 10)
    instead of 2x10^0. Applied when the figure is drawn, so it sees the final limits."""
    from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation

    plain = FuncFormatter(lambda v, _: f"{v:g}")

    class _Auto(LogFormatterSciNotation):
        def __call__(self, x, pos=None):
            lo, hi = (ax.get_ylim() if axis == "y" else ax.get_xlim())
            if lo > 0 and hi / lo < 100:
                return plain(x, pos) if self._is_minor_shown(x) else ""
            return super().__call__(x, pos)

        def _is_minor_shown(self, x):
            m = x / 10 ** np.floor(np.log10(x) + 1e-12)
            return round(m, 6) in (1.0, 2.0, 5.0) if self._minor else True

    major, minor = _Auto(), _Auto(labelOnlyBase=False)
    major._minor, minor._minor = False, True
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(major)
    target.set_minor_formatter(minor)
