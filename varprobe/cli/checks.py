"""Checks made before anything starts: each turns what would fail later into one usage error
(``parser.error``: the usage line, one line naming the value and what would work, exit 2)."""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from ..experiment.config import RunConfig, check_config
from ..experiment.device import resolve_device
from ..record import RunLockedError
from .arguments import backend, jobs
from .paths import directory_problem

__all__ = ["check_data", "check_out", "check_device", "add_parallel", "check_parallel", "OUT_ERRORS"]

#: What ``experiment.run`` and ``experiment.grid`` raise for an unusable ``--out``: a usage error.
OUT_ERRORS = (FileExistsError, NotADirectoryError, RunLockedError)


def check_data(configs: RunConfig | Sequence[RunConfig], parser: argparse.ArgumentParser) -> None:
    """Load each config's data now (cached for the run) and build its model once on a dummy batch
    (``check_config``), so that a missing CIFAR-10 folder, a bad data option, a batch larger than
    the data or a model that cannot be built or cannot take the image size is a one-line usage
    error before anything starts; so is data too large for this machine's memory (e.g. --size
    99999999), naming the data, its size and the images."""
    for config in [configs] if isinstance(configs, RunConfig) else configs:
        try:
            check_config(config)
        except (FileNotFoundError, ValueError) as exc:
            parser.error(str(exc))
        except (MemoryError, RuntimeError) as exc:
            if not isinstance(exc, MemoryError) and "allocate" not in str(exc):
                raise
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            parser.error(f"data {config.data!r} of {config.image_size}x{config.image_size} images does not fit in "
                         f"memory ({reason}); choose a smaller --size, --synthetic-n or --data-limit")


def check_out(out: str | os.PathLike, parser: argparse.ArgumentParser) -> None:
    """A usage error naming ``--out`` where that directory cannot be used or created."""
    problem = directory_problem(out)
    if problem is not None:
        parser.error(f"--out {problem}")


def check_device(config: RunConfig, parser: argparse.ArgumentParser) -> None:
    """Refuse, in one line, a device this machine does not have (e.g. cuda without a GPU)."""
    try:
        resolve_device(config.device)
    except ValueError as exc:
        parser.error(str(exc))


def add_parallel(parser: argparse.ArgumentParser, per_run: str = "") -> None:
    """--jobs, --backend and --scheduler, as ``grid`` and ``sweep`` take them (checked together by
    :func:`check_parallel`); ``per_run``: what --jobs also sets per run, said in its help."""
    parser.add_argument("--jobs", type=jobs, default=None, metavar="N",
                        help=f"runs at once (at most 1024), one worker process each{per_run} (default: 1, in this "
                             "process; with --backend dask: every worker thread of the cluster)")
    parser.add_argument("--backend", type=backend, default="loky", metavar="NAME",
                        help="where the workers run: loky (this machine) or dask (a Dask cluster, needs "
                             "--scheduler and pip install 'varprobe[cluster]') (default: %(default)s)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="the Dask scheduler, e.g. tcp://HOST:8786, for --backend dask only (default: none)")


def check_parallel(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--jobs, --backend and --scheduler (:func:`add_parallel`) agree (each alone is checked by its type)."""
    if args.scheduler is not None and args.backend != "dask":
        parser.error(f"--scheduler {args.scheduler!r} needs --backend dask (got --backend {args.backend})")
    if args.backend == "dask" and not args.scheduler:
        parser.error("--backend dask needs --scheduler tcp://HOST:PORT, the address of a running Dask scheduler")
    if args.jobs is None and args.backend != "dask":
        args.jobs = 1
