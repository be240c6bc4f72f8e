"""Attribution: the controls that separate the causes the paper names, and the comparisons that
isolate each cause. ``varprobe.claims.reproduce`` runs every control and turns each comparison into
paired claim rows (``A<k>-small``, ``A<k>-large``, or ``A<k>-large@<lr>`` where a profile has several
large learning rates); :func:`causes_report` states which causes the data supports at each learning rate.

A symptom can hold while its attribution fails: a PWS ResNet keeps two GroupNorm layers, so a PWS
run that trains where a plain one collapses does not by itself show that removing the shift of
the average gradient is what saved it. Each comparison below changes one thing.
"""
from __future__ import annotations

from dataclasses import dataclass

from .causes import competing_report

__all__ = ["CONTROLS", "Comparison", "COMPARISONS", "causes_report"]

#: control label -> RunConfig changes from the attribution base config.
CONTROLS: dict[str, dict] = {
    "plain": {"scheme": "plain"},
    "plain+proj": {"scheme": "plain", "project_shift": True},
    "plain+gn": {"scheme": "plain+gn"},
    "plain+gn+proj": {"scheme": "plain+gn", "project_shift": True},
    "centered": {"scheme": "centered"},
    "pws": {"scheme": "pws"},
    "pws-frozen-alpha": {"scheme": "pws", "freeze_alpha": True},
    "pws-no-wd": {"scheme": "pws", "weight_decay": 0.0},
}


@dataclass(frozen=True)
class Comparison:
    """``treatment`` minus ``control`` in final train accuracy, same seed and learning rate; the
    claim (that ``cause`` matters) is that the difference is above ``threshold``."""

    key: str
    cause: str
    claim: str
    treatment: str
    control: str
    threshold: float = 0.0


COMPARISONS = (
    Comparison("A1", "the shift of the average gradient", "Removing the shift (projection) lets plain nets train",
               "plain+proj", "plain"),
    Comparison("A2", "the surviving norm layers", "PWS's two GroupNorm layers alone let plain nets train",
               "plain+gn", "plain"),
    Comparison("A3", "the shift of the average gradient",
               "With PWS's GroupNorms kept, removing the shift still helps", "plain+gn+proj", "plain+gn"),
    Comparison("A4", "the rescaling that standardization adds to centering",
               "Standardization's rescaling helps beyond centering", "pws", "centered"),
    Comparison("A5", "PWS's learned gain alpha", "Learning alpha helps PWS (vs alpha frozen at 1)",
               "pws", "pws-frozen-alpha"),
    Comparison("A6", "weight decay", "Weight decay helps PWS train", "pws", "pws-no-wd"),
)


def causes_report(verdicts: dict[str, str], lrs: dict[str, float]) -> str:
    """Markdown: per learning rate and cause, what the comparisons' verdicts say. ``lrs`` maps a
    row suffix ("small", "large", or "large@0.5" where there are several large rates) to its
    learning rate; the verdict of comparison ``key`` there is ``verdicts[f"{key}-{suffix}"]``. A cause is *supported* when every comparison that
    isolates it holds, *not supported* when every one does not hold, *not settled* otherwise.

    At a large learning rate where the rows of the competing explanation (E1*, E2*,
    ``varprobe.claims.causes``) were measured, both causes it weighs are named as well: the shift
    of the average gradient and the relative update size (effective learning rate)."""
    causes = list(dict.fromkeys(c.cause for c in COMPARISONS))
    lines = ["## Attribution: which causes the data supports\n"]
    for tag, lr in lrs.items():
        lines.append(f"At the {tag.split('@')[0]} learning rate ({lr:g}):\n")
        for cause in causes:
            rows = [c for c in COMPARISONS if c.cause == cause]
            got = [verdicts[f"{c.key}-{tag}"] for c in rows]
            if all(v == "holds" for v in got):
                word = "**supported**"
            elif all(v == "does not hold" for v in got):
                word = "**not supported**"
            else:
                word = "**not settled**"
            detail = "; ".join(f"{c.key}-{tag} ({c.treatment} vs {c.control}) {v}" for c, v in zip(rows, got))
            lines.append(f"- {cause}: {word} ({detail})")
        if tag.startswith("large") and f"E1a{tag[len('large'):]}" in verdicts:  # E1*, E2*: claims.causes
            lines += competing_report(verdicts, tag[len("large"):])
        lines.append("")
    return "\n".join(lines)
