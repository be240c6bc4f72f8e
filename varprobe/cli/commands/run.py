"""``varprobe run``: one training run into a run directory."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..arguments import path
from ..checks import OUT_ERRORS, check_data, check_device, check_out
from ..exits import EXIT_OK, PROG
from ..hints import add_quiet, figure_beside, plot_command, say, shows_progress
from ..parser import subparser
from ..run_options import RUN_OPTIONS, config_from_args

if TYPE_CHECKING:
    from ...record import Run

__all__ = ["add", "command", "summary"]


def command(args: argparse.Namespace) -> int:
    """``varprobe run``: one training run into ``--out``."""
    from ...experiment import run

    parser = args.parser
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    out = Path(args.out)
    if not args.overwrite and out.is_dir() and any(out.iterdir()):
        parser.error(f"run directory {out} already exists and is not empty; "
                     "pass --overwrite to replace it, or choose another --out")
    check_out(out, parser)
    check_data(config, parser)
    check_device(config, parser)
    say(args, f"{PROG} run: {config.model}/{config.scheme} on {config.data}, {config.steps} steps -> {out}")
    try:
        result = run(config, out, overwrite=args.overwrite, progress=shows_progress(args))
    except OUT_ERRORS as exc:
        parser.error(str(exc))
    print(summary(result))
    say(args, f"the run is in {out}; to look at it:", f"  {plot_command(out, figure_beside(out))}")
    return EXIT_OK


def _number(value: Any, fmt: str) -> str:
    return "nan" if value is None else format(value, fmt)


def summary(result: Run) -> str:
    """One line: status (with the collapse step), final loss, test accuracy, run directory."""
    res = result.meta.get("result") or {}
    status = result.status
    if res.get("collapsed_at") is not None:
        status += f" at step {res['collapsed_at']}"
    return (f"{status}  final loss {_number(res.get('final_loss'), '.4g')}  "
            f"test accuracy {_number(res.get('test_accuracy'), '.4f')}  run dir {result.path}")


def add(sub: Any) -> None:
    """The ``run`` parser: --out, --overwrite and one option per RunConfig field."""
    p = subparser(sub, "run", "--out DIR [options]", "train one configured run into a run directory",
                  "Train one model with the probe attached; write the run directory (meta.json with the "
                  "config, status and result; the probe table with per-layer statistics, loss and lr) "
                  "and print a one-line summary: status, final loss, test accuracy, run dir. Where stderr "
                  "is a terminal a progress bar shows the steps, the loss and the steps per second; last, "
                  "stderr names the run directory and the varprobe plot command that draws it.", command,
                  "varprobe run --model resnet20 --scheme pws --data digits --lr 0.1 --batch-size 64 "
                  "--steps 300 --seed 0 --out runs/pws")
    p.add_argument("--out", required=True, type=path, metavar="DIR", help="run directory to write (required)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it already holds a run (default: off: refuse)")
    add_quiet(p)
    group = p.add_argument_group("run configuration")
    for option in RUN_OPTIONS:
        option.add_to(group)
