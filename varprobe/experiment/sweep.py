"""Width sweeps: the same training at several widths and seeds, and how every layer's statistics scale
with the width (a coordinate check with forward, backward and update statistics).

:func:`sweep` runs widths x seeds as a resumable grid (``varprobe.experiment.grid``: the same
engines, ``jobs``, Dask, what is skipped, redone and reported) under ``out/runs``, builds the
coordinates table from the runs' own recorded frames, fits the width slopes
(``varprobe.analysis.slopes``) and writes ``out/slopes.csv`` and the coordinate-check figure
``out/coord_check.png`` (``varprobe.plot.coord_check``) through ``varprobe.record.files.OutputDir``.
Rerunning it over the same ``out`` skips the finished runs and recomputes the tables.

What a coordinate is: a probed layer, matched across widths by name and role, never by position
(a layer found at only some widths is named, ``SweepResult.partial``). The probe merges every call
of a module in a step into one record, so a module called more than once per forward is one pooled
coordinate: it is named (``SweepResult.pooled``, and a warning), never split.
"""
from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..analysis.slopes import COORD_COLUMNS, SWEEP_QUANTITIES, WIDTH_BAND, SlopeFit, compare_slopes, fit_slopes
from ..record.files import OutputDir
from ..theory.width import KAIMING, STANDARD, init_sq_mean_slopes, loglog_slope
from .config import MODELS, RunConfig, build_model, check_config, load_data
from .grid import GridResult, grid
from .runner import DONE

__all__ = ["sweep", "SweepResult", "check_widths", "layer_facts", "init_predictions", "SWEEP_STEPS", "SLOPES_NAME",
           "FIGURE_NAME", "RUNS_DIR", "INITS"]

#: Steps of a sweep unless told: past 30, so that growth that takes tens of steps (an output layer's
#: update under a fixed lr) shows, which the first few steps of a forward-only check miss.
SWEEP_STEPS = 50
#: The slopes table, the figure and the runs' folder, inside the sweep's ``out``.
SLOPES_NAME = "slopes.csv"
FIGURE_NAME = "coord_check.png"
RUNS_DIR = "runs"
#: The weight-variance laws :func:`init_predictions` knows: e of Var(W) ~ fan_in^(-e), or "measured"
#: (each layer's own, from its weights at initialisation).
INITS = {"kaiming": KAIMING, "standard": STANDARD, "measured": None}

ModelFactory = Callable[[int], nn.Module]


@dataclass(frozen=True)
class _Factory:
    """A ``width -> nn.Module`` factory as a run's model builder (``runner.run``'s ``build``)."""

    factory: ModelFactory

    @property
    def model_name(self) -> str:
        f = self.factory
        return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', type(f).__name__)}"

    def __call__(self, config: RunConfig, in_channels: int, num_classes: int) -> nn.Module:
        return self.factory(config.width)


@dataclass
class SweepResult:
    """The outcome of :func:`sweep`.

    Attributes:
        coords: The coordinates table: columns ``layer, role, depth, quantity, step, width, seed,
            value`` (``varprobe.analysis.slopes.COORD_COLUMNS``) and ``run`` (the run directory's
            name), from the training-mode rows of the runs' frames, quantities of ``quantities``.
        slopes: ``layer, role, quantity, step, slope, ci_low, ci_high, n, verdict``: what
            ``out/slopes.csv`` holds (``varprobe.analysis.slopes.fit_slopes``).
        fit: The whole :class:`~varprobe.analysis.slopes.SlopeFit` (per-seed slopes, values left
            out with the reason, layers at only some widths).
        layers: Per width and probed-or-not module with a weight: ``width, layer, fan_in,
            weight_var`` (of its weight at initialisation, seed 0) and ``calls`` (times it ran in
            one forward of two training images).
        pooled: Layers of ``coords`` called more than once per forward: ``layer``, ``calls`` (the
            most over the widths). Their rows pool every call.
        runs: The :class:`~varprobe.experiment.grid.GridResult` (outcomes, failures, ``report()``).
        unused: Runs whose rows are not in ``coords``, with why: ``{name: reason}``.
        widths, seeds: The sweep's axes.
        root: ``out``; the runs are in ``root / RUNS_DIR``.
        files: What was written: ``{"slopes": path, "figure": path}`` (no figure with ``figure=None``).
    """

    coords: pd.DataFrame
    slopes: pd.DataFrame
    fit: SlopeFit
    layers: pd.DataFrame
    pooled: pd.DataFrame
    runs: GridResult
    unused: dict[str, str]
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    root: Path
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def partial(self) -> pd.DataFrame:
        """Layers (layer, role) not at every width: ``layer, role, widths, missing``."""
        return self.fit.partial

    def init_predictions(self, init: str = "measured") -> pd.DataFrame:
        """:func:`init_predictions` of this sweep."""
        return init_predictions(self.layers, self.coords, init)

    def compare_init(self, init: str = "measured") -> pd.DataFrame:
        """Predicted init slopes of ``out.sq_mean`` next to the measured ones at the first recorded
        step (``varprobe.analysis.slopes.compare_slopes``: ``predicted``, ``error``, ``within``)."""
        return compare_slopes(self.slopes, self.init_predictions(init))

    def notes(self) -> list[str]:
        """What :func:`sweep` warns about, one line each: runs whose rows are not used, and the
        layers called more than once per forward (pooled coordinates)."""
        lines = [f"sweep: run {name} not used: {why}" for name, why in self.unused.items()]
        if len(self.pooled):
            lines.append(f"sweep: {len(self.pooled)} layer(s) called more than once per forward, each one pooled "
                         "coordinate (the probe merges a step's calls): "
                         + ", ".join(f"{r.layer} ({r.calls} calls)" for r in self.pooled.itertuples()))
        return lines

    def report(self) -> list[str]:
        """One line per thing to know: the grid's own report, :meth:`notes`, layers at only some
        widths, values left out of the fits, and the verdict counts."""
        lines = [line.replace("grid:", "sweep:", 1) for line in self.runs.report()] + self.notes()
        if len(self.partial):
            lines.append(f"sweep: {len(self.partial)} layer(s) not at every width: "
                         + "; ".join(f"{r.layer} ({r.role}) at {', '.join(map(str, r.widths))}"
                                     for r in self.partial.itertuples()))
        if len(self.fit.left_out):
            counts = self.fit.left_out["reason"].value_counts()
            lines.append(f"sweep: {len(self.fit.left_out)} value(s) left out of the fits: "
                         + ", ".join(f"{n} {r}" for r, n in counts.items()))
        counts = self.slopes["verdict"].value_counts()
        lines.append(f"sweep: {len(self.slopes)} slopes: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
        return lines


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """``widths`` as a tuple, or ValueError naming the bad value and what is valid: at least two,
    each a positive integer, none repeated."""
    widths = tuple(widths)
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
            raise ValueError(f"width {w!r} is not a positive integer; valid: positive integers, e.g. 8,16,32,64")
    repeated = sorted({w for w in widths if widths.count(w) > 1})
    if repeated:
        raise ValueError(f"width {repeated[0]} is given more than once in {','.join(map(str, widths))}; valid: "
                         "each width once, at least two, e.g. 8,16,32,64")
    if len(widths) < 2:
        raise ValueError(f"a sweep needs at least two widths to fit a slope, got {len(widths)} "
                         f"({','.join(map(str, widths)) or 'none'}); valid: e.g. 8,16,32,64")
    return tuple(int(w) for w in widths)


def sweep(model: str | ModelFactory, widths: Sequence[int], out: str | os.PathLike, *,
          base: RunConfig | None = None, scheme: str | None = None, seeds: Sequence[int] = (0, 1, 2),
          steps: int | None = None, lr: float | None = None,
          quantities: Sequence[str] = SWEEP_QUANTITIES, band: float = WIDTH_BAND,
          figure: str | None = FIGURE_NAME, figure_steps: Sequence[int] | None = None,
          jobs: int | None = 1, backend: str = "loky", scheduler: str | None = None, progress: bool = True,
          log: Callable[[str], None] | None = None) -> SweepResult:
    """Train ``model`` at every width of ``widths`` with every seed of ``seeds`` (a resumable grid
    under ``out/runs``), and fit how each layer's statistics scale with the width.

    Args:
        model: A model name of ``varprobe.experiment.config.MODELS`` (built by ``build_model`` with
            ``scheme`` and each width as ``RunConfig.width``), or a factory ``width -> nn.Module``
            (called after ``torch.manual_seed(seed)``, in the worker that trains it: with
            ``jobs > 1`` it must pickle; closures and lambdas do). The factory's model must take
            ``base``'s data (images of ``base.image_channels`` x ``base.image_size``^2, 10 classes
            for digits).
        widths: At least two distinct positive widths.
        base: Everything else of the runs: data, batch size, momentum, weight decay, ``every``,
            probe preset, device (default ``RunConfig()``). ``scheme``, ``steps`` and ``lr`` override
            it; ``steps`` defaults to ``SWEEP_STEPS`` when ``base`` is not given.
        quantities: Which recorded quantities become coordinates (default
            ``varprobe.analysis.slopes.SWEEP_QUANTITIES``).
        band: The verdicts' band (``varprobe.analysis.slopes.WIDTH_BAND``; change it only before
            looking at results).
        figure: File name of the coordinate-check figure inside ``out`` (None: none drawn).
        figure_steps: The figure's steps (default: first, middle and last recorded).
        jobs, backend, scheduler, progress, log: As ``varprobe.experiment.grid``.

    Everything is checked before the first run starts: the widths (:func:`check_widths`), that the
    model builds and runs a forward at each width (``check_config`` for a named model, else the
    factory on two images of the data), and that ``out`` may hold the slopes and the figure.

    Returns:
        A :class:`SweepResult`; ``report()`` gives its one-line notes. A pooled layer, a layer at
        only some widths, a run not used and values left out are also named in a RuntimeWarning.

    Raises:
        ValueError: bad widths, a model that cannot be built or run at a width (naming the width
            and the widths that work), a bad config value or an unknown model name.
        varprobe.record.files.WriteRefused: ``out`` holds a slopes or figure file varprobe did not write.
    """
    widths = check_widths(widths)
    base = base if base is not None else RunConfig(steps=SWEEP_STEPS)
    changes = {k: v for k, v in (("scheme", scheme), ("steps", steps), ("lr", lr)) if v is not None}
    base = base.replace(**changes)
    factory = None
    if isinstance(model, str):
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}, or a factory width -> nn.Module")
        base = base.replace(model=model)
        for w in widths:
            check_config(base.replace(width=w))
    elif callable(model):
        factory = _Factory(model)
    else:
        raise TypeError(f"model must be a model name or a callable width -> nn.Module, got {type(model).__name__}")
    seeds = tuple(seeds)
    root = Path(out)
    names = [SLOPES_NAME] + ([figure] if figure else [])
    place = OutputDir(root, "sweep")
    place.check(names)
    layers = layer_facts(base, widths, factory)

    say = log or (lambda line: print(line, file=sys.stderr))
    runs = grid(base, root / RUNS_DIR, seeds=seeds, widths=widths, progress=progress, jobs=jobs, backend=backend,
                scheduler=scheduler, log=say, build=factory)
    coords, unused = _coordinates(runs, quantities)
    fit = fit_slopes(coords, band=band)  # warns, naming values left out and layers at only some widths
    pooled = _pooled(layers, coords)
    result = SweepResult(coords, fit.table, fit, layers, pooled, runs, unused, widths, seeds, root)
    if result.notes():
        warnings.warn("\n".join(result.notes()), RuntimeWarning, stacklevel=2)
    result.files["slopes"] = place.write_text(SLOPES_NAME, fit.table.to_csv(index=False))
    if figure:
        from ..plot.coord_check import coord_check
        from ..record.figure import save_figure

        result.files["figure"] = save_figure(coord_check(coords, fit.table, steps=figure_steps, band=band,
                                                         pooled=list(pooled["layer"])), figure, place)
    return result


def layer_facts(base: RunConfig, widths: Sequence[int], factory: ModelFactory | None = None) -> pd.DataFrame:
    """Per width and module with a weight of two or more dimensions: ``width, layer, fan_in``
    (``weight[0].numel()``: in_features, C_in/groups x kernel taps), ``weight_var`` (the biased
    variance of the weight at initialisation, ``torch.manual_seed(0)``) and ``calls`` (how often it
    runs in one training-mode forward of two images of ``base``'s data). Built on a throwaway model
    with the global RNG state saved and restored. ValueError naming the width, when the model
    cannot be built or run there, and the widths that can."""
    split = load_data(base.data, base.image_size, base.seed, base.data_limit, base.synthetic_n, base.image_channels)
    x = split.x_train[:2].cpu()
    rows, failed = [], {}
    for w in widths:
        try:
            rows += _facts_at(base, w, factory, x, split.in_channels, split.num_classes)
        except (ValueError, RuntimeError, TypeError) as exc:
            failed[w] = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if failed:
        w, why = next(iter(failed.items()))
        ok = [v for v in widths if v not in failed]
        raise ValueError(f"the model cannot be built or run at width {w}: {why}; "
                         + (f"valid: the widths that work here, {', '.join(map(str, ok))}" if ok
                            else "no width given works"))
    return pd.DataFrame(rows, columns=["width", "layer", "fan_in", "weight_var", "calls"])


def _facts_at(base: RunConfig, width: int, factory, x: torch.Tensor, in_channels: int, num_classes: int) -> list:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = base.replace(width=width)
        net = factory(config, in_channels, num_classes) if factory else build_model(config, in_channels, num_classes)
        if not isinstance(net, nn.Module):
            raise TypeError(f"the factory returned a {type(net).__name__}, not an nn.Module")
        calls: dict[str, int] = {}
        handles = [m.register_forward_hook(lambda mod, args, out, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
                   for name, m in net.named_modules() if name]
        try:
            with torch.no_grad():
                net.cpu().train()(x)
        finally:
            for h in handles:
                h.remove()
    rows = []
    for name, m in net.named_modules():
        weight = getattr(m, "weight", None)
        if name and isinstance(weight, torch.Tensor) and weight.dim() >= 2:
            rows.append((width, name, int(weight[0].numel()), float(weight.detach().double().var(unbiased=False)),
                         calls.get(name, 0)))
    return rows


def _coordinates(runs: GridResult, quantities: Sequence[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    parts, unused = [], {}
    for r in runs:
        if r.status not in DONE:
            unused[r.path.name] = f"status {r.status}"
            continue
        if r.damaged:
            unused[r.path.name] = "damaged: " + "; ".join(r.problems[:2])
            continue
        f = r.frame
        f = f[(f["mode"] == "train") & (f["layer"] != "") & f["quantity"].isin(list(quantities))]
        parts.append(f[["layer", "role", "depth", "quantity", "step", "value"]].assign(
            width=int(r.config["width"]), seed=int(r.config["seed"]), run=r.path.name))
    columns = [*COORD_COLUMNS, "run"]
    if not parts:
        return pd.DataFrame(columns=columns), unused
    coords = pd.concat(parts, ignore_index=True)[columns]
    coords["layer"], coords["role"], coords["quantity"] = (coords[c].astype(str) for c in ("layer", "role", "quantity"))
    return coords, unused


def _pooled(layers: pd.DataFrame, coords: pd.DataFrame) -> pd.DataFrame:
    probed = set(coords["layer"]) if len(coords) else set()
    many = layers[(layers["calls"] > 1) & layers["layer"].isin(probed)]
    return (many.groupby("layer", sort=True)["calls"].max().reset_index()
            if len(many) else pd.DataFrame(columns=["layer", "calls"]))


def init_predictions(layers: pd.DataFrame, coords: pd.DataFrame, init: str = "measured") -> pd.DataFrame:
    """Theory's slopes of ``out.sq_mean`` at the first recorded step (initialisation) for every
    layer of ``layers`` that ``coords`` has, taken as a chain in the order of their depth
    (``varprobe.theory.init_sq_mean_slopes``). The fan-in exponent of a layer is the log-log slope
    of its ``fan_in`` over the widths; its weight-variance exponent e is 1 (``init="kaiming"``), 0
    (``"standard"``: N(0, 1) or any fixed variance) or, with ``"measured"``, minus the log-log slope of
    its ``weight_var`` on its ``fan_in``, rounded to the nearest 1/2 (the init law the model
    actually uses, e.g. simple_cnn's Kaiming convs and its N(0, 0.01) head). A chain: each layer's
    input is the ReLU of the previous layer's output (plain nets; not residual or normalized ones).

    Columns: layer, role, quantity ("out.sq_mean"), step, predicted."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
    columns = ["layer", "role", "quantity", "step", "predicted"]
    at = coords[coords["quantity"] == "out.sq_mean"]
    if at.empty:
        return pd.DataFrame(columns=columns)
    step = int(at["step"].min())
    at = at[at["step"] == step].drop_duplicates(["layer", "role"])[["layer", "role", "depth"]]
    facts = layers[layers["layer"].isin(set(at["layer"]))]
    order = at.sort_values(["depth", "layer"], kind="stable")
    a, e = [], []
    for layer in order["layer"]:
        f = facts[facts["layer"] == layer]
        fan = f["fan_in"].to_numpy(np.float64)
        grows = loglog_slope(f["width"], fan) if f["width"].nunique() > 1 else 0.0
        a.append(grows)
        if INITS[init] is not None:
            e.append(INITS[init])
        elif np.unique(fan).size > 1:
            e.append(round(-2.0 * loglog_slope(fan, f["weight_var"])) / 2.0)
        else:
            e.append(0.0)
    out = order[["layer", "role"]].copy()
    out["quantity"], out["step"] = "out.sq_mean", step
    out["predicted"] = init_sq_mean_slopes(a, e) if len(a) else []
    return out[columns].reset_index(drop=True)
