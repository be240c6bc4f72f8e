"""Selecting the quantities a Probe records: presets and glob patterns over
``varprobe.vocabulary.QUANTITIES`` (where every quantity is defined)."""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from ..vocabulary import OUT_SUFFIXES, PRESETS, QUANTITIES

__all__ = ["QUANTITIES", "PRESETS", "OUT_SUFFIXES", "resolve_quantities", "describe"]


def resolve_quantities(quantities: str | Iterable[str]) -> frozenset[str]:
    """Names selected by a preset ("all", "forward", "causes"), or by an iterable of names and glob patterns.

    Raises ValueError naming the entry that matches nothing, with the valid presets and names.
    """
    if isinstance(quantities, str):
        if quantities in PRESETS:
            return frozenset(PRESETS[quantities])
        quantities = [quantities]
    chosen: set[str] = set()
    for pattern in quantities:
        if not isinstance(pattern, str):
            raise TypeError(f"quantities entries must be str, got {pattern!r}")
        hits = [q for q in QUANTITIES if fnmatch.fnmatchcase(q, pattern)]
        if not hits:
            raise ValueError(f"quantity {pattern!r} matches nothing; presets: {', '.join(PRESETS)}; "
                             f"quantities: {', '.join(QUANTITIES)}")
        chosen.update(hits)
    return frozenset(chosen)


def describe(name: str) -> str:
    """The definition of quantity ``name`` (see the module docstring for shared conventions)."""
    try:
        return QUANTITIES[name]
    except KeyError:
        raise ValueError(f"unknown quantity {name!r}; quantities: {', '.join(QUANTITIES)}") from None
