"""Grids of runs: schemes x learning rates x batch sizes x seeds, resumable, serial or in parallel.

Each config of a grid is one run directory ``root/<run_name(config)>``. What a grid does with each:

* **new** (no directory, or an empty one): run it.
* **done** (status "finished" or "collapsed", every chunk readable): skipped, loaded.
* **unfinished** (status "failed", or "running" with no live writer: a killed run): redone from
  scratch (``overwrite=True``).
* **damaged** (a missing or corrupt chunk, a killed start): reported in one line and redone, when
  ``record.check_replaceable`` shows it to be a varprobe run; one that cannot be shown to be a run
  (an unreadable ``meta.json``) is never replaced: it is reported as that run's error.
* **held** (another live process writes it, or another grid's worker has claimed it): skipped
  and reported; the grid goes on with the other configs and never runs one config twice.
* **foreign** (a non-empty directory that is no varprobe run, or a run of a newer format): not
  touched, reported as an error.

Nothing is written into the root but the run directories of its configs, each of which says it is
varprobe's by its own ``meta.json``. The root gets no mark of its own (``record.files.MARK_NAME``):
the runs are its only content, and loops such as ``for d in root.iterdir(): load_run(d)`` keep
working.

A run that fails or collapses never stops the grid: its status says why. Workers (loky processes,
or Dask workers) return small dicts; results travel only through run directories. A worker that
is killed leaves its run "running" with no writer, and the next invocation redoes it.

While a worker runs a config it holds an exclusive ``flock`` on the run directory itself (the
directory's inode survives an overwrite, unlike the files in it), so two grids over one root
agree on who runs what; the run's own ``.lock`` still guards every writer.
"""
from __future__ import annotations

import errno
import itertools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from tqdm import tqdm

from ..record import Run, RunLockedError, load_run
from ..record.lock import describe_holder, try_flock, writer_alive
from ..record.meta import FORMAT_VERSION, enclosing_run, read_meta
from ..record.layout import REPLACING_NAME
from ..record.replace import check_replaceable
from .config import RunConfig
from .progress import progress_bar
from .runner import DONE, Builder, run, run_name

__all__ = ["grid", "grid_configs", "GridResult", "BACKENDS", "SchedulerError", "default_threads"]

BACKENDS = ("loky", "dask")
#: Seconds to wait for a Dask scheduler before giving up (nothing is started then).
SCHEDULER_TIMEOUT_S = 5
_FAILED = ("failed", "error", "interrupted")  # outcomes that make a grid's exit code non-zero


class SchedulerError(ConnectionError):
    """The Dask scheduler of ``grid(backend="dask", scheduler=...)`` cannot be reached."""


@dataclass(frozen=True)
class _State:
    kind: str  # new, done, unfinished, damaged, held, foreign
    reason: str = ""
    run: Run | None = None


def grid_configs(base: RunConfig, schemes: Iterable[str] | None = None, lrs: Iterable[float] | None = None,
                 batch_sizes: Iterable[int] | None = None, seeds: Iterable[int] | None = None, *,
                 widths: Iterable[int] | None = None) -> tuple[list[RunConfig], int]:
    """The distinct configs of a grid, in product order (scheme slowest, then lr, batch size, width,
    seed fastest), and how many duplicates were dropped. Duplicates are equal configs (by value: lr
    0.1, 0.10 and 1e-1 are one). An axis left as None takes ``base``'s value; an empty axis is
    refused (ValueError)."""
    axes = {"scheme": schemes, "lr": lrs, "batch_size": batch_sizes, "width": widths, "seed": seeds}
    values = {}
    for field, given in axes.items():
        values[field] = [getattr(base, field)] if given is None else list(given)
        if not values[field]:
            raise ValueError(f"grid: {field} values are empty; give at least one, or None for the base "
                             f"config's {getattr(base, field)!r}")
    product = [base.replace(**dict(zip(values, combo))) for combo in itertools.product(*values.values())]
    configs = list(dict.fromkeys(product))
    names = [run_name(c) for c in configs]
    if len(set(names)) != len(names):  # two different configs would share one directory
        clash = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"grid: two different configs map to the run directory name {clash!r}")
    return configs, len(product) - len(configs)


def default_threads(jobs: int) -> int:
    """Torch threads per worker of a grid with ``jobs`` workers on this machine: physical cores
    (as joblib counts them, cgroup quotas included) // jobs, at least 1."""
    import joblib
    return max(1, joblib.cpu_count(only_physical_cores=True) // jobs)


class GridResult(list):
    """The runs of a grid (a ``list`` of :class:`Run`, in config order: every distinct config whose
    directory can be read, including runs held by another process as they are now), and what
    happened to each config.

    Attributes:
        outcomes: One dict per distinct config, in config order: ``name``, ``status`` (the run's
            status, "finished", "collapsed" or "failed", or "held": skipped, another live process
            writes it; "error": it could not run, e.g. a foreign directory in its place;
            "interrupted": its worker died), ``ran`` (whether this invocation trained it) and
            ``message`` (why, in one line; "" when there is nothing to say).
        duplicates: Configs dropped as duplicates of an earlier one.
        root: The grid's root directory.
    """

    def __init__(self, runs: list[Run], outcomes: list[dict[str, Any]], duplicates: int, root: Path) -> None:
        super().__init__(runs)
        self.outcomes, self.duplicates, self.root = outcomes, duplicates, root

    @property
    def held(self) -> list[str]:
        """Names of the runs skipped because another live process holds them."""
        return [o["name"] for o in self.outcomes if o["status"] == "held"]

    @property
    def failed(self) -> list[str]:
        """Names of the runs that failed, could not run, or whose worker died."""
        return [o["name"] for o in self.outcomes if o["status"] in _FAILED]

    @property
    def ok(self) -> bool:
        """True when nothing failed to run (runs held elsewhere do not count as failures)."""
        return not self.failed

    def report(self) -> list[str]:
        """The end-of-grid summary lines: duplicates dropped, runs held elsewhere, failures."""
        lines = []
        if self.duplicates:
            lines.append(f"grid: dropped {self.duplicates} duplicate config(s)")
        if self.held:
            lines.append(f"grid: skipped {len(self.held)} run(s) held by another live process: "
                         f"{', '.join(self.held)}; rerun the grid once it ends to collect them")
        for o in self.outcomes:
            if o["status"] in _FAILED:
                lines.append(f"grid: {o['name']}: {o['status']}: {o['message']}")
        return lines


def grid(base: RunConfig, root: str | os.PathLike, *, schemes: Iterable[str] | None = None,
         lrs: Iterable[float] | None = None, batch_sizes: Iterable[int] | None = None,
         seeds: Iterable[int] | None = None, progress: bool = True, jobs: int | None = 1,
         backend: str = "loky", scheduler: str | None = None,
         log: Callable[[str], None] | None = None, widths: Iterable[int] | None = None,
         build: Builder | None = None) -> GridResult:
    """Run schemes x learning rates x batch sizes x widths x seeds (each defaulting to ``base``'s
    value; an empty one is refused) into ``root/<name>``, resumably (see the module docstring for
    what is skipped, redone and reported). Duplicate configs run once.

    Args:
        jobs: Runs at once. 1 (default): one after the other in this process. N > 1: one loky worker
            process per run, N at a time. With ``backend="dask"``: tasks in flight on the cluster
            (None: as many as the cluster has worker threads).
        backend: "loky" (this machine) or "dask" (a ``distributed`` cluster, through joblib's dask
            backend; needs ``pip install 'varprobe[cluster]'``).
        scheduler: The Dask scheduler's address, e.g. ``tcp://HOST:8786`` (``backend="dask"`` only).
            Unreachable within ``SCHEDULER_TIMEOUT_S`` seconds: :class:`SchedulerError`, before any
            run starts.
        progress: One tqdm bar over the runs (none per worker).
        log: Where one-line reports go (a damaged run being redone); default: stderr.
        widths: Model widths (``RunConfig.width``), the axis of ``varprobe.experiment.sweep``.
        build: Builds each run's model instead of ``build_model`` (``runner.run``'s ``build``); it
            travels to the workers, so it must pickle (cloudpickle: functions and closures do). A
            run's name does not say which builder made it: a root holds the runs of one builder.

    Threads: a config with ``threads`` set uses that many; otherwise each run is pinned to
    :func:`default_threads` (cores // jobs; on Dask, the worker host's cores // the Dask worker
    threads on that host). The count used is in each run's ``meta.json`` (``threads``). Runs with
    equal configs and thread counts are bit-identical whatever the jobs or backend.

    Returns:
        A :class:`GridResult`: the runs, and ``outcomes``/``held``/``failed``/``report()``.

    Raises:
        ValueError: bad ``jobs``, ``backend`` or ``scheduler``, or an empty axis (nothing started).
        SchedulerError: the scheduler cannot be reached (nothing started).
        ImportError: ``backend="dask"`` without ``distributed`` installed (names the extra).
    """
    configs, duplicates = grid_configs(base, schemes, lrs, batch_sizes, seeds, widths=widths)
    _check_parallel(jobs, backend, scheduler)
    say = log or (lambda line: tqdm.write(line, file=sys.stderr))
    root = Path(root)
    inside = enclosing_run(root)
    if inside is not None:
        raise FileExistsError(f"grid root {root} is {'' if inside == Path(os.path.abspath(root)) else 'inside '}"
                              f"the varprobe run {inside}, which holds only the run format's files; "
                              "choose a directory outside it")
    names = [run_name(c) for c in configs]
    outcomes: dict[str, dict[str, Any]] = {}
    loaded: dict[str, Run] = {}
    todo: list[tuple[RunConfig, str, bool]] = []
    for config, name in zip(configs, names):
        state = _inspect(root / name)
        if state.kind == "done":
            loaded[name] = state.run
            outcomes[name] = _outcome(name, state.run.status, False)
        elif state.kind == "held":
            outcomes[name] = _outcome(name, "held", False, state.reason)
        elif state.kind == "foreign":
            outcomes[name] = _outcome(name, "error", False, state.reason)
        else:
            if state.kind == "damaged":
                say(f"grid: run {root / name} is damaged ({state.reason}); redoing it")
            todo.append((config, name, state.kind != "new"))

    bar = progress_bar(len(configs), "grid", "run", enabled=progress, initial=len(configs) - len(todo))
    try:
        for result in _execute(todo, root, jobs, backend, scheduler, build):
            outcomes[result["name"]] = result
            bar.set_postfix_str(result["name"][-40:])
            bar.update(1)
    finally:
        bar.close()

    runs = []
    for name in names:
        if name not in loaded:
            try:
                loaded[name] = load_run(root / name)
            except (FileNotFoundError, ValueError):
                continue
        runs.append(loaded[name])
    return GridResult(runs, [outcomes[n] for n in names], duplicates, root)


# -- the parent: what to run, and where -----------------------------------------------------------
def _check_parallel(jobs: int | None, backend: str, scheduler: str | None) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if jobs is None and backend != "dask":
        raise ValueError("jobs=None (as many as the cluster runs) needs backend='dask'; give jobs >= 1")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    if scheduler is not None and backend != "dask":
        raise ValueError(f"scheduler {scheduler!r} needs backend='dask' (got backend {backend!r})")
    if backend == "dask" and not scheduler:
        raise ValueError("backend 'dask' needs scheduler='tcp://HOST:PORT', the address of a running "
                         "Dask scheduler")


def _outcome(name: str, status: str, ran: bool, message: str = "") -> dict[str, Any]:
    return {"name": name, "status": status, "ran": ran, "message": message}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _inspect(path: Path) -> _State:
    """What a grid should do with the run directory ``path`` (module docstring)."""
    state = _classify(path)
    if state.kind == "damaged":  # redone only if it can be shown to be a run (never a user's folder)
        try:
            check_replaceable(path)
        except FileExistsError as exc:
            return _State("foreign", f"{path} is damaged ({state.reason}) and is not replaced: {exc}")
    return state


def _classify(path: Path) -> _State:
    if not path.exists():
        return _State("new")
    if not path.is_dir():
        return _State("foreign", f"{path} exists and is not a directory")
    entries = [e.name for e in os.scandir(path)]
    if writer_alive(path) is True:
        return _State("held", f"written by another live process{describe_holder(path)}")
    if not entries:
        return _State("new")
    if entries == [".lock"]:
        return _State("unfinished", "a lock file only")
    try:
        meta = read_meta(path)
    except FileNotFoundError:
        if REPLACING_NAME in entries:
            return _State("damaged", f"a replacement of {path} was cut short")
        if "stats" in entries:
            return _State("damaged", f"no meta.json in {path}")
        return _State("foreign", f"{path} is not empty and is not a varprobe run directory; move it away "
                                 "or choose another root")
    except ValueError as exc:
        return _State("damaged", str(exc).splitlines()[0])
    version = meta.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        return _State("foreign", f"{path} was written by a newer varprobe (format version {version}, this "
                                 f"one reads {FORMAT_VERSION}); not replaced")
    try:
        loaded = load_run(path)
    except (FileNotFoundError, ValueError) as exc:
        return _State("damaged", str(exc).splitlines()[0].removesuffix(" (pass skip_corrupt=True to load the rest)"))
    if loaded.status in DONE:
        return _State("done", run=loaded)
    return _State("unfinished", loaded.status)


def _execute(todo: list[tuple[RunConfig, str, bool]], root: Path, jobs: int | None, backend: str,
             scheduler: str | None, build: Builder | None = None):
    """Yield one outcome dict per config of ``todo``, in completion order."""
    if not todo:
        return
    if backend == "loky" and jobs == 1:  # in this process: cheap, and Ctrl-C stops it at once
        before = torch.get_num_threads()
        try:
            for config, name, replace in todo:
                yield _task(config, str(root / name), replace, default_threads(1), build)
        finally:
            torch.set_num_threads(before)
        return
    from joblib import Parallel, delayed, parallel_config

    if backend == "loky":
        yield from _loky(todo, root, jobs, default_threads(jobs), build)
        return
    client = _connect(scheduler)
    try:
        threads = _dask_threads(client)
        with parallel_config(backend="dask", client=client):
            tasks = (delayed(_task)(c, str(root / n), r, threads, build) for c, n, r in todo)
            yield from Parallel(n_jobs=jobs or -1, return_as="generator_unordered")(tasks)
    finally:
        client.close()


def _loky(todo: list[tuple[RunConfig, str, bool]], root: Path, jobs: int, threads: int, build: Builder | None = None):
    """Loky workers, ``jobs`` at a time. A worker that dies (SIGKILL, out of memory) breaks joblib's
    pool: the runs it had started are reported "interrupted" (redone on the next invocation) and the
    configs not yet started go on in a fresh pool."""
    from joblib import Parallel, delayed
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    pending = {name: (config, replace) for config, name, replace in todo}
    while pending:
        tasks = [delayed(_task)(c, str(root / n), r, threads, build) for n, (c, r) in pending.items()]
        try:
            for result in Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")(tasks):
                del pending[result["name"]]
                yield result
        except TerminatedWorkerError as exc:
            for name in list(pending):
                state = _inspect(root / name)
                if state.kind == "new":
                    continue  # not started: goes on in the next pool
                del pending[name]
                yield _outcome(name, "interrupted", True, "its worker process died "
                               f"({_one_line(exc)[:120]}); rerun the grid to redo it")


def _connect(scheduler: str):
    try:
        import distributed
    except ImportError as exc:
        raise ImportError("backend 'dask' needs dask.distributed: pip install 'varprobe[cluster]'") from exc
    try:
        return distributed.Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise SchedulerError(f"cannot reach the Dask scheduler {scheduler!r} within {SCHEDULER_TIMEOUT_S} s "
                             f"({_one_line(exc)[:200]}); start it, or check the address (tcp://HOST:PORT)") from None


def _dask_threads(client) -> dict[str, int]:
    """Per worker host: the Dask worker threads on it (tasks that can run there at once)."""
    per_host: dict[str, int] = {}
    for info in client.scheduler_info(n_workers=-1)["workers"].values():
        host = info.get("host", "")
        per_host[host] = per_host.get(host, 0) + int(info.get("nthreads", 1))
    return per_host


# -- the worker: one config ---------------------------------------------------------------------------
def _task(config: RunConfig, path: str, replace: bool, threads: int | dict[str, int],
          build: Builder | None = None) -> dict[str, Any]:
    """Run one config into ``path`` (in a worker process, or in the grid's own). Returns its outcome
    dict; never raises for a run that fails (its status, and the one-line message, say why)."""
    run_dir = Path(path)
    name = run_dir.name
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _outcome(name, "error", False, _one_line(exc))
    claim = _claim(run_dir)
    if claim is None:
        return _outcome(name, "held", False, "claimed by another grid's worker")
    try:
        state = _inspect(run_dir)  # again, now that this worker holds the claim
        if state.kind == "done":
            return _outcome(name, state.run.status, False, "finished by another process meanwhile")
        if state.kind in ("held", "foreign"):
            return _outcome(name, "held" if state.kind == "held" else "error", False, state.reason)
        if config.threads is None:
            torch.set_num_threads(_threads_here(threads))
        try:
            result = run(config, run_dir, overwrite=replace or state.kind != "new", build=build)
        except RunLockedError as exc:
            return _outcome(name, "held", False, _one_line(exc))
        except Exception as exc:  # a failed run never stops the grid; its meta.json says why too
            return _outcome(name, "failed", True, _one_line(exc))
        message = ""
        if result.status == "collapsed":
            message = f"collapsed at step {(result.meta.get('result') or {}).get('collapsed_at')}"
        return _outcome(name, result.status, True, message)
    finally:
        os.close(claim)
        if created:
            try:
                run_dir.rmdir()  # only an empty directory: one this worker made and never used
            except OSError:
                pass


def _threads_here(threads: int | dict[str, int]) -> int:
    if isinstance(threads, int):
        return threads
    from distributed import get_worker
    host = get_worker().address.rsplit("://", 1)[-1].rsplit(":", 1)[0]
    return max(1, default_threads(1) // max(1, threads.get(host, 1)))


def _claim(run_dir: Path) -> int | None:
    """An exclusive flock on the directory itself (its descriptor), or None when another process
    holds it. Where the filesystem cannot lock directories, no claim is taken (-> a descriptor all
    the same; the run's own .lock still refuses a second writer)."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        taken = try_flock(fd, unsupported=(errno.EBADF,))
    except OSError:
        os.close(fd)
        raise
    if taken is False:
        os.close(fd)
        return None
    return fd
