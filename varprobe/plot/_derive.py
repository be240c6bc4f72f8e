"""Pure pandas derivations behind the plots: grouping runs, picking steps and layers, ratios.

Nothing here imports matplotlib (or torch); every function takes and returns DataFrames in the
long format of a probe table (``step, layer, depth, mode, module_type, role, quantity, value``, and
for frames from ``varprobe.load_runs`` also ``run``, ``status`` and one column per config entry).
Layers are selected by their ``role`` (``varprobe.analysis.rows``), never by their type's name.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..analysis.ratios import transmission_ratios
from ..analysis.rows import conv_rows, has_roles, is_weight_layer, roles
from ..vocabulary import COLUMNS

__all__ = ["config_columns", "prepare", "quantity_rows", "hue_style", "run_table", "pick_steps",
           "spp_table", "pool_shared", "pooled_notes", "ratios", "conv_mean", "final_state", "select_layers",
           "layer_order", "RATIO_QUANTITIES"]

_NOT_CONFIG = set(COLUMNS) | {"run", "status", "setting", "final_loss", "last_step", "train_accuracy",
                              "did_not_train", "blew_up"}
#: Config entries that say how the run was recorded, not what was trained; never split groups.
_RECORDING = re.compile(r"^(probe\.|threads$|every$|eval_steps$|eval_batch$|quantities$|config\.)")
#: Derived by :func:`ratios`.
RATIO_QUANTITIES = ("fwd.var_ratio", "bwd.var_ratio")


def config_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` that come from the runs' configs (everything not a statistic)."""
    return [c for c in frame.columns if c not in _NOT_CONFIG]


def prepare(frame: pd.DataFrame, mode: str | None = "train") -> pd.DataFrame:
    """Rows of ``mode`` (all modes if None), with a ``run`` column ("run" for a single probe frame)."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame (a probe table), got {type(frame).__name__}")
    missing = [c for c in ("step", "layer", "quantity", "value") if c not in frame.columns]
    if missing:
        raise ValueError(f"not a probe table: missing column(s) {', '.join(missing)}; "
                         f"columns: {', '.join(map(str, frame.columns))}")
    out = frame
    if mode is not None and "mode" in out.columns:
        modes = sorted(set(out["mode"].dropna().astype(str)))
        if mode not in modes:
            raise ValueError(f"no rows with mode {mode!r}; modes in the frame: {', '.join(modes) or 'none'}")
        out = out[out["mode"] == mode]
    if "run" not in out.columns:
        out = out.assign(run="run")
    return out


def quantity_rows(frame: pd.DataFrame, quantity: str, mode: str | None = "train") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(prepare(frame, mode), its rows of quantity)``; ValueError naming the quantities the rows
    hold when ``quantity`` is not among them."""
    f = prepare(frame, mode)
    q = f[f["quantity"] == quantity]
    if q.empty:
        have = sorted(set(f["quantity"].astype(str)))
        raise ValueError(f"quantity {quantity!r} is not in the frame ({mode} rows); quantities: {', '.join(have)}")
    return f, q


def run_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its config columns and status (first row of each run)."""
    cols = ["run"] + [c for c in ("status",) if c in frame.columns] + config_columns(frame)
    return frame[cols].drop_duplicates("run").reset_index(drop=True)


def _varying(runs: pd.DataFrame, cols: Iterable[str], within: str | None) -> list[str]:
    out = []
    for c in cols:
        key = runs[c].astype(str)  # None/NaN-safe comparison
        if within is None:
            if key.nunique() > 1:
                out.append(c)
        elif key.groupby(runs[within].astype(str)).nunique().max() > 1:
            out.append(c)
    return out


def hue_style(frame: pd.DataFrame) -> tuple[pd.DataFrame, str | None, str | None]:
    """Label runs for seaborn: ``(frame, hue, style)``.

    Runs that differ only by ``seed`` get the same labels, so seaborn averages them and draws a
    confidence band. The hue is ``scheme`` when the frame has that column; config entries that
    also vary within a scheme (e.g. ``lr``) become the style (a ``setting`` column such as
    "lr=0.5"). Without a ``scheme`` column the varying config entries (seed excluded) become the
    hue (``setting``), or the run name when nothing else tells runs apart. A single run has no hue.
    Recording options (``probe.*``, ``every``, ...) never split groups.
    """
    runs = run_table(frame)
    cand = [c for c in config_columns(frame) if c not in ("seed", "scheme") and not _RECORDING.match(c)]
    if "scheme" in runs.columns and runs["scheme"].notna().all():
        extra = _varying(runs, cand, "scheme")
        if not extra:
            return frame, "scheme", None
        labels = _labels(runs, extra)
        return frame.assign(setting=frame["run"].map(labels)), "scheme", "setting"
    if len(runs) == 1:
        return frame, None, None
    extra = _varying(runs, cand, None)
    if extra:
        return frame.assign(setting=frame["run"].map(_labels(runs, extra))), "setting", None
    return frame, "run", None


def _labels(runs: pd.DataFrame, cols: list[str]) -> dict:
    def fmt(v):
        return f"{v:g}" if isinstance(v, float) else str(v)
    return {r["run"]: ", ".join(f"{c}={fmt(r[c])}" for c in cols) for _, r in runs.iterrows()}


def setting_labels(runs: pd.DataFrame, exclude: Iterable[str] = ()) -> pd.Series | None:
    """For a one-row-per-run table: a label per row (e.g. "batch_size=128") from the config
    columns that vary, except seed, recording options and ``exclude``; None if none vary."""
    cand = [c for c in config_columns(runs) if c not in ("seed", *exclude) and not _RECORDING.match(c)]
    extra = _varying(runs, cand, None)
    if not extra:
        return None
    labels = _labels(runs, extra)
    return runs["run"].map(labels)


def pick_steps(frame: pd.DataFrame, steps: Sequence[int] | int | None = None) -> list[int]:
    """Steps to show. None: first, middle and last recorded step (fewer if fewer are recorded);
    an int n: n steps evenly spread; a list: each snapped to the nearest recorded step.
    ValueError, naming the value and the recorded steps, for an empty list or an entry that is
    not an integer."""
    have = np.array(sorted(set(int(s) for s in frame["step"].unique())))
    if have.size == 0:
        raise ValueError("the frame has no rows to plot (no recorded steps)")
    recorded = f"recorded steps: {have[0]} to {have[-1]}"
    if steps is not None and not isinstance(steps, (int, np.integer)):
        steps = list(steps)
        if not steps:
            raise ValueError(f"steps=[] selects no step; give at least one step ({recorded}), an int n for n "
                             "steps spread over training, or None for the first, a middle and the last")
        bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, (int, np.integer))]
        if bad:
            raise ValueError(f"steps holds {', '.join(map(repr, bad))}, not an integer step; give training steps "
                             f"({recorded})")
    if steps is None or isinstance(steps, (int, np.integer)):
        n = 3 if steps is None else int(steps)
        if n < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        idx = np.unique(np.round(np.linspace(0, have.size - 1, min(n, have.size))).astype(int))
        return [int(have[i]) for i in idx]
    out = []
    for s in steps:
        near = int(have[np.argmin(np.abs(have - int(s)))])
        if near not in out:
            out.append(near)
    return out


def layer_order(frame: pd.DataFrame) -> list[str]:
    """Layer names in forward order: by depth; within a depth the layers of a weight role
    (``varprobe.analysis.rows.WEIGHT_ROLES``: conv, linear, ...) first, then the layers after them
    (norms), then residual blocks (a name that is a parent of another layer's name, whose output
    follows its branch); ties by first appearance. Step-level rows last. A frame without ``role``
    or ``module_type`` is ordered without the first rule."""
    cols = ["layer", "depth"] + [c for c in ("module_type", "role", "quantity") if c in frame.columns]
    f = frame[cols].drop_duplicates("layer")
    names = f["layer"].astype(str).tolist()
    prefixes = {n[:i] for n in names for i, ch in enumerate(n) if ch == "."}
    weight = is_weight_layer(f).to_numpy() if has_roles(f) else np.zeros(len(f), bool)
    rank = [0 if w else 2 if n in prefixes else 1 for n, w in zip(names, weight)]
    f = f.assign(_pos=range(len(f)), _d=f["depth"].where(f["depth"] >= 0, 10**9), _r=rank)
    return f.sort_values(["_d", "_r", "_pos"])["layer"].tolist()


def spp_table(frame: pd.DataFrame, steps: Sequence[int], prefer_blocks: bool = True) -> tuple[pd.DataFrame, str]:
    """Signal-propagation rows at ``steps``: columns run, step, x, layer, stat ("ch_var" or
    "ch_sq_mean"), value, plus config columns.

    Returns ``(table, kind)``: kind "block" when rows of role "block" with ``block.out.*``
    quantities exist for two or more blocks of a run (residual nets and transformers: x = block
    index in forward order, the residual stream after each add) and ``prefer_blocks``; a single
    block (one Tap) would draw one point, so the layers are drawn instead; otherwise "layer" (x = depth, the output
    of each layer of a weight role, ``varprobe.analysis.rows.WEIGHT_ROLES``: norm layers, whose
    output follows their conv's, are left out so nets with and without norm layers align). Layers
    of one run that share a depth (parallel branches) are pooled by :func:`pool_shared`: one row
    per run, step, stat and x, whose ``pooled`` column counts the layers it stands for.
    """
    f = frame[frame["step"].isin(steps)]
    blocks = f[f["quantity"].isin(["block.out.ch_var", "block.out.ch_sq_mean"])]
    blocks = blocks[roles(blocks) == "block"]
    if prefer_blocks and len(blocks) and blocks.groupby("run")["layer"].nunique().max() >= 2:
        kind = "block"
        rows = blocks.assign(stat=blocks["quantity"].str.slice(len("block.out.")))
        order = {(run, name): i for run, g in rows.groupby("run", sort=False)
                 for i, name in enumerate(layer_order(g))}
        rows = rows.assign(x=[order[(r, l)] for r, l in zip(rows["run"], rows["layer"])])
    else:
        kind = "layer"
        rows = f[f["quantity"].isin(["out.ch_var", "out.ch_sq_mean"])]
        rows = rows[is_weight_layer(rows) & (rows["depth"] >= 0)]
        rows = rows.assign(stat=rows["quantity"].str.slice(len("out.")), x=rows["depth"])
    return pool_shared(rows, ["run", "step", "stat", "x"]).reset_index(drop=True), kind


def pool_shared(rows: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """``rows`` with one row per ``by`` group (e.g. run, step, stat, depth) and a column ``pooled``,
    the number of layers the row stands for. Where one layer has the group, its row, pooled 1.
    Where several do (layers of one run at one depth: parallel branches), one row with the first
    one's other columns, ``value`` the geometric mean of theirs in float64 (exp of the mean of ln;
    a 0 or a non-finite value of any of them carries through), ``layer`` their names joined by
    ", " in the order of the rows and ``role`` their distinct roles joined by ", ". What is pooled
    is for the figure to name (:func:`pooled_notes`)."""
    by = list(by)
    n = rows.groupby(by, sort=False)["layer"].transform("nunique") if len(rows) else rows["layer"]
    single = rows[n == 1].assign(pooled=1)
    shared = rows[n > 1]
    if shared.empty:
        return single
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(shared["value"].to_numpy(dtype=np.float64))
    g = shared.assign(_log=logs).groupby(by, sort=False)
    agg = {"value": g["_log"].agg(lambda s: float(np.exp(np.mean(s.to_numpy())))),
           "layer": g["layer"].agg(lambda s: ", ".join(dict.fromkeys(s.astype(str)))),
           "pooled": g["layer"].nunique()}
    if "role" in shared.columns:
        agg["role"] = g["role"].agg(lambda s: ", ".join(dict.fromkeys(s.astype(str))))
    head = shared.drop_duplicates(by).set_index(by)
    for col, values in agg.items():
        head[col] = values.reindex(head.index).to_numpy()
    return pd.concat([single, head.reset_index()[list(single.columns)]], ignore_index=True)


def pooled_notes(rows: pd.DataFrame, x: str, what: str = "depth") -> list[str]:
    """One line per pooled group of a :func:`pool_shared` table: ``"<what> <x>: <layer names>"``
    (e.g. "depth 3: branch1.conv, branch2.conv"), in order of x; none when nothing was pooled."""
    if "pooled" not in rows.columns:
        return []
    p = rows[rows["pooled"] > 1].drop_duplicates([x, "layer"]).sort_values(x, kind="stable")
    return [f"{what} {v:g}: {names}" if isinstance(v, float) else f"{what} {v}: {names}"
            for v, names in zip(p[x], p["layer"])]


def ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """``varprobe.analysis.transmission_ratios`` with the run's config columns joined."""
    long = transmission_ratios(frame)
    if "run" in frame.columns:
        long = long.merge(run_table(frame), on="run", how="left")
    return long


def conv_mean(frame: pd.DataFrame, quantities: Sequence[str]) -> pd.DataFrame:
    """Per run, step and quantity: the mean over conv layers (role "conv",
    ``varprobe.analysis.rows.conv_rows``) of each of ``quantities``, with the run's config columns.
    Non-finite values are dropped first."""
    f = conv_rows(frame[frame["quantity"].isin(quantities)])
    f = f[np.isfinite(f["value"].to_numpy(dtype=float))]
    g = f.groupby(["run", "step", "quantity"], sort=False)["value"].mean().reset_index()
    return g.merge(run_table(frame), on="run", how="left")


def final_state(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: config columns, ``status`` ("unknown" if the frame has none),
    ``final_loss`` (the last recorded training loss, NaN if none; inf/NaN if it blew up),
    ``last_step`` (last recorded step)."""
    runs = run_table(frame)
    if "status" not in runs.columns:
        runs["status"] = "unknown"
    loss = frame[frame["quantity"] == "loss"]
    if "mode" in loss.columns:
        loss = loss[loss["mode"] == "train"]
    last_loss = loss.sort_values("step").groupby("run")["value"].last()
    runs["final_loss"] = runs["run"].map(last_loss).astype(float)
    runs["last_step"] = runs["run"].map(frame.groupby("run")["step"].max())
    return runs


def select_layers(frame: pd.DataFrame, layers, *, max_default: int = 6,
                  weight_only: bool = False) -> tuple[list[str], int]:
    """Layer names to show, in forward order, and how many layers they were picked from.

    ``layers``: None (all, or ``max_default`` spread over depth when there are more; only
    layers of a weight role, ``varprobe.analysis.rows.WEIGHT_ROLES``, when there are any, with
    ``weight_only``), or a list of names, glob patterns on names (``"features.*"``) and ints
    (depths: the layers of a weight role at that depth, every layer there when none has one). Raises ValueError
    naming an entry that matches nothing, with the layers available."""
    order = layer_order(frame)
    if layers is None:
        if weight_only and has_roles(frame):
            weights = set(frame.loc[is_weight_layer(frame), "layer"])
            order = [l for l in order if l in weights] or order
        if len(order) <= max_default:
            return order, len(order)
        idx = np.unique(np.round(np.linspace(0, len(order) - 1, max_default)).astype(int))
        return [order[i] for i in idx], len(order)
    if isinstance(layers, (str, int, np.integer)):
        layers = [layers]
    layers = list(layers)
    if not layers:
        shown = ", ".join(repr(l) for l in order[:40]) + (", ..." if len(order) > 40 else "")
        raise ValueError(f"layers=[] selects no layer; give at least one name, glob pattern or depth, or None "
                         f"for the default; layers: {shown}")
    depth = frame.drop_duplicates("layer").set_index("layer")["depth"] if "depth" in frame.columns else None
    chosen: list[str] = []
    for entry in layers:
        if isinstance(entry, (int, np.integer)) and not isinstance(entry, bool):
            hits = [] if depth is None else [l for l in order if depth.get(l) == int(entry)]
            if len(hits) > 1 and has_roles(frame):
                weights = set(frame.loc[is_weight_layer(frame), "layer"])
                hits = [h for h in hits if h in weights] or hits
        else:
            hits = [l for l in order if fnmatch.fnmatchcase(l, str(entry))]
        if not hits:
            shown = ", ".join(repr(l) for l in order[:40]) + (", ..." if len(order) > 40 else "")
            raise ValueError(f"layer {entry!r} matches no layer with this quantity; layers: {shown}")
        chosen.extend(h for h in hits if h not in chosen)
    return [l for l in order if l in chosen], len(order)
