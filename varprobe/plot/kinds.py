"""The figure kinds of ``varprobe plot`` and :func:`draw`: the figure of a kind for a table, with
the selections (``layers``, ``schemes``, ``steps``, ``mode``) passed to the kind's function.
Takes a table and returns a figure, as every function of :mod:`varprobe.plot`; loading runs and
saving files are the CLI's (``varprobe.cli.figure``)."""
from __future__ import annotations

import inspect
from typing import Any, Callable

import pandas as pd
from matplotlib.figure import Figure

from ..analysis.compare import compare
from ..vocabulary import PLOT_KINDS, QUANTITY_KINDS
from . import _derive as d
from .collapse import collapse_map
from .curves import curves
from .decomposition import decomposition
from .heatmap import heatmap
from .shift import shift
from .spp import spp
from .theory import theory_vs_measured
from .transmission import transmission

__all__ = ["KINDS", "SELECTIONS", "THEORY_NEEDS", "draw", "check_kind", "check_selections"]

#: The training-mode quantities the ``theory`` kind compares (``varprobe.analysis.compare``).
THEORY_NEEDS = ("in.mean", "in.var", "out.ch_var", "out.ch_sq_mean")


def theory(frame: pd.DataFrame) -> Figure:
    """``theory_vs_measured`` of ``varprobe.analysis.compare(frame)``: the i.i.d. prediction of every
    conv layer's channel variance and squared channel mean against the measured value.

    ValueError, naming the missing quantities, where the frame has no training-mode rows of
    :data:`THEORY_NEEDS` (a run recorded with ``quantities="forward"``, only in eval mode, or empty)."""
    train = frame[frame["mode"] == "train"] if {"mode", "quantity"} <= set(frame.columns) else frame.iloc[:0]
    have = set(train["quantity"].unique()) if "quantity" in train.columns else set()
    missing = [q for q in THEORY_NEEDS if q not in have]
    if missing:
        runs = sorted(frame["run"].astype(str).unique()) if "run" in frame.columns else []
        which = f"run(s) {', '.join(runs)} have" if runs else "the frame has"
        raise ValueError(f"plot kind 'theory' needs the training-mode quantities {', '.join(THEORY_NEEDS)}; "
                         f"{which} none of {', '.join(missing)} (recorded with --quantities forward, only in eval "
                         "mode, or no steps): record with --quantities all, or choose another --kind")
    return theory_vs_measured(compare(frame), hue="scheme" if "scheme" in frame.columns else None)


_FUNCTIONS: dict[str, Callable[..., Figure]] = {
    "spp": spp, "heatmap": heatmap, "curves": curves, "shift": shift, "transmission": transmission,
    "theory": theory, "collapse": collapse_map, "decomposition": decomposition}
#: kind -> (function, needs a quantity), for every kind of ``varprobe.vocabulary.PLOT_KINDS``.
KINDS: dict[str, tuple[Callable[..., Figure], bool]] = {k: (_FUNCTIONS[k], k in QUANTITY_KINDS) for k in PLOT_KINDS}
#: The selections ``draw`` passes on as keyword arguments, where the kind's function takes them
#: (``--layers`` -> ``layers=``, ...). ``schemes`` is taken by every kind: a function without that
#: keyword is given the rows of those schemes only.
SELECTIONS = ("layers", "schemes", "steps", "mode")
def _takes(fn: Callable[..., Figure], keyword: str) -> bool:
    return keyword in inspect.signature(fn).parameters


def check_selections(kind: str, selections: dict[str, Any]) -> None:
    """Refuse a selection the kind's function does not take, naming the kinds that take it."""
    fn, _ = KINDS[kind]
    for key, value in selections.items():
        if key not in SELECTIONS:
            raise ValueError(f"unknown plot selection {key!r}; valid: {', '.join(SELECTIONS)}")
        if value is None or key == "schemes" or _takes(fn, key):
            continue
        takes = [k for k, (f, _) in KINDS.items() if _takes(f, key)]
        raise ValueError(f"plot kind {kind!r} takes no --{key} (got {_words(value)}); kinds that take it: "
                         f"{', '.join(takes) or 'none'}")


def _words(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _select(frame: pd.DataFrame, fn: Callable[..., Figure], selections: dict[str, Any]
            ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The frame and keyword arguments for ``fn``: values that match nothing in ``frame`` are
    refused naming them and what the frame holds; ``schemes`` filters the rows where ``fn`` does
    not take it."""
    kwargs = {k: v for k, v in selections.items() if v is not None}
    schemes = kwargs.get("schemes")
    if schemes is not None:
        have = sorted(set(frame["scheme"].dropna().astype(str))) if "scheme" in frame.columns else []
        if not len(schemes):
            raise ValueError(f"schemes=[] selects no run; give at least one scheme, or None for all; schemes of "
                             f"the runs: {', '.join(have) or 'none (the runs record no scheme)'}")
        bad = [s for s in schemes if s not in have]
        if bad:
            raise ValueError(f"--schemes {', '.join(map(repr, bad))} matches no run; schemes of the runs: "
                             f"{', '.join(have) or 'none (the runs record no scheme)'}")
        if not _takes(fn, "schemes"):
            frame = frame[frame["scheme"].astype(str).isin(schemes)]
            del kwargs["schemes"]
    if kwargs.get("mode") is not None:
        d.prepare(frame, kwargs["mode"])  # ValueError naming the mode and the modes of the runs
    steps = kwargs.get("steps")
    if steps is not None:
        recorded = frame["step"]
        low, high = (int(recorded.min()), int(recorded.max())) if len(recorded) else (None, None)
        bad = [s for s in steps if low is None or not low <= s <= high]
        if bad:
            where = f"recorded steps: {low} to {high}" if low is not None else "no recorded steps"
            raise ValueError(f"--steps {', '.join(map(str, bad))} outside the runs' {where}")
        kwargs["steps"] = list(steps)
    if "layers" in kwargs:
        kwargs["layers"] = list(kwargs["layers"])
    return frame, kwargs


def check_kind(kind: str, quantity: str | None) -> tuple[Callable[..., Figure], bool]:
    if kind not in KINDS:
        raise ValueError(f"unknown plot kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    fn, needs = KINDS[kind]
    takes = [k for k, (_, n) in KINDS.items() if n]
    if quantity is not None and not str(quantity).strip():
        raise ValueError(f"quantity {quantity!r} is empty; give a quantity, e.g. out.var, to the kinds that take one: "
                         f"{', '.join(takes)}")
    if needs and not quantity:
        raise ValueError(f"plot kind {kind!r} needs a quantity (--quantity Q, e.g. out.var); "
                         f"kinds that take one: {', '.join(takes)}")
    if quantity and not needs:
        raise ValueError(f"plot kind {kind!r} takes no quantity (got {quantity!r}); "
                         f"kinds that take one: {', '.join(takes)}")
    return fn, needs


def draw(frame: pd.DataFrame, kind: str, quantity: str | None = None, **selections: Any) -> Figure:
    """The figure of ``kind`` (one of :data:`KINDS`) for ``frame``, with ``selections`` (of
    :data:`SELECTIONS`: ``layers``, ``schemes``, ``steps``, ``mode``; None: the function's default)
    passed to the kind's function. ValueError, naming the bad value and the valid ones, for an
    unknown kind, a missing/unexpected quantity, a selection the kind does not take, or a value
    that matches nothing in ``frame``."""
    fn, needs = check_kind(kind, quantity)
    check_selections(kind, selections)
    frame, kwargs = _select(frame, fn, selections)
    return fn(frame, quantity, **kwargs) if needs else fn(frame, **kwargs)
