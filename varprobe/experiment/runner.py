"""Run one configured training experiment into a run directory (grids of them: ``.grid``)."""
from __future__ import annotations

import io
import itertools
import math
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..layers import PWSConv2d, init_alpha
from ..probe import Probe
from ..record import Run, load_run
from ..record.files import atomic_write
from .config import RunConfig, build_model, load_data
from .device import make_deterministic, resolve_device, split_to, worker_slot
from .progress import progress_bar
from .projection import project_filter_mean_
from .stop import deferred, error_of
from .train import accuracy, sgd

__all__ = ["run", "run_name", "load_model", "DONE"]

DONE = ("finished", "collapsed")  # statuses a grid does not rerun
from ..record.layout import MODEL_FILE  # the final state_dict, beside meta.json


#: What builds a run's model instead of ``build_model``: ``build(config, in_channels, num_classes)``.
Builder = Callable[[RunConfig, int, int], torch.nn.Module]


def run(config: RunConfig, out: str | os.PathLike, *, overwrite: bool = False, progress: bool = False,
        build: Builder | None = None) -> Run:
    """Train ``config``'s model on its data with a probe attached, writing ``out`` as it goes.

    The run directory holds the probe table (per-layer statistics, and ``loss``/``lr`` at every
    recorded step), and ``meta.json`` with the config, the status ("finished", "collapsed" or
    "failed") and ``result``: final training loss, train and test accuracy, and ``collapsed_at``
    (the step whose loss was non-finite or whose logit variance exceeded ``config.collapse_var``;
    the run stops there, and everything recorded up to that step is kept). The final weights are
    saved as ``model.pt`` (a state_dict; rebuild the model with ``load_model(run)``). The model, its
    data and the probe live on ``config.device``; meta.json records ``device`` (the one used),
    ``threads`` (torch CPU threads) and ``determinism`` (``make_deterministic``).

    ``progress``: a tqdm bar on stderr over the steps, with the last loss and the steps per second
    (the command line shows it where stderr is a terminal); it stays on screen where the run ends.

    ``build``: builds the model instead of ``build_model(config, in_channels, num_classes)``, after
    the same ``torch.manual_seed(config.seed)`` (e.g. a width sweep's model factory). Its
    ``model_name`` attribute, when it has one, is stored in meta.json's config as
    ``model_factory``; :func:`load_model` refuses such a run (it cannot rebuild the model).
    """
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device, worker_slot())
    determinism = make_deterministic(device)
    split = split_to(load_data(config.data, config.image_size, config.seed, config.data_limit, config.synthetic_n,
                               config.image_channels), device)
    torch.manual_seed(config.seed)
    model = (build or build_model)(config, split.in_channels, split.num_classes).to(device)
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
    meta = config.to_dict()
    if build is not None:
        meta["model_factory"] = str(getattr(build, "model_name", getattr(build, "__qualname__", type(build).__name__)))
    probe = Probe(model, every=config.every, quantities=config.quantities, out=out, flush_every=config.flush_every,
                  meta=meta, overwrite=overwrite)
    model.train()
    bar = progress_bar(config.steps, "run", "step", enabled=progress)
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
            bar.set_postfix(loss=f"{last_loss:.4g}", refresh=False)
            bar.update()
            if not math.isfinite(last_loss) or not float(logits.detach().var()) <= config.collapse_var:
                collapsed_at = step
                break
            opt.step()
            opt.zero_grad(set_to_none=True)
        bar.close()
        with deferred():
            probe.remove()  # the accuracy forwards below are not part of the record
            buffer = io.BytesIO()
            torch.save(model.state_dict(), buffer)
            atomic_write(Path(out) / MODEL_FILE, buffer.getbuffer())
        n_train = min(len(split.x_train), 2048)
        result = {"final_loss": last_loss, "collapsed_at": collapsed_at,
                  "train_accuracy": accuracy(model, split.x_train[:n_train], split.y_train[:n_train]),
                  "test_accuracy": accuracy(model, split.x_test, split.y_test)}
        with deferred():
            probe.close("collapsed" if collapsed_at is not None else "finished", result=result, device=str(device),
                        threads=torch.get_num_threads(), determinism=determinism)
    except BaseException as exc:
        bar.close()
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
    """The final model of a run, rebuilt from its config and ``model.pt``, in eval mode, on the CPU."""
    if run_.config.get("model_factory"):
        raise ValueError(f"run {run_.path} was built by the model factory {run_.config['model_factory']!r}, which "
                         "load_model cannot rebuild; build the model with it and load model.pt into it")
    config = RunConfig.from_dict(run_.meta["config"])
    split = load_data(config.data, config.image_size, config.seed, config.data_limit, config.synthetic_n,
                      config.image_channels)
    model = build_model(config, split.in_channels, split.num_classes)
    model.load_state_dict(torch.load(Path(run_.path) / MODEL_FILE, weights_only=True, map_location="cpu"))
    return model.eval()


def run_name(config: RunConfig, base: RunConfig | None = None) -> str:
    """A directory name from the fields of ``config`` that differ from ``base`` (default config)."""
    base = base or RunConfig()
    diff = [(k, v) for k, v in config.to_dict().items() if v != base.to_dict()[k]]
    text = lambda v: "_".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)  # noqa: E731
    return "-".join(f"{k}={text(v)}" for k, v in diff).replace("/", "_").replace(" ", "") or "default"


def __getattr__(name: str):
    """``grid`` lives in ``varprobe.experiment.grid``; importing it from here keeps working."""
    if name == "grid":
        from .grid import grid
        return grid
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
