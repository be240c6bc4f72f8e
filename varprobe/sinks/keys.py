"""The scalars a dashboard sink logs from a probe table: keys, steps and values (pure pandas).

The tag scheme, made here and nowhere else:

- ``varprobe/<role>/<quantity>`` (``per_layer=False``, the default): the mean of the quantity over
  the layers of one role (``varprobe.vocabulary.ROLES``: conv, conv_transpose, linear, attention,
  embedding, norm, block, other) at that step, e.g. ``varprobe/conv/out.var``,
  ``varprobe/norm/out.var``; never a mean across roles. Rows of blocks drop the ``block.`` their
  role already says: ``varprobe/block/out.var`` is ``block.out.var`` (the residual stream),
  ``varprobe/block/branch.out.var`` the branch before the add.
- ``varprobe/<quantity>/<layer>`` (``per_layer=True``): each layer's own value.
- ``varprobe/<quantity>`` either way for step-level rows (layer ``""``: loss, lr, amp.skipped).
- Eval-mode rows: ``varprobe/eval/`` in place of ``varprobe/``.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import pandas as pd

from ..vocabulary import ROLES

__all__ = ["PREFIX", "check_quantities", "check_modes", "scalar_rows", "role_quantity"]

PREFIX = "varprobe"
_MODES = ("train", "eval")


def check_quantities(quantities: str | Iterable[str] | None, owner: str) -> tuple[str, ...] | None:
    """The quantity names (or glob patterns) a sink logs, None for all of them.

    Raises ValueError, one line naming the bad entry and the valid names
    (``varprobe.probe.QUANTITIES``), for an entry that matches no quantity.
    """
    if quantities is None:
        return None
    from ..probe.quantities import QUANTITIES
    entries = (quantities,) if isinstance(quantities, str) else tuple(quantities)
    for q in entries:
        if not isinstance(q, str) or not any(fnmatch.fnmatchcase(k, q) for k in QUANTITIES):
            raise ValueError(f"{owner}: unknown quantity {q!r}; valid quantities: {', '.join(QUANTITIES)}")
    return entries


def check_modes(modes: str | Iterable[str], owner: str) -> tuple[str, ...]:
    """A non-empty subset of ("train", "eval"); ValueError naming the bad value otherwise."""
    chosen = (modes,) if isinstance(modes, str) else tuple(modes)
    bad = [m for m in chosen if m not in _MODES]
    if bad or not chosen:
        raise ValueError(f"{owner}: modes must be a non-empty subset of {_MODES}, got {modes!r}")
    return chosen


def role_quantity(role: str, quantity: str) -> str:
    """The ``<role>/<quantity>`` part of a per-role tag: ``block.out.*`` rows of role "block" drop
    their ``block.`` (``block/out.var``); every other quantity is kept whole."""
    if role == "block" and quantity.startswith("block."):
        quantity = quantity[len("block."):]
    return f"{role}/{quantity}"


def scalar_rows(table: pd.DataFrame, *, quantities: tuple[str, ...] | None = None, per_layer: bool = False,
                modes: tuple[str, ...] = ("train",)) -> pd.DataFrame:
    """The scalars of ``table`` as a frame with columns step (int), key (str), value (float64),
    sorted by step then key.

    Keys (the scheme of this module's docstring): ``varprobe/<quantity>/<layer>`` for each
    layer's row when ``per_layer``; otherwise ``varprobe/<role>/<quantity>`` (:func:`role_quantity`),
    the mean over the layers of that role (every depth) of that quantity at that step, NaN values
    left out of the mean (pandas' ``mean``; NaN only if every layer's value is NaN; an inf stays
    inf). Step-level rows (layer ``""``: loss, lr, ...) are ``varprobe/<quantity>`` either way.
    Eval-mode rows, where ``"eval"`` is in ``modes``, get ``varprobe/eval/`` in place of
    ``varprobe/``; train rows are logged when ``"train"`` is in ``modes``. ValueError, naming the
    layer, for a layer row whose role is empty, and for a table without a ``role`` column
    (every table a probe flushes has one).
    """
    if not per_layer and "role" not in table.columns:
        raise ValueError(f"the table has no 'role' column to aggregate layers by; columns: "
                         f"{', '.join(map(str, table.columns))} (tables from a Probe have it)")
    t = table[table["mode"].isin(modes)]
    if quantities is not None:
        keep = t["quantity"].map(lambda q: any(fnmatch.fnmatchcase(q, p) for p in quantities))
        t = t[keep.astype(bool)]
    if t.empty:
        return pd.DataFrame({"step": pd.Series([], dtype="int64"), "key": pd.Series([], dtype=str),
                             "value": pd.Series([], dtype="float64")})
    base = PREFIX + "/" + t["mode"].map({"train": "", "eval": "eval/"}) + t["quantity"]
    step_level = t["layer"] == ""
    if per_layer:
        key = base.where(step_level, base + "/" + t["layer"])
        out = pd.DataFrame({"step": t["step"].astype("int64"), "key": key,
                            "value": t["value"].astype("float64")})
    else:
        role = t["role"].astype(str)
        unnamed = ~step_level & (role == "")
        if unnamed.any():
            raise ValueError(f"layer {t.loc[unnamed, 'layer'].iloc[0]!r} has an empty role; a layer row needs "
                             f"one of {', '.join(ROLES)}")
        per_role = PREFIX + "/" + t["mode"].map({"train": "", "eval": "eval/"}) + pd.Series(
            [role_quantity(r, q) for r, q in zip(role, t["quantity"])], index=t.index, dtype=object)
        key = base.where(step_level, per_role)
        out = (pd.DataFrame({"step": t["step"].astype("int64"), "key": key,
                             "value": t["value"].astype("float64")})
               .groupby(["step", "key"], as_index=False, sort=False)["value"].mean())
    return out.sort_values(["step", "key"], kind="stable").reset_index(drop=True)
