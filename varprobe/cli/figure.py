"""``varprobe plot RUN_DIR... --kind KIND [--quantity Q] [--layers L] [--schemes S] [--steps N]
[--mode M] --out FILE``: load the runs, draw the figure (``varprobe.plot.draw``) and save it."""
from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from ..plot.kinds import SELECTIONS, check_kind, check_selections, draw
from ..record import load_runs
from ..vocabulary import FIGURE_EXTENSIONS

__all__ = ["FORMATS", "save_figure", "cli_plot"]

FORMATS = tuple(e.lstrip(".") for e in FIGURE_EXTENSIONS)
PNG_DPI = 150


def _check_format(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise ValueError(f"unknown figure format {ext or '(no extension)'!r} of {str(path)!r}; "
                         f"valid: {', '.join('.' + f for f in FORMATS)}")
    return ext


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
    ``skip_corrupt`` (bool) and the :data:`SELECTIONS` (``layers``, ``schemes``, ``steps``: lists,
    ``mode``: str; None or absent: the kind's default). Loads the runs with ``varprobe.load_runs``, draws, saves, prints the
    path and returns it. Runs with no recorded rows are refused for every kind (ValueError naming
    them): no figure is written."""
    kind, quantity, out = args.kind, getattr(args, "quantity", None), args.out
    selections = {k: getattr(args, k, None) for k in SELECTIONS}
    check_kind(kind, quantity)   # fail before loading anything
    check_selections(kind, selections)
    _check_format(out)
    run_dirs = list(getattr(args, "run_dirs", None) or [])
    if not run_dirs:
        raise ValueError("varprobe plot needs at least one run directory")
    frame = load_runs(run_dirs, skip_corrupt=bool(getattr(args, "skip_corrupt", False)))
    if frame.empty:
        raise ValueError(f"nothing to plot: no recorded steps in {', '.join(map(str, run_dirs))} (an empty run, "
                         "or every chunk skipped); plot runs that recorded at least one step")
    fig = draw(frame, kind, quantity, **selections)
    path = save_figure(fig, out)
    print(path)
    return path
