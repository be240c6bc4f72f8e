"""Shared figure helpers of :mod:`varprobe.plot`: figure grid, labels, colours, legends, log ticks.

Figures are built with matplotlib's object-oriented API on an Agg canvas (``Figure`` plus
``FigureCanvasAgg``), not registered with pyplot: nothing opens a window whatever the backend,
figures made in a loop are freed when dropped, and a notebook shows a returned figure once. Save
with ``fig.savefig`` (the format follows the file's extension) or display it by returning it from
a notebook cell (:class:`PlotFigure` has a PNG representation, so this works without pyplot).
Labels and colours are the vocabulary's (``varprobe.vocabulary.SHORT``, ``SCHEME_COLORS``).

Every figure is made at :data:`DPI` dots per inch or more (:func:`new_figure`): a notebook shows a
figure at the figure's own dpi (the inline backend's printer and :meth:`PlotFigure._repr_png_`
alike), so a notebook's lower ``rcParams["figure.dpi"]`` does not make its text unreadable.
"""
from __future__ import annotations

import io
import math

import numpy as np
from matplotlib import rcParams
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter, LogFormatterSciNotation

from ..vocabulary import EXTRA_COLORS, SCHEME_COLORS, SCHEMES, SHORT

__all__ = ["new_figure", "qlabel", "short", "scheme_colors", "legend_right", "legend_below",
           "bold_headers", "cell_grid", "pack", "use_log", "fmt_num", "order_levels", "finite", "note", "tidy_log",
           "STEP_LABEL", "DEPTH_LABEL", "DPI", "FOOTNOTE_SIZE"]

STEP_LABEL = "training step"
DEPTH_LABEL = "depth (conv/linear layer)"
#: The least resolution of a figure, in dots per inch, wherever it is shown; more where
#: ``rcParams["figure.dpi"]`` asks for more. Files are written at their own (``varprobe.record.figure``).
DPI = 100
#: Font size, in points, of a figure's footnote and footer (what it was drawn from): 11 pixels at :data:`DPI`.
FOOTNOTE_SIZE = 8.0


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
    return "\n".join(pack(words, width, " "))


def pack(items, width: int, sep: str) -> list[str]:
    """Greedy packing of ``items`` into lines of at most ``width`` characters (an item longer than
    that gets a line of its own), joined by ``sep`` within a line."""
    lines, cur = [], ""
    for item in items:
        if cur and len(cur) + len(sep) + len(item) > width:
            lines.append(cur)
            cur = item
        else:
            cur = f"{cur}{sep}{item}" if cur else item
    lines.append(cur)
    return lines


def scheme_colors(names) -> dict:
    """A colour per hue level: the fixed colour of a known scheme, the next spare colour otherwise."""
    out, spare = {}, iter(EXTRA_COLORS * 10)
    for name in names:
        out[name] = SCHEME_COLORS.get(str(name).split(",")[0].strip(), None) or next(spare)
    return out


class PlotFigure(Figure):
    """A matplotlib ``Figure`` that Jupyter shows as a PNG when returned from a cell, even where
    pyplot (and with it the inline backend's display hook) was never imported, at the figure's
    dpi, as the inline backend shows it."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=self.dpi, bbox_inches="tight")
        return buf.getvalue()


def new_figure(nrows: int, ncols: int, *, panel: tuple[float, float] = (3.6, 2.9),
               extra: tuple[float, float] = (0.0, 0.0), sharex: bool | str = False,
               sharey: bool | str = False, squeeze: bool = False) -> tuple[Figure, np.ndarray]:
    """A figure of ``nrows`` x ``ncols`` panels of size ``panel`` inches, plus ``extra`` inches
    (right, bottom) for a legend, with constrained layout, on an Agg canvas (not pyplot), at
    :data:`DPI` or ``rcParams["figure.dpi"]``, whichever is higher. Returns ``(fig, axes)``, axes a
    2-d array."""
    fig = PlotFigure(figsize=(ncols * panel[0] + extra[0], nrows * panel[1] + extra[1] + 0.5),
                     dpi=max(DPI, rcParams["figure.dpi"]), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=squeeze)
    return fig, axes


def legend_right(fig: Figure, handles, labels, title: str | None = None):
    """One legend for the whole figure, outside the panels on the right, centred in height (at the
    top it would run into a long figure title)."""
    if handles:
        return fig.legend(handles, labels, loc="outside right center", title=title, frameon=False)


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


def cell_grid(ax, ncols: int, nrows: int) -> None:
    """White lines between the cells of an ``imshow`` of ``nrows`` x ``ncols`` cells, no ticks marks."""
    ax.set_xticks(np.arange(-0.5, ncols), minor=True)
    ax.set_yticks(np.arange(-0.5, nrows), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="both", length=0)


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


def order_levels(values) -> list:
    """Hue levels in a stable order: known schemes first (in ``varprobe.vocabulary.SCHEMES``), then the rest sorted."""
    vals = list(dict.fromkeys(str(v) for v in values if v is not None and v == v))
    known = [s for s in SCHEMES if s in vals]
    return known + sorted(v for v in vals if v not in known)


def finite(data, *, positive: bool = False):
    """Rows with a finite value (and > 0 if ``positive``), and how many were left out."""
    v = data["value"].to_numpy(dtype=float)
    keep = np.isfinite(v) & ((v > 0) if positive else True)
    return data[keep], int((~keep).sum())


def note(fig, text: str) -> None:
    """A small footnote in the figure's lower left corner (outside the panels)."""
    if text:
        fig.supxlabel(text, fontsize=FOOTNOTE_SIZE, color="#555555", x=0.0, ha="left")


class _TidyLog(Formatter):
    """Log-axis tick labels: plain numbers (2, 5, 10; minor ticks only at 1, 2 and 5 x 10^k) where
    the axis spans less than two decades, matplotlib's 10^k labels otherwise. Decided per draw, so
    it sees the final limits."""

    def __init__(self, minor: bool) -> None:
        self.minor = minor
        self.sci = LogFormatterSciNotation(labelOnlyBase=not minor)

    def set_axis(self, axis) -> None:
        super().set_axis(axis)
        self.sci.set_axis(axis)

    def set_locs(self, locs) -> None:
        super().set_locs(locs)
        self.sci.set_locs(locs)

    def __call__(self, x, pos=None) -> str:
        lo, hi = sorted(self.axis.get_view_interval())
        if lo > 0 and hi / lo < 100:
            mantissa = round(x / 10 ** np.floor(np.log10(x) + 1e-12), 6)
            return f"{x:g}" if not self.minor or mantissa in (1.0, 2.0, 5.0) else ""
        return self.sci(x, pos)


def tidy_log(ax, axis: str = "y") -> None:
    """On a log axis spanning less than two decades, label ticks as plain numbers (2, 5, 10)
    instead of 2x10^0 (:class:`_TidyLog`)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(_TidyLog(minor=False))
    target.set_minor_formatter(_TidyLog(minor=True))
