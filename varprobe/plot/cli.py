"""``varprobe plot RUN_DIR... --kind KIND [--quantity Q] --out FILE``: draw and save one figure."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pandas as pd
from matplotlib.figure import Figure

from ..analysis.compare import compare
from ..record import load_runs
from .collapse import collapse_map
from .curves import curves
from .decomposition import decomposition
from .heatmap import heatmap
from .shift import shift
from .spp import spp
from .theory import theory_vs_measured
from .transmission import transmission

__all__ = ["KINDS", "FORMATS", "THEORY_NEEDS", "draw", "save_figure", "cli_plot"]

#: The training-mode quantities the ``theory`` kind compares (``varprobe.analysis.compare``).
THEORY_NEEDS = ("in.mean", "in.var", "out.ch_var", "out.ch_sq_mean")


def theory(frame: pd.DataFrame) -> Figure:
    """``theory_vs_measured`` of ``varprobe.analysis.compare(frame)``: the i.i.d. prediction of every
    conv layer's channel variance and squared channel mean against the measured value.

    ValueError, naming the missing quantities, where the frame has no training-mode rows of
    :data:`THEORY_NEEDS` (a run recorded with ``quantities="forward"``, only in eval mode, or empty)."""
    train = frame[frame["mode"] == "train"] if {"mode", "quantity"} <= set(frame.columns) else frame.iloc[:0]
    have = set(train["quantity"].unique()) if "quantity" in train.columns else set()
    missing = [q for q in THEORY_NEEDS if q not in have]
    if missing:
        runs = sorted(frame["run"].astype(str).unique()) if "run" in frame.columns else []
        which = f"run(s) {', '.join(runs)} have" if runs else "the frame has"
        raise ValueError(f"plot kind 'theory' needs the training-mode quantities {', '.join(THEORY_NEEDS)}; "
                         f"{which} none of {', '.join(missing)} (recorded with --quantities forward, only in eval "
                         "mode, or no steps): record with --quantities all, or choose another --kind")
    return theory_vs_measured(compare(frame), hue="scheme" if "scheme" in frame.columns else None)


#: kind -> (function, needs a quantity).
KINDS: dict[str, tuple[Callable[..., Figure], bool]] = {
    "spp": (spp, False),
    "heatmap": (heatmap, True),
    "curves": (curves, True),
    "shift": (shift, False),
    "transmission": (transmission, False),
    "theory": (theory, False),
    "collapse": (collapse_map, False),
    "decomposition": (decomposition, False),
}
FORMATS = ("png", "svg", "pdf")
PNG_DPI = 150


def _check_kind(kind: str, quantity: str | None) -> tuple[Callable[..., Figure], bool]:
    if kind not in KINDS:
        raise ValueError(f"unknown plot kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    fn, needs = KINDS[kind]
    takes = [k for k, (_, n) in KINDS.items() if n]
    if needs and not quantity:
        raise ValueError(f"plot kind {kind!r} needs a quantity (--quantity Q, e.g. out.var); "
                         f"kinds that take one: {', '.join(takes)}")
    if quantity and not needs:
        raise ValueError(f"plot kind {kind!r} takes no quantity (got {quantity!r}); "
                         f"kinds that take one: {', '.join(takes)}")
    return fn, needs


def _check_format(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise ValueError(f"unknown figure format {ext or '(no extension)'!r} of {str(path)!r}; "
                         f"valid: {', '.join('.' + f for f in FORMATS)}")
    return ext


def draw(frame: pd.DataFrame, kind: str, quantity: str | None = None) -> Figure:
    """The figure of ``kind`` (one of :data:`KINDS`) for ``frame``; ValueError for an unknown
    kind or a missing/unexpected quantity, naming the valid ones."""
    fn, needs = _check_kind(kind, quantity)
    return fn(frame, quantity) if needs else fn(frame)


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` in the format of ``path``'s extension (png at 150 dpi, svg, pdf), creating
    the parent directory; the bounding box grows to include legends outside the panels."""
    ext = _check_format(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=ext, dpi=PNG_DPI if ext == "png" else "figure", bbox_inches="tight",
                metadata={"Software": None} if ext == "png" else None)
    return path


def cli_plot(args) -> Path:
    """Run ``varprobe plot``: ``args`` has ``run_dirs`` (list of run directories or globs),
    ``kind``, ``quantity`` (str or None), ``out`` (a .png, .svg or .pdf path) and optionally
    ``skip_corrupt`` (bool). Loads the runs with ``varprobe.load_runs``, draws, saves, prints the
    path and returns it. Runs with no recorded rows are refused for every kind (ValueError naming
    them): no figure is written."""
    kind, quantity, out = args.kind, getattr(args, "quantity", None), args.out
    _check_kind(kind, quantity)   # fail before loading anything
    _check_format(out)
    run_dirs = list(getattr(args, "run_dirs", None) or [])
    if not run_dirs:
        raise ValueError("varprobe plot needs at least one run directory")
    frame = load_runs(run_dirs, skip_corrupt=bool(getattr(args, "skip_corrupt", False)))
    if frame.empty:
        raise ValueError(f"nothing to plot: no recorded steps in {', '.join(map(str, run_dirs))} (an empty run, "
                         "or every chunk skipped); plot runs that recorded at least one step")
    fig = draw(frame, kind, quantity)
    path = save_figure(fig, out)
    print(path)
    return path
