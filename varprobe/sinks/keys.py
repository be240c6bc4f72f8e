"""The scalars a dashboard sink logs from a probe table: keys, steps and values (pure pandas)."""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import pandas as pd

__all__ = ["PREFIX", "check_quantities", "check_modes", "scalar_rows"]

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


def scalar_rows(table: pd.DataFrame, *, quantities: tuple[str, ...] | None = None, per_layer: bool = False,
                modes: tuple[str, ...] = ("train",)) -> pd.DataFrame:
    """The scalars of ``table`` as a frame with columns step (int), key (str), value (float64),
    sorted by step then key.

    Keys: ``varprobe/<quantity>/<layer>`` for each layer's row when ``per_layer``; otherwise
    ``varprobe/<quantity>``, the mean over layers (every depth) of that quantity at that step,
    NaN values left out of the mean (pandas' ``mean``; NaN only if every layer's value is NaN; an
    inf stays inf). Step-level rows (layer ``""``: loss, lr, ...) are ``varprobe/<quantity>``
    either way. Eval-mode rows, where ``"eval"`` is in ``modes``, get ``varprobe/eval/`` in place
    of ``varprobe/``; train rows are logged when ``"train"`` is in ``modes``.
    """
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
        out = (pd.DataFrame({"step": t["step"].astype("int64"), "key": base,
                             "value": t["value"].astype("float64")})
               .groupby(["step", "key"], as_index=False, sort=False)["value"].mean())
    return out.sort_values(["step", "key"], kind="stable").reset_index(drop=True)
