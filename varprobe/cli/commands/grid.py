"""``varprobe grid``: schemes x learning rates x batch sizes x seeds, resumable, serial or parallel."""
from __future__ import annotations

import argparse
import glob
import itertools
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...experiment.config import RunConfig
from ...vocabulary import SCHEMES
from ..arguments import list_of, path
from ..checks import OUT_ERRORS, add_parallel, check_data, check_device, check_out, check_parallel
from ..exits import EXIT_FAILED, EXIT_MISSING, EXIT_OK, PROG
from ..hints import add_quiet, figure_beside, plot_command, say, shows_progress
from ..parser import subparser
from ..run_options import GRID_AXES, RUN_OPTIONS, config_from_args, field_parser

if TYPE_CHECKING:
    from ...record import Run

__all__ = ["add", "command", "table"]

_DEFAULTS = RunConfig()
#: plural option -> (example, help) of each swept axis.
_AXES_HELP = {"schemes": ("plain,bn,pws", f"comma-separated schemes, of: {', '.join(SCHEMES)}"),
              "lrs": ("0.05,0.2", "comma-separated SGD learning rates"),
              "batch_sizes": ("64,128", "comma-separated mini-batch sizes, images per step"),
              "seeds": ("0,1,2", "comma-separated seeds")}


def command(args: argparse.Namespace) -> int:
    """``varprobe grid``: schemes x lrs x batch sizes x seeds into ``--out/<name>``, resumable,
    serially or ``--jobs N`` at once (loky, or a Dask cluster)."""
    from ...experiment.grid import SchedulerError, grid
    from ...experiment.runner import DONE

    parser = args.parser
    check_parallel(args, parser)
    axes = {field: getattr(args, plural) or (getattr(_DEFAULTS, field),) for field, plural in GRID_AXES.items()}
    try:  # every config of the grid is validated before the first run starts
        base = config_from_args(args, **{field: values[0] for field, values in axes.items()})
        configs = [base.replace(**dict(zip(axes, combo))) for combo in itertools.product(*axes.values())]
    except ValueError as exc:
        parser.error(str(exc))
    check_out(args.out, parser)
    check_data(configs, parser)
    if args.backend != "dask":  # a Dask cluster's workers may have GPUs that this machine has not
        check_device(base, parser)
    try:
        runs = grid(base, args.out, schemes=axes["scheme"], lrs=axes["lr"], batch_sizes=axes["batch_size"],
                    seeds=axes["seed"], progress=shows_progress(args), jobs=args.jobs, backend=args.backend,
                    scheduler=args.scheduler)
    except (*OUT_ERRORS, SchedulerError, ValueError) as exc:
        parser.error(str(exc))
    except ImportError as exc:
        print(f"{PROG} grid: error: {exc}", file=sys.stderr)
        return EXIT_MISSING
    print(table(runs))
    for line in runs.report():
        print(line, file=sys.stderr)
    if any(r.status in DONE for r in runs):  # something to draw
        say(args, f"the grid's runs are in {args.out}; to look at them:",
            f"  {plot_command(Path(glob.escape(args.out)) / '*', figure_beside(args.out))}")
    return EXIT_OK if runs.ok else EXIT_FAILED


def table(runs: Sequence[Run]) -> str:
    """name, status and test accuracy of each run, in aligned columns under a header."""
    rows = [("name", "status", "test acc")]
    for r in runs:
        res = r.meta.get("result") or {}
        acc = res.get("test_accuracy")
        rows.append((r.path.name, r.status, "-" if acc is None else f"{acc:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows)


def add(sub: Any) -> None:
    """The ``grid`` parser: --out, the swept axes, the parallel options and every other RunConfig field."""
    p = subparser(sub, "grid", "--out DIR [--schemes LIST] [--lrs LIST] [--batch-sizes LIST] [--seeds LIST] "
                  "[options]", "run schemes x learning rates x batch sizes x seeds, resumably",
                  "Run every combination of --schemes, --lrs, --batch-sizes and --seeds, one after the "
                  "other, into DIR/<name> (name: the config fields that differ from the defaults), then "
                  "print a table of the runs (name, status, test accuracy). Rerunning skips finished "
                  "and collapsed runs, restarts unfinished ones and redoes damaged ones (reported in one "
                  "line); duplicate configs run once; a run that another live process holds is skipped "
                  "and listed at the end. --jobs N runs N at once. Every config is checked before the "
                  "first run starts. Exit status 1 if a run failed. Last, stderr names the directory and the "
                  "varprobe plot command that draws its runs.", command,
                  "varprobe grid --schemes plain,bn,pws --lrs 0.05,0.2 --batch-sizes 64 --seeds 0,1,2 "
                  "--out runs/grid")
    p.add_argument("--out", required=True, type=path, metavar="DIR",
                   help="root directory of the grid's runs (required)")
    for field, plural in GRID_AXES.items():
        example, help = _AXES_HELP[plural]
        default = getattr(_DEFAULTS, field)
        p.add_argument("--" + plural.replace("_", "-"), dest=plural,
                       type=list_of(field_parser(field), example, f"the default {default}"),
                       metavar="LIST", help=f"{help} (default: {default})")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: a tqdm bar on stderr where stderr is a terminal)")
    add_quiet(p)
    add_parallel(p, ", torch threads per run: cores // N unless --threads")
    group = p.add_argument_group("run configuration, shared by every run of the grid")
    for option in RUN_OPTIONS:
        if option.field not in GRID_AXES:
            option.add_to(group)
