"""How fragile a settled verdict is: the rule, fixed in code before any report was read.

Only settled rows (verdict "holds" or "does not hold") are measured; an inconclusive row has no
verdict to lose. Every candidate verdict below is recomputed by :func:`~varprobe.claims.summary.summarize`
itself, the code path that gave the row's verdict, with the row's kind, direction and threshold.

- **Outcome kinds** (:data:`OUTCOME_KINDS`: values that happen or not per seed): the *fragility
  index*, the fewest per-seed outcomes that must flip (happened <-> did not) for ``summarize`` to
  give any other verdict. An "outcome" row has one outcome per seed, an "outcome2" row two (one
  per scheme), each flipped on its own. The search goes in increasing number of flips (1, 2, ...)
  and stops at the first number at which some choice of flips changes the verdict. Both kinds'
  statistics are counts, unchanged when the seeds are reordered, so the search visits each
  multiset of per-seed outcomes once (breadth first, one flip per edge). ``None`` when no
  choice of flips changes the verdict. Fragile: index 1.
- **Every other kind**: *leave-one-out*, the verdict with each single seed's values left out (for
  the kinds pooled across runs, all runs of that seed). With one seed, leaving it out leaves no
  data, which settles nothing: "inconclusive". Fragile: any seed left out changes the verdict.

A row is **robust** when it is settled and not fragile. The report's counts are then robust holds,
robust does not hold, fragile, inconclusive.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .summary import summarize

__all__ = ["OUTCOME_KINDS", "SETTLED", "RULE", "STANDINGS", "Fragility", "fragility", "fragility_index", "leave_one_out"]

#: kinds whose per-seed values are outcomes (a bool per seed, or a pair of bools per seed)
OUTCOME_KINDS = ("outcome", "outcome2")
#: verdicts that a fragility measure is computed for
SETTLED = ("holds", "does not hold")
#: what the report's counts split the rows into
STANDINGS = ("robust holds", "robust does not hold", "fragile", "inconclusive")
#: the rule as the report states it
RULE = ("Fragility (fixed in code, varprobe.claims.fragility, before any report was read), for every settled "
        "row: for outcome rows (outcome, outcome2) the **fragility index**, the fewest per-seed outcomes that "
        "must flip (happened <-> did not; an outcome2 seed has one per scheme) for the same statistic to give "
        "another verdict, searched in increasing number of flips; for every other row **leave-one-out**, the "
        "verdict with each single seed left out (for the rows pooled across runs, all of that seed's runs). A "
        "row is **fragile** when a single seed can change its verdict (index 1, or a seed left out changes "
        "it), **robust** otherwise.")


@dataclass(frozen=True)
class Fragility:
    """The fragility of one settled row: ``measure`` ("fragility index" or "leave-one-out");
    ``index`` (outcome kinds: the fewest flips that change the verdict, None when none does);
    ``left_out`` (the other kinds: the verdict with seed i left out, for each i); ``fragile`` (a
    single seed can change the verdict); ``shown`` (the report's text)."""

    measure: str
    index: int | None
    left_out: tuple[str, ...]
    fragile: bool
    shown: str

    def to_json(self) -> dict:
        return {"measure": self.measure, "index": self.index, "left_out": list(self.left_out),
                "fragile": self.fragile, "shown": self.shown}


def _verdict(kind: str, values: Sequence, direction: str, threshold: float) -> str:
    return summarize(kind, list(values), direction, threshold).verdict


def _flips(state: tuple) -> set[tuple]:
    """Every multiset one flipped outcome away from ``state`` (sorted tuples)."""
    out = set()
    for i, v in enumerate(state):
        if isinstance(v, tuple):
            changed = [tuple(not x if j == s else x for j, x in enumerate(v)) for s in range(len(v))]
        else:
            changed = [not v]
        for w in changed:
            out.add(tuple(sorted(state[:i] + (w,) + state[i + 1:])))
    return out


def fragility_index(kind: str, values: Sequence, direction: str, threshold: float) -> int | None:
    """The fewest per-seed outcomes of ``values`` (an outcome kind's values) that must flip for
    ``summarize`` to give another verdict than it gives for ``values``; None when no flips do."""
    if kind not in OUTCOME_KINDS:
        raise ValueError(f"the fragility index is for the outcome kinds {', '.join(OUTCOME_KINDS)}; got {kind!r}")
    norm = (lambda v: tuple(bool(x) for x in v)) if kind == "outcome2" else bool
    start = tuple(sorted(norm(v) for v in values))
    base = _verdict(kind, start, direction, threshold)
    seen, level, flips = {start}, {start}, 0
    while level:
        flips += 1
        level = {w for s in level for w in _flips(s)} - seen
        seen |= level
        if any(_verdict(kind, s, direction, threshold) != base for s in level):
            return flips
    return None


def leave_one_out(kind: str, values: Sequence, direction: str, threshold: float) -> tuple[str, ...]:
    """The verdict ``summarize`` gives with each single seed of ``values`` left out, in seed
    order; "inconclusive" where nothing is left."""
    return tuple(_verdict(kind, list(values[:i]) + list(values[i + 1:]), direction, threshold)
                 if len(values) > 1 else "inconclusive" for i in range(len(values)))


def fragility(kind: str, values: Sequence, direction: str, threshold: float, verdict: str) -> Fragility | None:
    """The fragility of a row whose ``values`` gave ``verdict`` (see the module's rule); None when
    the row is inconclusive."""
    if verdict not in SETTLED:
        return None
    if kind in OUTCOME_KINDS:
        index = fragility_index(kind, values, direction, threshold)
        fragile = index == 1
        what = ("index none: no flips change it" if index is None
                else f"index {index}: {index} flipped outcome{'s change' if index > 1 else ' changes'} it")
        return Fragility("fragility index", index, (), fragile, f"{'fragile: ' if fragile else ''}{what}")
    left = leave_one_out(kind, values, direction, threshold)
    changed = [f"seed {i} out: {v}" for i, v in enumerate(left) if v != verdict]
    shown = (f"fragile: {'; '.join(changed)}" if changed
             else f"each of {len(left)} seeds left out keeps it")
    return Fragility("leave-one-out", None, left, bool(changed), shown)
