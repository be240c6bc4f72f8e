"""``varprobe plot``: a figure of run directories (loaded, drawn and written by ``varprobe.cli.figure.cli_plot``)."""
from __future__ import annotations

import argparse
import glob
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...vocabulary import FIGURE_EXTENSIONS, PLOT_KINDS, QUANTITY_KINDS
from ..arguments import figure_path, integer, list_of, path, text
from ..exits import EXIT_OK, missing
from ..parser import subparser
from ..paths import file_problem

__all__ = ["add", "command", "run_dirs", "layer_entry"]


def command(args: argparse.Namespace) -> int:
    """``varprobe plot``: a figure of run directories, by ``varprobe.cli.figure.cli_plot(args)`` (which
    writes ``args.out`` and prints its path)."""
    problem = file_problem(args.out)
    if problem is not None:
        args.parser.error(f"--out {problem}")
    args.run_dirs = run_dirs(args.run_dirs, args.parser)
    try:
        from ..figure import cli_plot
    except ImportError as exc:  # that part of varprobe is not installed (matplotlib)
        return missing(exc, "varprobe.cli.figure", "cli_plot", args.command)
    try:
        cli_plot(args)
    except (ValueError, FileNotFoundError) as exc:  # e.g. a kind that needs --quantity, a corrupt chunk
        args.parser.error(re.sub(r"\bskip_corrupt\s*=\s*True\b", "--skip-corrupt", str(exc)))
    return EXIT_OK


def run_dirs(patterns: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """The run directories of ``patterns``: each an existing directory, or a glob (``*``, ``?``,
    ``[``; quoted, so the shell did not expand it) expanded here, sorted, to the directories it
    matches that hold a meta.json. A path that does not exist, a glob that matches no run, or a run
    given twice (by the same path, another path to it, or a glob that matches it too: it would be
    drawn as two runs) is a usage error naming it."""
    dirs: list[str] = []
    seen: dict[Path, str] = {}

    def add(found: str, pattern: str) -> None:
        where = Path(found).resolve()
        if where in seen:
            via = "" if found == pattern else f" (matched by {pattern!r})"
            what = (f"run directory {found!r}{via} is given twice" if seen[where] == found else
                    f"run directories {seen[where]!r} and {found!r}{via} are the same directory")
            parser.error(f"{what}; give each run directory once")
        seen[where] = found
        dirs.append(found)

    for pattern in patterns:
        if Path(pattern).is_dir():
            add(pattern, pattern)
            continue
        if Path(pattern).exists():
            parser.error(f"run directory {pattern!r} is not a directory; give a run directory written by run or grid")
        if not glob.has_magic(pattern):
            parser.error(f"run directory {pattern!r} not found")
        matches = sorted(glob.glob(pattern))
        runs = [m for m in matches if (Path(m) / "meta.json").is_file()]
        if not runs:
            matched = f" ({len(matches)} path(s) matched, none a run directory with a meta.json)" if matches else ""
            parser.error(f"RUN_DIR pattern {pattern!r} matches no run directory{matched}")
        for found in runs:
            add(found, pattern)
    return dirs


def layer_entry(raw: str) -> int | str:
    """One ``--layers`` entry: an int is a depth, anything else a layer name or glob pattern."""
    raw = raw.strip()
    return int(raw) if re.fullmatch(r"[0-9]+", raw) else raw


#: (flag, parser, metavar, help) of each selection, passed on by ``varprobe.plot.draw``.
_SELECTIONS = (
    ("--layers", list_of(layer_entry, "conv1,stage1.*,3", "the kind's own choice"), "LIST",
     "comma-separated layers to show: names, glob patterns (stage1.*) and depths (3), for the kinds that take "
     "layers= (default: the kind's own choice)"),
    ("--schemes", list_of(text, "plain,pws", "all schemes"), "LIST",
     "comma-separated schemes whose runs to show, of those in the runs, for every kind (default: all)"),
    ("--steps", list_of(integer, "0,100,299", "the kind's own choice"), "LIST",
     "comma-separated training steps to show, each snapped to the nearest recorded step, for the kinds that "
     "take steps= (default: the first, a middle and the last)"),
    ("--mode", text, "MODE", "train or eval: the rows of that mode, for the kinds that take mode= (default: train)"),
)


def add(sub: Any) -> None:
    """The ``plot`` parser: run directories, --kind, --quantity, the selections, --out, --skip-corrupt."""
    p = subparser(sub, "plot", "RUN_DIR [RUN_DIR ...] --kind KIND [--quantity NAME] [selections] --out FILE",
                  "draw a figure of one or more run directories",
                  "Draw a figure of the runs in RUN_DIR... (by varprobe.plot) into FILE; the format "
                  f"follows FILE's extension: {', '.join(FIGURE_EXTENSIONS)}. --layers, --schemes, --steps "
                  "and --mode select what it shows, as the keyword arguments of the varprobe.plot "
                  "functions do; a selection the kind does not take is refused naming the kinds that take it.",
                  command)
    p.add_argument("run_dirs", nargs="+", type=path, metavar="RUN_DIR", help="run directories written by run or grid")
    p.add_argument("--kind", choices=PLOT_KINDS, required=True, metavar="KIND",
                   help=f"figure (required): {', '.join(PLOT_KINDS)}")
    p.add_argument("--quantity", metavar="NAME", default=None,
                   help=f"probe quantity to show, for the kinds that take one ({', '.join(QUANTITY_KINDS)}), "
                        "e.g. out.var (default: none)")
    for flag, parse, metavar, help in _SELECTIONS:
        p.add_argument(flag, type=parse, default=None, metavar=metavar, help=help)
    p.add_argument("--out", required=True, type=figure_path, metavar="FILE",
                   help=f"figure file to write (required); {', '.join(FIGURE_EXTENSIONS)} by extension")
    p.add_argument("--skip-corrupt", dest="skip_corrupt", action="store_true",
                   help="skip chunks that cannot be read (truncated, corrupt or missing), with a warning "
                        "naming each, and draw the rest (default: off: refuse, naming the file)")
