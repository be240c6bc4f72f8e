"""The ``varprobe`` command line: ``run``, ``grid``, ``sweep``, ``reproduce`` and ``plot``.

Every :class:`~varprobe.experiment.RunConfig` field is one option, generated from the field
itself (:mod:`varprobe.cli.run_options`: ``--batch-size`` sets ``batch_size``, ...). Options left
out keep the RunConfig default, so the CLI and the Python API agree on every default and range.
Each subcommand lives in :mod:`varprobe.cli.commands`.

Exit codes: 0 success (a collapsed run is a result, not an error); 2 bad arguments, including
values argparse accepts but RunConfig rejects, a model that cannot be built with its scheme and
width or cannot take the image size, a batch larger than the data, an ``--out`` that cannot be
created or exists without ``--overwrite``, and a missing data folder (the usage line and one line
naming the bad value and the valid ones; all checked before anything starts, no traceback);
1 an error that is not the input's fault: a write that fails (a full disk: one line naming the
path and the OS error), a subcommand whose module is not installed, a grid in which some run
failed, could not run or lost its worker (runs skipped because another live process holds them do
not count: they are listed at the end), or an internal error (one line and the hint to rerun with
``--debug`` or ``VARPROBE_DEBUG=1``, which show the traceback);
130 interrupted (Ctrl-C), 143 stopped by SIGTERM, 129 by SIGHUP: the run is flushed and marked
failed naming the signal, its lock released, and one line printed (see
:mod:`varprobe.experiment.stop`).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__, record
from ..record.files import WriteRefused
from ..experiment.stop import Terminated, stop_signals
from ..vocabulary import FIGURE_EXTENSIONS, PLOT_KINDS
from .commands import grid, plot, reproduce, run, sweep
from .exits import DEBUG_ENV, EXIT_ERROR, EXIT_INTERRUPTED, PROG
from .parser import Formatter, add_debug
from .run_options import GRID_AXES, RUN_OPTIONS, config_from_args

__all__ = ["main", "build_parser", "RUN_OPTIONS", "GRID_AXES", "config_from_args", "FIGURE_EXTENSIONS",
           "PLOT_KINDS"]

#: What ``varprobe.record`` raises for a run directory whose meta.json is malformed (where it has one).
_RUN_FORMAT_ERRORS = tuple(e for e in (getattr(record, "RunFormatError", None),) if isinstance(e, type))


def build_parser() -> argparse.ArgumentParser:
    """The ``varprobe`` argument parser; each subcommand sets ``func`` and ``parser``."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=Formatter,
        description="varprobe: variance transmission in PyTorch networks (BN vs WN vs PWS).",
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_debug(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (run, grid, sweep, reproduce, plot):
        command.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    Bad arguments raise ``SystemExit(2)`` (argparse's convention), ``--help`` ``SystemExit(0)``.
    SIGINT, SIGTERM and SIGHUP stop a run cleanly (``varprobe.experiment.stop``); called without
    ``argv``, as the ``varprobe`` program, the process is about to exit after a stop signal, and
    further stop signals stay ignored until it does.
    """
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    prefix = f"{PROG} {args.command}"
    with stop_signals(restore=argv is not None):
        try:
            return args.func(args)
        except KeyboardInterrupt:
            print(f"{prefix}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Terminated as exc:
            print(f"{prefix}: {exc}", file=sys.stderr)
            return exc.exit_code
        except (*_RUN_FORMAT_ERRORS, WriteRefused) as exc:  # a damaged run, or a file varprobe may not write
            if debug:
                raise
            args.parser.error(_first_line(exc))
        except OSError as exc:  # a write that failed (a full disk), not the input's fault
            if debug:
                raise
            print(f"{prefix}: error: {_os_error(exc, getattr(args, 'out', None))}", file=sys.stderr)
            return EXIT_ERROR
        except Exception as exc:
            if debug:
                raise
            print(f"{prefix}: internal error: {type(exc).__name__}: {_first_line(exc)}; rerun with --debug "
                  f"(or {DEBUG_ENV}=1) to see the traceback", file=sys.stderr)
            return EXIT_ERROR


def _os_error(exc: OSError, out: str | os.PathLike | None) -> str:
    """One line for a failed read or write: the path (the error's own, else ``--out``) and the OS
    error; a note added on the way (e.g. that the run could not be marked failed) follows."""
    text = _first_line(exc)
    if exc.filename is None and out is not None:
        text = f"writing {out} failed: {text}"
    notes = [n.strip() for n in getattr(exc, "__notes__", ()) if n.strip()]
    return "; ".join([text, *notes])


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]
