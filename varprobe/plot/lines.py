"""Lines over steps or depth with a consistent encoding across panels (colour = scheme, dash =
other settings) and a band over seeds, the interval the claims report gives for that kind of
quantity: on a linear axis the mean with its Student-t 95% interval (``varprobe.analysis.mean_ci``,
the report's "mean"), on a log axis (positive quantities that vary by factors: variances, second
moments, ratios) the geometric mean with the back-transformed Student-t interval of the logs
(``varprobe.analysis.geometric_ci``, the report's "ratio"), which is never negative: seaborn
aggregates in the scale of the axis, so the mean and :func:`mean_band` of log10 values are exactly
those. A band is drawn within a decade (log axis) or one data range (linear axis) of the values
observed in the figure."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from .style import _wrap, legend_below, legend_right, bold_headers, new_figure, order_levels, scheme_colors, tidy_log

__all__ = ["Lines", "log_step_grid", "mean_band", "DASHES", "MAX_POOLED_NOTES"]

#: At most this many pooled groups are named one per line in a legend; the rest are counted.
MAX_POOLED_NOTES = 8
#: Characters per line of a pooled-group note in a legend: longer notes break after the ", "
#: between layer names (a name is never split), so the legend does not squeeze the panels.
POOLED_NOTE_WIDTH = 60

DASHES = ["", (4, 1.5), (1, 1.2), (3, 1.25, 1.5, 1.25), (5, 1, 1, 1), (2, 2), (6, 2, 2, 2)]


def mean_band(values) -> tuple[float, float]:
    """Student-t 95% interval of the mean of ``values`` (the runs that differ only by seed at one
    x): mean +- t_{0.975, n-1} s / sqrt(n), s the unbiased standard deviation; the band seaborn
    draws (``errorbar=mean_band``). One value gives no band (NaN, NaN)."""
    from ..analysis.uncertainty import mean_ci  # scipy, loaded when a band is drawn

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return math.nan, math.nan
    ci = mean_ci(v)
    return ci.low, ci.high


def _clipped(band, limits: tuple[float, float]):
    lo, hi = limits

    def clipped(values) -> tuple[float, float]:
        a, b = band(values)
        return (min(max(a, lo), hi) if a == a else a), (max(min(b, hi), lo) if b == b else b)
    return clipped


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
        self.bands: set[str] = set()  # which estimators draw() used: "mean", "geometric"
        v = data["value"].to_numpy(dtype=float) if "value" in data.columns else np.zeros(0)
        v = v[np.isfinite(v)]
        pos = v[v > 0]
        # bands are drawn within a decade (log) or one data range (linear) of the observed values: a
        # t interval over 3 seeds of values that differ by factors can reach 1e300, past what an axis draws
        self._log_clip = (np.log10(pos.min()) - 1, np.log10(pos.max()) + 1) if pos.size else (-math.inf, math.inf)
        span = (v.max() - v.min()) if v.size else 0.0
        self._lin_clip = (v.min() - span, v.max() + span) if v.size else (-math.inf, math.inf)

    def draw(self, ax, data, x: str, y: str = "value", *, marker: bool = True, log: bool = False) -> None:
        """Lines of ``data`` on ``ax``; ``log``: make the y axis logarithmic first, so that the line is
        the geometric mean over seeds and the band its t interval of the logs (else the mean and
        :func:`mean_band`); non-finite values, and on a log axis values <= 0, are left out there.
        A hue level of the legend that gets no line in this panel says why in the panel
        (:meth:`explain`); one with a single point gets that point as a marker."""
        import seaborn as sns
        if log:
            ax.set_yscale("log")
        if data.empty:
            self.explain(ax, data, data, x, y, log)
            return
        self.bands.add("geometric" if log else "mean")
        v = data[y].to_numpy(dtype=float)
        shown = data[np.isfinite(v) & ((v > 0) if log else True)]
        self.explain(ax, data, shown, x, y, log)
        data = shown
        if data.empty:
            return
        kw = dict(data=data.assign(**{c: data[c].astype(str) for c in (self.hue, self.style) if c}),
                  x=x, y=y, ax=ax, legend=False, estimator="mean",
                  errorbar=_clipped(mean_band, self._log_clip if log else self._lin_clip),
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

    def explain(self, ax, data, shown, x: str, y: str = "value", log: bool = False) -> list[str]:
        """For each hue level of the legend that has fewer than two points in ``shown`` (the rows of
        ``data``, this panel's rows, that :meth:`draw` draws), a line in the panel saying why: no
        rows in this panel, every value non-finite (the runs blew up), every value <= 0 on a log
        axis, or one point only (the runs stopped after it; drawn as a marker). Returns the lines."""
        if not self.hue:
            return []
        notes = []
        for lvl in self.hue_order:
            mine = data[data[self.hue].astype(str) == lvl] if len(data) else data
            kept = shown[shown[self.hue].astype(str) == lvl] if len(shown) else shown
            xs = kept[x].nunique() if len(kept) else 0
            if xs >= 2:
                continue
            v = mine[y].to_numpy(dtype=float) if len(mine) else np.zeros(0)
            if not len(mine):
                why = "no rows in this panel (not recorded, or the runs had stopped)"
            elif xs == 1:
                at = kept[x].iloc[0]
                why = f"one point only, at {x} {at:g}" if isinstance(at, (int, float, np.number)) else \
                    f"one point only, at {at}"
                if not np.isfinite(v).all():
                    why += "; the rest non-finite (blew up)"
                g = kept[y].astype(float)
                ax.plot([at], [float(np.exp(np.log(g).mean())) if log else float(g.mean())], linestyle="none",
                        marker="o", markersize=5, color=self.colors[lvl], zorder=3)
            elif not np.isfinite(v).any():
                why = f"all {v.size} values non-finite (the runs blew up)"
            else:
                why = "every finite value <= 0 (none on a log axis)" if log else "no finite value"
            notes.append(f"{lvl}: nothing to draw: {why}" if xs == 0 else f"{lvl}: no line: {why}")
        if notes:
            ax.text(0.02, 0.98, "\n".join(_wrap(n, 48) for n in notes),
                    transform=ax.transAxes, ha="left", va="top", fontsize=7, color="#333333", zorder=6,
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5})
        return notes

    def legend(self, fig, *, hue_title: str | None = None, where: str = "right", markers: dict | None = None,
               pooled: Sequence[str] = (), pooled_title: str = "geometric mean of the layers\nsharing a depth") -> None:
        """One legend for the figure: a section per encoding (``markers``: a marker per hue level,
        for figures that also mark their lines), and a section ``pooled_title`` naming each group
        of layers a point of the figure pools (``pooled``: one line per group, e.g. from
        ``varprobe.plot._derive.pooled_notes``; past :data:`MAX_POOLED_NOTES` the rest are
        counted)."""
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
        if pooled:
            header(pooled_title)
            shown = list(pooled[:MAX_POOLED_NOTES])
            if len(pooled) > len(shown):
                shown.append(f"and {len(pooled) - len(shown)} more groups")
            for note in shown:
                handles.append(Line2D([], [], linestyle="none"))
                labels.append(_wrap_names(note, POOLED_NOTE_WIDTH))
        if self.max_runs > 1:
            handles.append(Patch(facecolor="#888888", alpha=0.3, linewidth=0))
            what = {frozenset({"geometric"}): "geometric mean over seeds",
                    frozenset({"mean", "geometric"}): "mean over seeds (geometric\non log axes)"}
            labels.append(what.get(frozenset(self.bands), "mean over seeds") + ",\n95% t interval band")
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
    fig, axes = new_figure(len(levels), len(steps), panel=(3.3, 2.7), extra=(1.8, 0), sharex=True,
                           sharey="row")
    for j, step in enumerate(steps):
        at = data[data["step"] == step]
        for i, level in enumerate(levels):
            ax = axes[i, j]
            lines.draw(ax, at[at[key] == level], x, log=True)
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


def _wrap_names(note: str, width: int) -> str:
    """``note`` ("depth 3: a, b, c") broken into lines of at most ``width`` characters after the
    ", " between names (continuation lines indented), or as is when it fits; a name longer than
    ``width`` gets a line of its own."""
    if len(note) <= width:
        return note
    lines: list[str] = []
    for piece in note.split(", "):
        if lines and len(lines[-1]) + 2 + len(piece) <= width:
            lines[-1] += ", " + piece
        else:
            if lines:
                lines[-1] += ","
            lines.append(piece if not lines else "  " + piece)
    return "\n".join(lines)
