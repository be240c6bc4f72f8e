"""The width-sweep rows of the report (W1-W4): the sweep a profile runs (``Profile.sweep``,
:class:`~varprobe.claims.profiles.SweepPart`), what each row reads from it, and its
coordinate-check figure.

The sweep is ``varprobe.experiment.sweep`` itself (the same runs, coordinates, per-seed slopes and
interval as ``varprobe sweep``), under ``out/sweep``; its figure is drawn into the report as
:data:`FIGURE` with a caption computed from its slopes table. A row's per-seed value is a mapping
layer -> that seed's slope (``SweepResult.fit.per_seed``), minus theory's slope where the row
compares with theory; the "slopes" kind of ``varprobe.claims.summary`` turns it into the row's
interval and verdict.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .profiles import Profile

if TYPE_CHECKING:
    from ..experiment.sweep import SweepResult
    from ..record.files import OutputDir
    from .measures import Evidence

__all__ = ["FIGURE", "FIGURE_TITLE", "SWEEP_DIR", "run_sweep", "sweep_configs", "layer_slopes", "select",
           "init_theory", "sweep_figure"]

#: The sweep's coordinate-check figure in the report, and what it shows (its caption's start).
FIGURE = "width-sweep.png"
FIGURE_TITLE = ("Coordinate check of the width sweep: each layer's statistic against the width at initialization "
                "(step 0) and after the first update (step 1), geometric mean and interval over seeds.")
#: The sweep's folder inside the report's directory.
SWEEP_DIR = "sweep"


def sweep_configs(p: Profile) -> list:
    """The run configs of ``p``'s sweep part (none without one), for the plan's count and estimate."""
    if p.sweep is None:
        return []
    base = p.sweep.base(p)
    return [base.replace(width=w, seed=s) for w in p.sweep.widths for s in range(p.sweep.seeds)]


def run_sweep(p: Profile, out: Path, progress: bool = True, jobs: int = 1,
              log: Callable[[str], None] = print) -> "SweepResult | None":
    """Run ``p``'s sweep part under ``out / SWEEP_DIR`` (resumable like every grid; no figure there:
    the report draws it) and log its one-line notes. None when ``p`` has no sweep part."""
    if p.sweep is None:
        return None
    import warnings

    from ..experiment.sweep import sweep

    part = p.sweep
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the same notes are logged below
        result = sweep(part.model, part.widths, Path(out) / SWEEP_DIR, base=part.base(p),
                       seeds=range(part.seeds), figure=None, jobs=jobs, progress=progress, log=log)
    for line in result.notes():
        log(f"[reproduce] {line}")
    return result


def select(result: "SweepResult", role: str, first: bool = True) -> list[str]:
    """The layers of ``result``'s coordinates with ``role`` ("conv", "linear", ...) in depth order,
    without the shallowest when ``first`` is False (its fan-in is the image's: it does not grow)."""
    c = result.coords[result.coords["role"] == role].drop_duplicates("layer").sort_values(["depth", "layer"])
    layers = c["layer"].tolist()
    return layers if first else layers[1:]


def layer_slopes(ev: "Evidence", seed: int, quantity: str, step: int,
                 layers: Callable[["SweepResult"], list[str]],
                 predicted: Callable[["SweepResult"], dict[str, float]] | None = None) -> dict[str, float]:
    """Seed ``seed``'s slope of ``quantity`` at ``step`` for each layer of ``layers(sweep)``, minus
    ``predicted(sweep)[layer]`` when given: {layer: value}. A layer without a slope at that seed is
    NaN. KeyError when the profile ran no sweep."""
    result = ev.sweeps["sweep"]
    names = layers(result)
    t = result.fit.per_seed
    t = t[(t["quantity"] == quantity) & (t["step"] == step) & (t["seed"] == seed) & t["layer"].isin(names)]
    got = dict(zip(t["layer"], t["slope"].astype(float)))
    minus = predicted(result) if predicted is not None else {}
    return {k: got.get(k, math.nan) - minus.get(k, 0.0) for k in names}


def init_theory(result: "SweepResult") -> dict[str, float]:
    """Theory's slope of ``out.sq_mean`` at initialization per layer, each layer's init law read off
    its weights (``SweepResult.init_predictions("measured")``)."""
    t = result.init_predictions("measured")
    return dict(zip(t["layer"], t["predicted"].astype(float)))


def sweep_figure(ev: "Evidence", out: "OutputDir") -> dict[str, str]:
    """Draw the sweep's coordinate-check figure into the report as :data:`FIGURE` and return
    {FIGURE: caption} (:data:`FIGURE_TITLE` and ``varprobe.plot.captions.caption_coord_check`` of its
    slopes table); {} when the profile ran no sweep."""
    result = ev.sweeps.get("sweep")
    if result is None:
        return {}
    from ..plot.captions import caption_coord_check
    from ..plot.coord_check import coord_check
    from ..record.figure import save_figure

    pooled = list(result.pooled["layer"]) if len(result.pooled) else []
    save_figure(coord_check(result.coords, result.slopes, band=result.fit.band, pooled=pooled), FIGURE, out)
    return {FIGURE: f"{FIGURE_TITLE} {caption_coord_check(result.slopes, band=result.fit.band)}"}
