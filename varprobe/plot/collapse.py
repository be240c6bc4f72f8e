"""Which (learning rate, scheme) combinations collapse."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from . import _derive as d
from ..vocabulary import TRAINED
from .footer import footer
from .style import cell_grid, fmt_num, new_figure, order_levels

__all__ = ["collapse_map", "outcomes", "run_outcomes", "RULES"]

_CMAP = mcolors.LinearSegmentedColormap.from_list("collapse", ["#c7e9c0", "#fdd49e", "#de2d26"])


#: The footer's statement of the two rules, the first being the claims' (``varprobe.vocabulary.TRAINED``).
RULES = (f"Did not train: final train accuracy below {TRAINED:g} (the claims' rule; chance 0.1). Blew up: the "
         "run stopped at a non-finite loss or a logit variance past its collapse_var (status \"collapsed\").")


def outcomes(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run of a one-row-per-run table (``status``; ``train_accuracy`` and ``final_loss`` where
    known): ``did_not_train`` (final train accuracy below :data:`~varprobe.vocabulary.TRAINED`, or
    none: the claims' rule, so a run without an accuracy did not train; NaN for every run when the
    table has no ``train_accuracy`` column) and ``blew_up`` (status "collapsed": the run stopped at
    a non-finite loss or logit variance past its ``collapse_var``)."""
    acc = runs["train_accuracy"].to_numpy(dtype=float) if "train_accuracy" in runs.columns else None
    failed = np.full(len(runs), np.nan) if acc is None else (~(acc >= TRAINED)).astype(float)
    return runs.assign(did_not_train=failed, blew_up=(runs["status"].astype(str) == "collapsed").astype(float))


def run_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    """The one-row-per-run table of ``frame`` (a long frame from ``varprobe.load_runs``, or already
    one row per run with ``scheme``, ``lr``, ``status``) with :func:`outcomes`; ``lr`` as float."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a DataFrame of runs, got {type(frame).__name__}")
    if "quantity" in frame.columns:
        runs = d.final_state(d.prepare(frame, None))
    else:
        runs = frame.copy()
        if "run" not in runs.columns:
            runs["run"] = [f"run{i}" for i in range(len(runs))]
        if "final_loss" not in runs.columns:
            runs["final_loss"] = np.nan
    missing = [c for c in ("scheme", "lr", "status") if c not in runs.columns]
    if missing:
        raise ValueError(f"collapse_map needs the runs' {', '.join(missing)} (config columns from "
                         f"varprobe.load_runs); columns: {', '.join(map(str, frame.columns))}")
    return outcomes(runs.assign(lr=runs["lr"].astype(float), scheme=runs["scheme"].astype(str)))


def collapse_map(frame: pd.DataFrame) -> Figure:
    """Learning rate x scheme grid of outcomes, by the report's two rules (:data:`RULES`, in the
    footer): how many seeds *did not train* (final train accuracy below 0.5, the claims' rule of
    rows 4a-4e) and how many *blew up* (stopped at a non-finite loss or logits: status "collapsed").

    Cell colour: the fraction of seeds that did not train (green: all trained, red: none), or,
    where the table has no train accuracy, the fraction that blew up (the colour bar says which).
    Cell text: the final training loss (last recorded, mean over seeds; inf or nan when a run blew
    up), "k/n did not train" and "k/n blew up". Other statuses (failed, running, interrupted) are
    counted in the text. White: not run. Other settings that vary besides scheme, lr and seed (e.g.
    batch size) get one panel each.

    ``frame``: runs from ``varprobe.load_runs`` (needs ``run``, ``status``, ``scheme``, ``lr`` and
    ``loss`` rows; it has no train accuracy, so "did not train" is marked unknown), or a
    one-row-per-run summary with ``scheme``, ``lr``, ``status`` and optionally ``final_loss`` and
    ``train_accuracy`` (as the report draws it).

    What a reader should see: green cells with a low loss at small learning rates for every
    scheme; at large learning rates unnormalized schemes turn orange/red (some or all seeds did not
    train). A run can fail to train without blowing up (its loss stays high): the two counts differ
    there. If the paper's claim holds, BN and PWS stay green further up the learning-rate axis.
    """
    runs = run_outcomes(frame)
    known = runs["did_not_train"].notna().all()
    key = "did_not_train" if known else "blew_up"
    # Other settings that vary besides scheme and lr: one panel each.
    labels = d.setting_labels(runs, exclude=("scheme", "lr"))
    panels = [(None, runs)] if labels is None else [
        (lvl, runs[labels.astype(str) == lvl]) for lvl in order_levels(labels)]
    schemes = order_levels(runs["scheme"])
    lrs = sorted(runs["lr"].unique(), reverse=True)  # largest on top
    fig, axes = new_figure(1, len(panels), panel=(1.05 * len(schemes) + 1.6, 0.72 * len(lrs) + 1.2),
                           extra=(1.2, 0), sharey=True)
    mesh = None
    for k, (label, sub) in enumerate(panels):
        ax = axes[0, k]
        frac = np.full((len(lrs), len(schemes)), np.nan)
        for i, lr in enumerate(lrs):
            for j, sc in enumerate(schemes):
                cell = sub[(sub["lr"] == lr) & (sub["scheme"] == sc)]
                if cell.empty:
                    ax.text(j, i, "not run", ha="center", va="center", fontsize=7.5, color="#888888")
                    continue
                n = len(cell)
                frac[i, j] = float(cell[key].mean())
                loss = cell["final_loss"].to_numpy(dtype=float)
                failed = f"{int(cell['did_not_train'].sum()) if known else '?'}/{n}"
                lines = [f"loss {fmt_num(float(np.mean(loss)) if loss.size else float('nan'))}",
                         f"{failed} did not train", f"{int(cell['blew_up'].sum())}/{n} blew up"]
                st = cell["status"].astype(str)
                other = st[~st.isin(["finished", "collapsed"])]
                if len(other):
                    lines.append(", ".join(f"{c} {s}" for s, c in other.value_counts().items()))
                ax.text(j, i, "\n".join(lines), ha="center", va="center", fontsize=7.5,
                        color="white" if frac[i, j] > 0.75 else "#1a1a1a")
        mesh = ax.imshow(np.ma.masked_invalid(frac), cmap=_CMAP.with_extremes(bad="white"),
                         vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(schemes)), schemes)
        ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        cell_grid(ax, len(schemes), len(lrs))
        ax.set_xlabel("scheme")
        if k == 0:
            ax.set_ylabel("learning rate")
        if label is not None:
            ax.set_title(label, fontsize=10)
    cb = fig.colorbar(mesh, ax=axes, location="right", shrink=0.9)
    cb.set_label("fraction of seeds that did not train" if known else "fraction of seeds that blew up")
    fig.suptitle("Outcome by learning rate and scheme: did not train, blew up")
    unknown = "" if known else (" The table has no train accuracy (varprobe.load_runs keeps none): \"did not train\" "
                                "is unknown (?), the colour is the blow-ups.")
    footer(fig, runs, f"Text: final training loss (last recorded, mean over seeds), then counts of seeds. {RULES}"
           + unknown)
    return fig
