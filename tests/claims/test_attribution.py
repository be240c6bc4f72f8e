"""The attribution controls and comparisons: each comparison changes exactly one thing, and the
report's statement of causes follows the verdicts."""
from __future__ import annotations

import pytest

from varprobe.experiment import RunConfig
from varprobe.claims.attribution import COMPARISONS, CONTROLS, causes_report

BASE = RunConfig(model="resnet8", size=8)


def test_every_comparison_changes_exactly_one_config_field():
    configs = {label: BASE.replace(**changes).to_dict() for label, changes in CONTROLS.items()}
    for c in COMPARISONS:
        a, b = configs[c.treatment], configs[c.control]
        changed = [k for k in a if a[k] != b[k]]
        assert len(changed) == 1, (c.key, changed)


def test_the_issue_s_comparisons_are_all_there():
    pairs = {(c.treatment, c.control) for c in COMPARISONS}
    assert {("plain+proj", "plain"), ("plain+gn", "plain"), ("plain+gn+proj", "plain+gn"), ("pws", "centered"),
            ("pws", "pws-frozen-alpha"), ("pws", "pws-no-wd")} == pairs


def _verdicts(default: str, **overrides: str) -> dict[str, str]:
    out = {f"{c.key}-{tag}": default for c in COMPARISONS for tag in ("small", "large")}
    out.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return out


@pytest.mark.parametrize("a1, a3, word", [
    ("holds", "holds", "**supported**"),
    ("does not hold", "does not hold", "**not supported**"),
    ("holds", "does not hold", "**not settled**"),
    ("inconclusive", "holds", "**not settled**"),
])
def test_a_cause_is_supported_only_when_every_comparison_isolating_it_holds(a1, a3, word):
    text = causes_report(_verdicts("inconclusive", A1_large=a1, A3_large=a3), {"small": 0.02, "large": 0.2})
    large = text.split("At the large learning rate (0.2):")[1]
    line = next(s for s in large.splitlines() if s.startswith("- the shift of the average gradient"))
    assert word in line and f"A1-large (plain+proj vs plain) {a1}" in line
    small = text.split("At the large")[0]
    assert "- the shift of the average gradient: **not settled**" in small
    for cause in {c.cause for c in COMPARISONS}:
        assert text.count(f"- {cause}: ") == 2  # once per learning rate


def test_several_large_rates_get_one_section_each_with_their_row_ids():
    verdicts = {f"{c.key}-large@{lr:g}": "holds" for c in COMPARISONS for lr in (0.1, 0.5)}
    text = causes_report(verdicts, {"large@0.1": 0.1, "large@0.5": 0.5})
    assert "At the large learning rate (0.1):" in text and "At the large learning rate (0.5):" in text
    assert "A1-large@0.5 (plain+proj vs plain) holds" in text
    assert text.count("- the surviving norm layers: **supported**") == 2
