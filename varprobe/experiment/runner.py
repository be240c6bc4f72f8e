"""Run one configured training experiment into a run directory; run grids of them, resumably."""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..layers import PWSConv2d, init_alpha
from ..probe import Probe
from ..record import Run, load_run
from .config import RunConfig, build_model, load_data
from .projection import project_filter_mean_
from .stop import deferred, error_of
from .train import accuracy, sgd

__all__ = ["run", "grid", "run_name", "load_model", "DONE"]

DONE = ("finished", "collapsed")  # statuses a grid does not rerun
MODEL_FILE = "model.pt"  # the final state_dict, beside meta.json


def run(config: RunConfig, out: str | os.PathLike, *, overwrite: bool = False) -> Run:
    """Train ``config``'s model on its data with a probe attached, writing ``out`` as it goes.

    The run directory holds the probe table (per-layer statistics, and ``loss``/``lr`` at every
    recorded step), and ``meta.json`` with the config, the status ("finished", "collapsed" or
    "failed") and ``result``: final training loss, train and test accuracy, and ``collapsed_at``
    (the step whose loss was non-finite or whose logit variance exceeded ``config.collapse_var``;
    the run stops there, and everything recorded up to that step is kept). The final weights are
    saved as ``model.pt`` (a state_dict; rebuild the model with ``load_model(run)``).
    """
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    split = load_data(config.data, config.image_size, config.seed, config.data_limit, config.synthetic_n)
    torch.manual_seed(config.seed)
    model = build_model(config, split.in_channels, split.num_classes)
    batches = split.batches(config.batch_size, config.seed)
    first = next(batches)
    if config.init_alpha:
        init_alpha(model, first[0])
    if config.freeze_alpha:
        for m in model.modules():
            if isinstance(m, PWSConv2d):
                m.alpha.requires_grad_(False)
    opt = sgd(model, config.lr, config.momentum, config.weight_decay)
    held_out = split.x_test[:config.eval_batch]
    eval_steps = set(config.eval_steps)
    collapsed_at, last_loss = None, math.nan
    probe = Probe(model, every=config.every, quantities=config.quantities, out=out, flush_every=config.flush_every,
                  meta=config.to_dict(), overwrite=overwrite)
    model.train()
    try:
        with deferred():  # the run directory is created whole, or not at all
            probe.attach()
        for step, (x, y) in enumerate(itertools.chain([first], batches)):
            if step >= config.steps:
                break
            if step in eval_steps:
                model.eval()
                with torch.no_grad():
                    model(held_out)
                model.train()
            lr = config.lr * 0.1 ** sum(step >= m for m in config.lr_milestones)
            for group in opt.param_groups:
                group["lr"] = lr
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            if config.project_shift:
                project_filter_mean_(model)
            with deferred():  # a stop signal waits for the step to be recorded (and flushed)
                probe.step(loss=loss, lr=lr)
            last_loss = float(loss.detach())
            if not math.isfinite(last_loss) or not float(logits.detach().var()) <= config.collapse_var:
                collapsed_at = step
                break
            opt.step()
            opt.zero_grad(set_to_none=True)
        with deferred():
            probe.remove()  # the accuracy forwards below are not part of the record
            torch.save(model.state_dict(), Path(out) / MODEL_FILE)
        n_train = min(len(split.x_train), 2048)
        result = {"final_loss": last_loss, "collapsed_at": collapsed_at,
                  "train_accuracy": accuracy(model, split.x_train[:n_train], split.y_train[:n_train]),
                  "test_accuracy": accuracy(model, split.x_test, split.y_test)}
        with deferred():
            probe.close("collapsed" if collapsed_at is not None else "finished", result=result)
    except BaseException as exc:
        with deferred():
            _close_failed(probe, exc)
        raise
    return load_run(out)


def _close_failed(probe: Probe, exc: BaseException) -> None:
    """Flush what was recorded, mark the run "failed" with ``exc`` (``error``: its type, or the
    signal's name) and release the lock. A second attempt follows a failed first one: the first
    may fail writing the buffered steps (a full disk), the second then only marks the run and
    releases the lock. What cannot be written is added to ``exc`` as a note, never raised over it."""
    for attempt in (1, 2):
        try:
            probe.close("failed", error=error_of(exc))
            return
        except Exception as close_exc:  # never mask the run's own exception
            if attempt == 2:
                exc.add_note(f"the run could not be marked failed: {close_exc}")


def load_model(run_: Run) -> torch.nn.Module:
    """The final model of a run, rebuilt from its config and ``model.pt``, in eval mode."""
    config = RunConfig.from_dict(run_.meta["config"])
    split = load_data(config.data, config.image_size, config.seed, config.data_limit, config.synthetic_n)
    model = build_model(config, split.in_channels, split.num_classes)
    model.load_state_dict(torch.load(Path(run_.path) / MODEL_FILE, weights_only=True))
    return model.eval()


def run_name(config: RunConfig, base: RunConfig | None = None) -> str:
    """A directory name from the fields of ``config`` that differ from ``base`` (default config)."""
    base = base or RunConfig()
    diff = [(k, v) for k, v in config.to_dict().items() if v != base.to_dict()[k]]
    text = lambda v: "_".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)  # noqa: E731
    return "-".join(f"{k}={text(v)}" for k, v in diff).replace("/", "_").replace(" ", "") or "default"


def grid(base: RunConfig, root: str | os.PathLike, *, schemes: Iterable[str] | None = None,
         lrs: Iterable[float] | None = None, batch_sizes: Iterable[int] | None = None,
         seeds: Iterable[int] | None = None, progress: bool = True) -> list[Run]:
    """Run schemes x learning rates x batch sizes x seeds (each defaulting to ``base``'s value),
    one after the other, into ``root/<name>``. Rerunning skips runs whose status is finished or
    collapsed and restarts any other (a run killed mid-way is redone from scratch)."""
    configs = [base.replace(scheme=s, lr=lr, batch_size=b, seed=seed) for s, lr, b, seed in itertools.product(
        schemes or [base.scheme], lrs or [base.lr], batch_sizes or [base.batch_size], seeds or [base.seed])]
    runs = []
    bar = tqdm(configs, desc="grid", unit="run", disable=not progress)
    for config in bar:
        path = Path(root) / run_name(config)
        bar.set_postfix_str(path.name[-40:])
        existing = _status(path)
        if existing in DONE:
            runs.append(load_run(path))
            continue
        runs.append(run(config, path, overwrite=existing is not None))
    return runs


def _status(path: Path) -> str | None:
    try:
        return load_run(path).status
    except FileNotFoundError:
        return None
