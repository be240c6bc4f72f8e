"""``varprobe sweep``: a model at several widths and seeds, resumable, and how each layer's
statistics scale with the width (``DIR/slopes.csv`` and the coordinate-check figure)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..arguments import list_of, path, positive_int
from ..checks import OUT_ERRORS, add_parallel, check_data, check_device, check_out, check_parallel
from ..exits import EXIT_FAILED, EXIT_MISSING, EXIT_OK, PROG
from ..hints import add_quiet, say, shows_progress
from ..parser import subparser
from ..run_options import RUN_OPTIONS, config_from_args, field_parser

__all__ = ["add", "command"]

#: The RunConfig fields the sweep sets itself (its axes), not options of their own.
_AXES = ("width", "seed")
_WIDTHS_EXAMPLE = "8,16,32,64"


def command(args: argparse.Namespace) -> int:
    """``varprobe sweep``: widths x seeds of one model into ``--out/runs/<name>``, resumable, then
    the width slopes into ``--out/slopes.csv`` and ``--out/coord_check.png``."""
    from ...experiment.grid import SchedulerError
    from ...experiment.sweep import FIGURE_NAME, RUNS_DIR, SLOPES_NAME, SWEEP_STEPS, check_widths, sweep

    parser = args.parser
    check_parallel(args, parser)
    try:
        widths = check_widths(args.widths)
    except ValueError as exc:
        parser.error(f"argument --widths: {exc}")
    seeds = args.seeds or (0, 1, 2)
    try:  # every config of the sweep is validated before the first run starts
        base = config_from_args(args, **({} if args.steps is not None else {"steps": SWEEP_STEPS}))
        configs = [base.replace(width=w, seed=s) for w in widths for s in seeds]
    except ValueError as exc:
        parser.error(str(exc))
    check_out(args.out, parser)
    check_data(configs, parser)  # a model that cannot be built at a width: its line names the widths that build
    if args.backend != "dask":
        check_device(base, parser)
    try:
        result = sweep(base.model, widths, args.out, base=base, seeds=seeds, progress=shows_progress(args),
                       jobs=args.jobs, backend=args.backend, scheduler=args.scheduler)
    except (*OUT_ERRORS, SchedulerError, ValueError) as exc:
        parser.error(str(exc))
    except ImportError as exc:
        print(f"{PROG} sweep: error: {exc}", file=sys.stderr)
        return EXIT_MISSING
    counts = result.slopes["verdict"].value_counts()
    print(f"{len(result.slopes)} slopes ({', '.join(f'{n} {v}' for v, n in counts.items())}) over widths "
          f"{','.join(map(str, widths))} and {len(seeds)} seed(s)")
    for line in result.report()[:-1]:
        print(line, file=sys.stderr)
    say(args, f"the sweep's runs are in {args.out}/{RUNS_DIR}; its slopes in {args.out}/{SLOPES_NAME} and "
              f"its figure in {args.out}/{FIGURE_NAME}")
    return EXIT_OK if result.runs.ok else EXIT_FAILED


def add(sub: Any) -> None:
    """The ``sweep`` parser: --out, --widths, --seeds, the parallel options and every other RunConfig field."""
    p = subparser(sub, "sweep", "--out DIR --widths LIST [--model NAME] [--scheme SCHEME] [--seeds LIST] [options]",
                  "train a model at several widths and fit how each layer's statistics scale with the width",
                  "Run --model under --scheme at every width of --widths with every seed of --seeds into "
                  "DIR/runs/<name>, resumably as grid does (finished runs are skipped, unfinished ones "
                  "restarted, damaged ones redone). Then fit, per layer, quantity and recorded step, the slope "
                  "of log(statistic) on log(width) per seed, its 95% interval over seeds and a verdict "
                  "(width-stable, grows, shrinks, inconclusive), into DIR/slopes.csv, and draw the coordinate "
                  "check DIR/coord_check.png. Layers are matched across widths by name and role. Every width "
                  "is checked before the first run starts. Exit status 1 if a run failed.", command,
                  "varprobe sweep --model simple_cnn --scheme plain --widths 8,16,32,64 --seeds 0,1,2 "
                  "--steps 50 --out runs/sweep")
    p.add_argument("--out", required=True, type=path, metavar="DIR",
                   help="directory of the sweep: its runs (DIR/runs), slopes.csv and figure (required)")
    p.add_argument("--widths", required=True, type=list_of(positive_int, _WIDTHS_EXAMPLE), metavar="LIST",
                   help=f"comma-separated model widths, at least two, distinct, e.g. {_WIDTHS_EXAMPLE} (required)")
    p.add_argument("--seeds", type=list_of(field_parser("seed"), "0,1,2", "the default 0,1,2"), metavar="LIST",
                   help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: a tqdm bar on stderr where stderr is a terminal)")
    add_quiet(p)
    add_parallel(p)
    group = p.add_argument_group("run configuration, shared by every run of the sweep (--steps defaults to 50)")
    for option in RUN_OPTIONS:
        if option.field not in _AXES:
            option.add_to(group)
