"""``varprobe plot RUN_DIR... --kind KIND [--quantity Q] [--layers L] [--schemes S] [--steps N]
[--mode M] --out FILE``: load the runs, draw the figure (``varprobe.plot.draw``) and save it."""
from __future__ import annotations

from pathlib import Path

from ..plot.kinds import SELECTIONS, check_kind, check_selections, draw
from ..record import load_runs
from ..record.figure import figure_format, save_figure
from ..record.files import OutputDir

__all__ = ["cli_plot"]


def cli_plot(args) -> Path:
    """Run ``varprobe plot``: ``args`` has ``run_dirs`` (list of run directories or globs),
    ``kind``, ``quantity`` (str or None), ``out`` (a .png, .svg or .pdf path) and optionally
    ``skip_corrupt`` (bool) and the :data:`SELECTIONS` (``layers``, ``schemes``, ``steps``: lists,
    ``mode``: str; None or absent: the kind's default). Loads the runs with ``varprobe.load_runs``, draws, saves, prints the
    path and returns it. Runs with no recorded rows are refused for every kind (ValueError naming
    them): no figure is written. A file at ``out`` that varprobe did not write is never replaced
    (:class:`~varprobe.record.files.WriteRefused`, before anything is loaded)."""
    kind, quantity, out = args.kind, getattr(args, "quantity", None), args.out
    selections = {k: getattr(args, k, None) for k in SELECTIONS}
    check_kind(kind, quantity)   # fail before loading anything
    check_selections(kind, selections)
    figure_format(out)
    OutputDir(Path(out).parent, "plot").check([Path(out).name])  # before loading anything
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
