"""The competing explanation (issue 12, item 5): is collapse, and the growth of conv output
variance, better predicted by the shift of the average gradient or by the relative size of the
weight updates?

BN, WS, WN and PWS make a conv's output invariant to the scale of its raw weight, so their
effective learning rate moves with the weight norm (van Laarhoven 2017; Hoffer et al. 2018; Arora
et al. 2019): a net may be stabilised by what its normalisation does to ||dW|| / ||W||, not by the
removal of the shift. Both quantities are recorded (``gw.shift_ratio``, ``dec.shift`` /
``dec.measured``, ``w.update_ratio``), and rows E1* (collapse) and E2* (variance growth) ask,
across every run at a large learning rate (main schemes and attribution controls), which one ranks
the outcome. The rule, fixed here before anything runs:

* per run, a predictor's early value: the median over conv layers after the first (depth >= 1) of
  the layer's mean over the first ``EARLY_STEPS`` recorded steps after step 0 (finite values only;
  step 0 has no update ratio). A run without one is left out of that row (its n says so);
* outcomes: *collapsed* (final train accuracy below ``measures.TRAINED``, as 4a) and the *log growth*
  of ``out.sq_mean`` from the first to the last recorded step, mean over conv layers after the first;
* statistics (``varprobe.claims.summary``): AUC for collapse, Spearman's r_s for growth; the
  comparisons are the AUC or r_s of a shift predictor minus that of the update ratio, threshold 0;
  both theories predict a positive association, so the comparison is signed: a predictor that
  ranks the outcome the wrong way round supports neither.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EARLY_STEPS", "PREDICTORS", "OUTCOMES", "Row", "ROWS", "SHIFT", "UPDATE", "competing_report"]

#: Recorded steps after step 0 that make a run's early value. Fixed.
EARLY_STEPS = 5

#: predictor key -> (what it is, the probe quantity it reads)
PREDICTORS = {
    "shift": ("the shift of the average gradient", "gw.shift_ratio"),
    "share": ("the filter-sum (shift) share of the conv output", "dec.shift / dec.measured"),
    "update": ("the relative update size", "w.update_ratio"),
}
#: outcome key -> (row id prefix, kind of one predictor, kind of a comparison, threshold, text)
OUTCOMES = {
    "collapse": ("E1", "auc", "auc2", 0.5, "collapse (final train accuracy below 0.5)"),
    "growth": ("E2", "rank", "rank2", 0.0, "variance growth (log growth of out.sq_mean over training)"),
}
SHIFT, UPDATE = ("shift", "share"), "update"


@dataclass(frozen=True)
class Row:
    """One E row: ``predictors`` is (p,) for "p predicts the outcome" or (p, "update") for "p
    predicts it better than the update ratio"."""

    id: str
    outcome: str
    predictors: tuple[str, ...]

    @property
    def kind(self) -> str:
        return OUTCOMES[self.outcome][1 if len(self.predictors) == 1 else 2]

    @property
    def threshold(self) -> float:
        return OUTCOMES[self.outcome][3] if len(self.predictors) == 1 else 0.0


ROWS = tuple(Row(f"{OUTCOMES[o][0]}{letter}", o, preds) for o in OUTCOMES
             for letter, preds in zip("abcde", (("shift",), ("share",), ("update",), ("shift", UPDATE),
                                                ("share", UPDATE))))

_CITE = "van Laarhoven 2017; Hoffer et al. 2018; Arora et al. 2019"


def _word(rows: list[str], against: list[bool]) -> str:
    """rows: the verdicts of the rows where the cause's predictors predict an outcome; against:
    per comparison row, whether it says the other cause predicts better."""
    if all(v == "does not hold" for v in rows) or all(against):
        return "**not supported**"
    if all(v == "holds" for v in rows) and not any(against):
        return "**supported**"
    return "**not settled**"


def competing_report(verdicts: dict[str, str], suffix: str) -> list[str]:
    """Markdown lines naming both causes at one large learning rate; row ids are ``E..{suffix}``
    ("" or "@0.5"). Rule, fixed: a cause is **supported** when every row in which its predictors
    predict an outcome holds and no comparison row says the other cause predicts better; **not
    supported** when every such row does not hold, or every comparison row says the other cause
    predicts better; **not settled** otherwise. A comparison row (shift predictor minus update
    ratio, > 0) that holds says the shift predicts better; one that does not hold says the update
    ratio predicts at least as well."""
    v = {r.id: verdicts[f"{r.id}{suffix}"] for r in ROWS}
    single = [r for r in ROWS if len(r.predictors) == 1]
    compare = [r for r in ROWS if len(r.predictors) == 2]
    shift_rows = [r for r in single if r.predictors[0] in SHIFT]
    update_rows = [r for r in single if r.predictors[0] == UPDATE]

    def detail(rows) -> str:
        return "; ".join(f"{r.id}{suffix} {v[r.id]}" for r in rows)

    shift = _word([v[r.id] for r in shift_rows], [v[r.id] == "does not hold" for r in compare])
    update = _word([v[r.id] for r in update_rows], [v[r.id] == "holds" for r in compare])
    return [f"- the shift of the average gradient, as a predictor of collapse and variance growth across runs: "
            f"{shift} ({detail(shift_rows)}; against the update size: {detail(compare)})",
            f"- the relative update size, i.e. the effective learning rate of scale-invariant weights ({_CITE}): "
            f"{update} ({detail(update_rows)}; against the shift: {detail(compare)})",
            "  (rule, fixed in varprobe.claims.causes: a cause is supported when every row where its predictors "
            "rank an outcome holds and no comparison says the other predicts better; not supported when every "
            "such row does not hold or every comparison says the other predicts better; not settled otherwise)"]
