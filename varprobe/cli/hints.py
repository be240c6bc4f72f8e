"""What ``run``, ``grid`` and ``reproduce`` say besides their result: a progress bar where stderr is
a terminal, and, last, where their output is and the command to look at it (on stderr, so that
stdout holds the result alone). ``--quiet`` turns both off."""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

from ..vocabulary import FIGURE_EXTENSIONS
from .exits import PROG

__all__ = ["HINT_KIND", "add_quiet", "shows_progress", "say", "program", "plot_command", "figure_beside"]

#: The figure the closing hint of ``run`` and ``grid`` proposes: signal propagation over depth, which
#: every probe preset records and which needs no --quantity.
HINT_KIND = "spp"


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """The ``--quiet`` switch."""
    parser.add_argument("--quiet", action="store_true",
                        help="print the result only: no progress bar and no closing hint (default: off; the "
                             "progress bar shows only where stderr is a terminal)")


def shows_progress(args: argparse.Namespace) -> bool:
    """A progress bar: stderr is a terminal and neither ``--quiet`` nor ``--no-progress`` was given."""
    return not (args.quiet or getattr(args, "no_progress", False)) and sys.stderr.isatty()


def say(args: argparse.Namespace, *lines: str) -> None:
    """``lines`` on stderr, unless ``--quiet``."""
    if not args.quiet:
        for line in lines:
            print(line, file=sys.stderr)


def figure_beside(directory: str | os.PathLike, kind: str = HINT_KIND) -> Path:
    """``<directory>-<kind>.png`` next to ``directory``: never inside a run directory (varprobe
    writes nothing there), and named after it."""
    directory = Path(directory)
    if directory.name in ("", ".", ".."):
        directory = directory.resolve()
    return directory.with_name(f"{directory.name}-{kind}{FIGURE_EXTENSIONS[0]}")


def program() -> list[str]:
    """How a shell here calls varprobe: ``varprobe`` where that program is on the PATH, else this
    interpreter with ``-m varprobe.cli``."""
    return [PROG] if shutil.which(PROG) else [sys.executable, "-m", "varprobe.cli"]


def plot_command(runs: str | os.PathLike, figure: str | os.PathLike, kind: str = HINT_KIND) -> str:
    """The ``varprobe plot`` command line that draws ``kind`` of ``runs`` (a run directory, or a glob
    that ``varprobe plot`` expands itself) into ``figure``, quoted for a POSIX shell, to be pasted
    in the current directory."""
    return shlex.join([*program(), "plot", str(runs), "--kind", kind, "--out", str(figure)])
