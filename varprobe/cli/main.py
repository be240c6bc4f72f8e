"""The ``varprobe`` command line: ``run``, ``grid``, ``reproduce`` and ``plot``.

Every :class:`~varprobe.experiment.RunConfig` field is one option, declared once in
:data:`RUN_OPTIONS` (``--batch-size`` sets ``batch_size``, ...). Options left out keep the
RunConfig default, so the CLI and the Python API agree on every default.

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
import glob
import importlib
import itertools
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import __version__, record
from ..experiment.config import DATASETS, MODELS, QUANTITY_PRESETS, RunConfig, check_config
from ..experiment.device import DEVICE_CHOICES, check_device, resolve_device
from ..experiment.stop import Terminated, stop_signals
from ..layers import SCHEMES
from ..record import Run, RunLockedError
from .paths import directory_problem, file_problem

__all__ = ["main", "build_parser", "RUN_OPTIONS", "config_from_args", "FIGURE_EXTENSIONS", "PLOT_KINDS"]

PROG = "varprobe"
EXIT_OK, EXIT_MISSING, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_ERROR = 1
EXIT_FAILED = EXIT_ERROR  # a grid with a run that failed (see the module docstring)
DEBUG_ENV = "VARPROBE_DEBUG"
FIGURE_EXTENSIONS = (".png", ".svg", ".pdf")
PLOT_KINDS = ("spp", "heatmap", "curves", "shift", "transmission", "theory", "collapse", "decomposition")
_DEFAULTS = RunConfig()
#: What ``experiment.run`` and ``experiment.grid`` raise for an unusable ``--out``: a usage error.
_OUT_ERRORS = (FileExistsError, NotADirectoryError, RunLockedError)
#: What ``varprobe.record`` raises for a run directory whose meta.json is malformed (where it has one).
_RUN_FORMAT_ERRORS = tuple(e for e in (getattr(record, "RunFormatError", None),) if isinstance(e, type))


# -- argument types: each error names the bad value and what is valid -----------------------------
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _bounded(parse: Callable[[str], Any], ok: Callable[[Any], bool], valid_text: str,
             name: str) -> Callable[[str], Any]:
    """``parse``, then reject a value that fails ``ok`` with "{text!r} {valid_text}"."""
    def check(text: str) -> Any:
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} {valid_text}")
        return value
    check.__name__ = name  # argparse and _list_of name the type by it
    return check


_positive_int = _bounded(_int, lambda v: v >= 1, "is not a positive integer (valid: 1, 2, ...)", "_positive_int")
_nonneg_int = _bounded(_int, lambda v: v >= 0, "is not a non-negative integer (valid: 0, 1, ...)", "_nonneg_int")
_nonneg_float = _bounded(_float, lambda v: v >= 0, "is negative (valid: a number >= 0)", "_nonneg_float")
_positive_float = _bounded(_float, lambda v: v > 0, "is not positive (valid: a number > 0)", "_positive_float")


def _str(text: str) -> str:
    return text.strip()


def _list_of(item: Callable[[str], Any], example: str) -> Callable[[str], tuple]:
    """A comma-separated list of ``item`` values ("" is the empty list)."""
    def parse(text: str) -> tuple:
        if not text.strip():
            return ()
        out = []
        for part in text.split(","):
            try:
                if not part.strip():
                    raise argparse.ArgumentTypeError("empty item")
                out.append(item(part.strip()))
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(
                    f"bad item in list {text!r}: {exc}; expected a comma-separated list like {example}") from None
        return tuple(out)
    parse.__name__ = f"list of {getattr(item, '__name__', 'values').lstrip('_')}"
    return parse


def _device(text: str) -> str:
    try:
        check_device(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def _backend(text: str) -> str:
    from ..experiment.grid import BACKENDS
    if text not in BACKENDS:
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}; valid: {', '.join(BACKENDS)}")
    return text


def _figure_path(text: str) -> Path:
    suffix = Path(text).suffix.lower()
    if suffix not in FIGURE_EXTENSIONS:
        raise argparse.ArgumentTypeError(
            f"unsupported figure extension {suffix or '(none)'!r} in {text!r}; valid: {', '.join(FIGURE_EXTENSIONS)}")
    return Path(text)


# -- the RunConfig options ----------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One RunConfig field as a command-line option (``--field-name``, dest ``field``)."""

    field: str
    help: str
    type: Callable[[str], Any] | None = None  # None: an on/off flag (store_true)
    metavar: str | None = None
    default: str | None = None  # the default in words, where RunConfig's value needs explaining

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        if self.type is None:
            parser.add_argument(self.flag, dest=self.field, action="store_true",
                                help=f"{self.help} (default: off)")
            return
        default = self.default if self.default is not None else _words(getattr(_DEFAULTS, self.field))
        parser.add_argument(self.flag, dest=self.field, type=self.type, default=None,
                            metavar=self.metavar, help=f"{self.help} (default: {default})")


def _words(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return (f"{value:g}" if isinstance(value, float) else str(value)).replace("%", "%%")


RUN_OPTIONS: tuple[Option, ...] = (
    Option("model", f"network: {', '.join(MODELS)} (vgg is vgg_cifar, resnetN is resnet_cifar(N), resnet34 is "
                    "resnet34_cifar)", _str, "NAME"),
    Option("scheme", f"normalization scheme of every conv: {', '.join(SCHEMES)}", _str, "SCHEME"),
    Option("data", f"data set: {', '.join(DATASETS)} (digits: sklearn's 8x8 digits, bundled; synthetic: "
                   "labelled synthetic images; cifar10: a local copy in ./data/cifar-10-batches-py, never "
                   "downloaded)", _str, "NAME"),
    Option("size", "image side in pixels: digits 8, 16 or 32; cifar10 32; synthetic any", _positive_int, "PX",
           "8 for digits with simple_cnn, 32 for cifar10, else 16"),
    Option("channels", "image channels: 1 or 3 (digits: the grey channel repeated to 3); cifar10 3",
           _positive_int, "C", "1 for digits, else 3"),
    Option("width", "base channel width of the model", _positive_int, "CHANNELS", "the model's own"),
    Option("lr", "SGD learning rate, constant unless --lr-milestones", _float, "LR"),
    Option("batch_size", "mini-batch size, images per step", _int, "N"),
    Option("steps", "number of SGD steps (optimizer updates, not epochs)", _int, "N"),
    Option("seed", "seed of the initialisation, the train/test split and the batch order", _nonneg_int, "SEED"),
    Option("momentum", "SGD momentum", _nonneg_float, "M"),
    Option("weight_decay", "SGD weight decay (L2 coefficient), never applied to PWS alpha", _nonneg_float, "WD"),
    Option("lr_milestones", "comma-separated steps at which the learning rate is multiplied by 0.1, "
                            "e.g. 150,225", _list_of(_nonneg_int, "150,225"), "STEPS", "none: constant lr"),
    Option("gamma", "PWS gamma (scheme pws only; 0 allowed)", _float, "GAMMA",
           "the layer's own, 1e-3"),
    Option("gamma_mode", "how PWS reads --gamma: raw (gamma' = gamma) or equiv (gamma' = 2 gamma / fan)",
           _str, "MODE"),
    Option("freeze_alpha", "keep PWS alpha at its initial value (not trained)"),
    Option("init_alpha", "set PWS alpha from the first batch (varprobe.layers.init_alpha) before training"),
    Option("project_shift", "remove the per-filter mean of every conv weight's gradient before each SGD step: "
                            "the shift of the average gradient taken out, nothing else changed (any scheme)"),
    Option("every", "probe every K steps", _int, "K"),
    Option("flush_every", "write to disk every K recorded steps: a killed run keeps every step up to its "
                          "last write", _int, "K"),
    Option("quantities", f"what the probe records: {', '.join(QUANTITY_PRESETS)} (forward: activation "
                         "statistics, loss and lr only; faster)", _str, "PRESET"),
    Option("eval_steps", "comma-separated steps at which a fixed held-out batch (the first --eval-batch test "
                         "images) is probed in eval mode, before that step's update, e.g. 0,100,299",
           _list_of(_nonneg_int, "0,100,299"), "STEPS", "none"),
    Option("eval_batch", "size of the held-out batch probed at --eval-steps, in images", _int, "N"),
    Option("collapse_var", "stop the run as 'collapsed' when the variance of the logits over a batch exceeds "
                           "this bound (or the loss is not finite)", _positive_float, "VAR"),
    Option("threads", "torch CPU threads; runs with the same config, torch version and thread count are "
                      "bit-identical", _positive_int, "N", "torch's default"),
    Option("device", f"where the model, data and probe live: {', '.join(DEVICE_CHOICES)} (auto: CUDA when "
                     "available; in a parallel grid worker k uses GPU k mod n)", _device, "DEVICE"),
    Option("data_limit", "keep at most N training and N test images", _positive_int, "N", "all"),
    Option("synthetic_n", "number of images of --data synthetic", _positive_int, "N"),
)

#: The RunConfig fields that ``grid`` sweeps, and the plural option of each.
GRID_AXES = {"scheme": "schemes", "lr": "lrs", "batch_size": "batch_sizes", "seed": "seeds"}


def config_from_args(args: argparse.Namespace, **fixed: Any) -> RunConfig:
    """The RunConfig of parsed ``args`` (options not given keep RunConfig's defaults), with ``fixed``
    fields on top. Raises ValueError (from RunConfig) naming a bad value."""
    given = {o.field: getattr(args, o.field) for o in RUN_OPTIONS if hasattr(args, o.field)}
    return RunConfig(**{k: v for k, v in given.items() if v is not None and v is not False}, **fixed)


# -- subcommands ----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """``varprobe run``: one training run into ``--out``."""
    from ..experiment import run

    parser = args.parser
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    out = Path(args.out)
    if not args.overwrite and out.is_dir() and any(out.iterdir()):
        parser.error(f"run directory {out} already exists and is not empty; "
                     "pass --overwrite to replace it, or choose another --out")
    _check_out(out, parser)
    _check_data(config, parser)
    _check_device(config, parser)
    print(f"{PROG} run: {config.model}/{config.scheme} on {config.data}, {config.steps} steps -> {out}",
          file=sys.stderr)
    try:
        result = run(config, out, overwrite=args.overwrite)
    except _OUT_ERRORS as exc:
        parser.error(str(exc))
    print(_summary(result))
    return EXIT_OK


def cmd_grid(args: argparse.Namespace) -> int:
    """``varprobe grid``: schemes x lrs x batch sizes x seeds into ``--out/<name>``, resumable,
    serially or ``--jobs N`` at once (loky, or a Dask cluster)."""
    from ..experiment.grid import SchedulerError, grid

    parser = args.parser
    for field, plural in GRID_AXES.items():
        if getattr(args, plural) == ():
            parser.error(f"--{plural.replace('_', '-')} '' is empty; give at least one value, or leave it out "
                         f"for the default {getattr(_DEFAULTS, field)}")
    _check_parallel(args, parser)
    axes = {field: getattr(args, plural) or (getattr(_DEFAULTS, field),) for field, plural in GRID_AXES.items()}
    try:  # every config of the grid is validated before the first run starts
        base = config_from_args(args, **{field: values[0] for field, values in axes.items()})
        configs = [base.replace(**dict(zip(axes, combo))) for combo in itertools.product(*axes.values())]
    except ValueError as exc:
        parser.error(str(exc))
    _check_out(args.out, parser)
    _check_data(configs, parser)
    if args.backend != "dask":  # a Dask cluster's workers may have GPUs that this machine has not
        _check_device(base, parser)
    try:
        runs = grid(base, args.out, schemes=axes["scheme"], lrs=axes["lr"], batch_sizes=axes["batch_size"],
                    seeds=axes["seed"], progress=not args.no_progress, jobs=args.jobs, backend=args.backend,
                    scheduler=args.scheduler)
    except (*_OUT_ERRORS, SchedulerError, ValueError) as exc:
        parser.error(str(exc))
    except ImportError as exc:
        print(f"{PROG} grid: error: {exc}", file=sys.stderr)
        return EXIT_MISSING
    print(_table(runs))
    for line in runs.report():
        print(line, file=sys.stderr)
    return EXIT_OK if runs.ok else EXIT_FAILED


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``varprobe reproduce``: the experiments behind the paper's claims, into ``--out``."""
    reproduce = _optional("varprobe.experiment.claims", "reproduce", args.command)
    if reproduce is None:
        return EXIT_MISSING
    out = Path(args.out)
    _check_out(out, args.parser)
    reproduce(args.profile, out, args.seeds, jobs=args.jobs)
    written = [str(out / name) for name in ("claims.md", "claims.json") if (out / name).exists()]
    if written:
        print(f"wrote {' and '.join(written)}")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    """``varprobe plot``: a figure of run directories, by ``varprobe.plot.cli_plot(args)`` (which
    writes ``args.out`` and prints its path)."""
    problem = file_problem(args.out)
    if problem is not None:
        args.parser.error(f"--out {problem}")
    args.run_dirs = _run_dirs(args.run_dirs, args.parser)
    cli_plot = _optional("varprobe.plot", "cli_plot", args.command)
    if cli_plot is None:
        return EXIT_MISSING
    try:
        cli_plot(args)
    except (ValueError, FileNotFoundError) as exc:  # e.g. a kind that needs --quantity, a corrupt chunk
        args.parser.error(re.sub(r"\bskip_corrupt\s*=\s*True\b", "--skip-corrupt", str(exc)))
    return EXIT_OK


def _run_dirs(patterns: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """The run directories of ``patterns``: each an existing directory, or a glob (``*``, ``?``,
    ``[``; quoted, so the shell did not expand it) expanded here, sorted, to the directories it
    matches that hold a meta.json. A path that does not exist, or a glob that matches no run, is a
    usage error naming it."""
    dirs = []
    for pattern in patterns:
        if Path(pattern).is_dir():
            dirs.append(pattern)
            continue
        if Path(pattern).exists():
            parser.error(f"run directory {pattern!r} is not a directory; give a run directory written by run or grid")
        if not glob.has_magic(pattern):
            parser.error(f"run directory {pattern!r} not found")
        matches = sorted(glob.glob(pattern))
        runs = [m for m in matches if (Path(m) / "meta.json").is_file()]
        if not runs:
            seen = f" ({len(matches)} path(s) matched, none a run directory with a meta.json)" if matches else ""
            parser.error(f"RUN_DIR pattern {pattern!r} matches no run directory{seen}")
        dirs.extend(runs)
    return dirs


# -- helpers --------------------------------------------------------------------------------------
def _check_data(configs: RunConfig | Sequence[RunConfig], parser: argparse.ArgumentParser) -> None:
    """Load each config's data now (cached for the run) and build its model once on a dummy batch
    (``check_config``), so that a missing CIFAR-10 folder, a bad data option, a batch larger than
    the data or a model that cannot be built or cannot take the image size is a one-line usage
    error before anything starts."""
    for config in [configs] if isinstance(configs, RunConfig) else configs:
        try:
            check_config(config)
        except (FileNotFoundError, ValueError) as exc:
            parser.error(str(exc))


def _check_out(out: str | os.PathLike, parser: argparse.ArgumentParser) -> None:
    """A usage error naming ``--out`` where that directory cannot be used or created."""
    problem = directory_problem(out)
    if problem is not None:
        parser.error(f"--out {problem}")


def _check_device(config: RunConfig, parser: argparse.ArgumentParser) -> None:
    """Refuse, in one line, a device this machine does not have (e.g. cuda without a GPU)."""
    try:
        resolve_device(config.device)
    except ValueError as exc:
        parser.error(str(exc))


def _check_parallel(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--jobs, --backend and --scheduler of ``grid`` agree (each alone is checked by its type)."""
    if args.scheduler is not None and args.backend != "dask":
        parser.error(f"--scheduler {args.scheduler!r} needs --backend dask (got --backend {args.backend})")
    if args.backend == "dask" and not args.scheduler:
        parser.error("--backend dask needs --scheduler tcp://HOST:PORT, the address of a running Dask scheduler")
    if args.jobs is None and args.backend != "dask":
        args.jobs = 1


def _optional(module: str, name: str, command: str) -> Callable | None:
    """``module.name``, imported now; None (after a one-line error) where another part of varprobe
    that the subcommand needs is not there."""
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        found = None
    if found is None:
        print(f"{PROG} {command}: error: {module}.{name} is not available in this installation",
              file=sys.stderr)
    return found


def _number(value: Any, fmt: str) -> str:
    return "nan" if value is None else format(value, fmt)


def _summary(result: Run) -> str:
    res = result.meta.get("result") or {}
    status = result.status
    if res.get("collapsed_at") is not None:
        status += f" at step {res['collapsed_at']}"
    return (f"{status}  final loss {_number(res.get('final_loss'), '.4g')}  "
            f"test accuracy {_number(res.get('test_accuracy'), '.4f')}  run dir {result.path}")


def _table(runs: Sequence[Run]) -> str:
    rows = [("name", "status", "test acc")]
    for r in runs:
        res = r.meta.get("result") or {}
        acc = res.get("test_accuracy")
        rows.append((r.path.name, r.status, "-" if acc is None else f"{acc:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows)


# -- the parser -----------------------------------------------------------------------------------
class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _paragraphs(text: str, example: str | None = None) -> str:
    """A description: ``text`` wrapped, then ``example`` as is (the formatter keeps it unwrapped)."""
    out = textwrap.fill(text, width=88)
    return f"{out}\n\nexample:\n  {example}" if example else out


def _subparser(sub, name: str, usage: str, help: str, description: str, func,
               example: str | None = None) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=_paragraphs(description, example),
                       usage=f"%(prog)s {usage}", formatter_class=_Formatter)
    p.set_defaults(func=func, parser=p)
    _add_debug(p, default=argparse.SUPPRESS)  # given after the command, or before it: both count
    return p


def _add_debug(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help=f"on an internal error show the full traceback, not one line (default: off; "
                             f"{DEBUG_ENV}=1 does the same)")


def _add_run(sub) -> None:
    p = _subparser(sub, "run", "--out DIR [options]", "train one configured run into a run directory",
                   "Train one model with the probe attached; write the run directory (meta.json with the "
                   "config, status and result; the probe table with per-layer statistics, loss and lr) "
                   "and print a one-line summary: status, final loss, test accuracy, run dir.", cmd_run,
                   "varprobe run --model resnet20 --scheme pws --data digits --lr 0.1 --batch-size 64 "
                   "--steps 300 --seed 0 --out runs/pws")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory to write (required)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it already holds a run (default: off: refuse)")
    group = p.add_argument_group("run configuration")
    for option in RUN_OPTIONS:
        option.add_to(group)


def _add_grid(sub) -> None:
    p = _subparser(sub, "grid", "--out DIR [--schemes LIST] [--lrs LIST] [--batch-sizes LIST] [--seeds LIST] "
                   "[options]", "run schemes x learning rates x batch sizes x seeds, resumably",
                   "Run every combination of --schemes, --lrs, --batch-sizes and --seeds, one after the "
                   "other, into DIR/<name> (name: the config fields that differ from the defaults), then "
                   "print a table of the runs (name, status, test accuracy). Rerunning skips finished "
                   "and collapsed runs, restarts unfinished ones and redoes damaged ones (reported in one "
                   "line); duplicate configs run once; a run that another live process holds is skipped "
                   "and listed at the end. --jobs N runs N at once. Every config is checked before the "
                   "first run starts. Exit status 1 if a run failed.", cmd_grid,
                   "varprobe grid --schemes plain,bn,pws --lrs 0.05,0.2 --batch-sizes 64 --seeds 0,1,2 "
                   "--out runs/grid")
    p.add_argument("--out", required=True, metavar="DIR", help="root directory of the grid's runs (required)")
    p.add_argument("--schemes", type=_list_of(_str, "plain,bn,pws"), metavar="LIST",
                   help=f"comma-separated schemes, of: {', '.join(SCHEMES)} (default: {_DEFAULTS.scheme})")
    p.add_argument("--lrs", type=_list_of(_float, "0.05,0.2"), metavar="LIST",
                   help=f"comma-separated SGD learning rates (default: {_DEFAULTS.lr})")
    p.add_argument("--batch-sizes", dest="batch_sizes", type=_list_of(_int, "64,128"), metavar="LIST",
                   help=f"comma-separated mini-batch sizes, images per step (default: {_DEFAULTS.batch_size})")
    p.add_argument("--seeds", type=_list_of(_nonneg_int, "0,1,2"), metavar="LIST",
                   help=f"comma-separated seeds (default: {_DEFAULTS.seed})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: a tqdm bar on stderr)")
    p.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                   help="runs at once, one worker process each, torch threads per run: cores // N unless "
                        "--threads (default: 1, in this process; with --backend dask: every worker thread of "
                        "the cluster)")
    p.add_argument("--backend", type=_backend, default="loky", metavar="NAME",
                   help="where the workers run: loky (this machine) or dask (a Dask cluster, needs "
                        "--scheduler and pip install 'varprobe[cluster]') (default: %(default)s)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="the Dask scheduler, e.g. tcp://HOST:8786, for --backend dask only (default: none)")
    group = p.add_argument_group("run configuration, shared by every run of the grid")
    for option in RUN_OPTIONS:
        if option.field not in GRID_AXES:
            option.add_to(group)


def _add_reproduce(sub) -> None:
    p = _subparser(sub, "reproduce", "[--quick | --standard | --full] [--out DIR] [--seeds N]",
                   "check the paper's claims numerically; write claims.md and claims.json",
                   "Run the experiments behind every claim of the paper and write DIR/claims.md (claim, "
                   "quantity, expected, measured with a 95% confidence interval over seeds, verdict), "
                   "DIR/claims.json and the figures next to them.", cmd_reproduce)
    profile = p.add_mutually_exclusive_group()
    profile.add_argument("--quick", dest="profile", action="store_const", const="quick",
                         help="small scale: small nets on digits or small synthetic images, a few hundred "
                              "steps, 3 seeds; meant to take at most about 5 minutes on a 2-core CPU with --jobs 2 "
                              "(default: on)")
    profile.add_argument("--standard", dest="profile", action="store_const", const="standard",
                         help="the paper's setting at laptop scale: resnet20 with the authors' layouts on digits "
                              "at their native 8px in 3 channels, batch 64, 300 steps, lrs 0.01/0.1/0.5, 6 seeds, "
                              "every attribution control at the large lrs; about 30 minutes with --jobs 2 on a "
                              "2-core CPU; prints its estimated time first (default: off)")
    profile.add_argument("--full", dest="profile", action="store_const", const="full",
                         help="the paper's settings (resnet20 and vgg on CIFAR-10 when a local copy is "
                              "present, synthetic 32x32 otherwise), for a bigger machine; prints its "
                              "estimated time first (default: off)")
    p.set_defaults(profile="quick")
    p.add_argument("--out", default="runs/reproduce", metavar="DIR",
                   help="directory of the report, figures and runs (default: %(default)s)")
    p.add_argument("--seeds", type=_positive_int, default=None, metavar="N",
                   help="number of seeds per experiment (default: the profile's, 3 for --quick)")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                   help="training runs at once, one worker process each (default: %(default)s)")


def _add_plot(sub) -> None:
    p = _subparser(sub, "plot", "RUN_DIR [RUN_DIR ...] --kind KIND [--quantity NAME] --out FILE",
                   "draw a figure of one or more run directories",
                   "Draw a figure of the runs in RUN_DIR... (by varprobe.plot) into FILE; the format "
                   f"follows FILE's extension: {', '.join(FIGURE_EXTENSIONS)}.", cmd_plot)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by run or grid")
    p.add_argument("--kind", choices=PLOT_KINDS, required=True, metavar="KIND",
                   help=f"figure (required): {', '.join(PLOT_KINDS)}")
    p.add_argument("--quantity", metavar="NAME", default=None,
                   help="probe quantity to show, for the kinds that take one (heatmap, curves), e.g. out.var "
                        "(default: none)")
    p.add_argument("--out", required=True, type=_figure_path, metavar="FILE",
                   help=f"figure file to write (required); {', '.join(FIGURE_EXTENSIONS)} by extension")
    p.add_argument("--skip-corrupt", dest="skip_corrupt", action="store_true",
                   help="skip chunks that cannot be read (truncated, corrupt or missing), with a warning "
                        "naming each, and draw the rest (default: off: refuse, naming the file)")


def build_parser() -> argparse.ArgumentParser:
    """The ``varprobe`` argument parser; each subcommand sets ``func`` and ``parser``."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description="varprobe: variance transmission in PyTorch networks (BN vs WN vs PWS).",
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_debug(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run(sub)
    _add_grid(sub)
    _add_reproduce(sub)
    _add_plot(sub)
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
        except _RUN_FORMAT_ERRORS as exc:  # a damaged run directory the user pointed at: their input
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
