"""plot.coord_check and its caption, from hand-made sweep tables: rows and panels, lines per layer
coloured by depth, style by verdict, the slopes printed, and a caption whose numbers are the table's."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from varprobe.analysis.slopes import fit_slopes
from varprobe.plot import coord_check
from varprobe.plot.captions import caption_coord_check, num
from varprobe.plot.coord_check import VERDICT_STYLES, choose_steps


def _coords() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for quantity, grow in (("out.sq_mean", {"a": 0.0, "b": 1.0}), ("grad_out.sq_mean", {"a": -1.0, "b": 0.0}),
                           ("w.update_ratio", {"a": 0.5, "b": 0.5})):
        for step in range(5):
            if quantity == "w.update_ratio" and step == 0:
                continue
            for depth, layer in enumerate(("a", "b")):
                for seed in range(3):
                    for w in (8, 16, 32):
                        rows.append({"layer": layer, "role": "conv", "depth": depth, "quantity": quantity, "step": step,
                                     "width": w, "seed": seed,
                                     "value": w ** grow[layer] * math.exp(0.01 * rng.normal())})
    return pd.DataFrame(rows)


def test_choose_steps_first_middle_last():
    assert choose_steps(range(50)) == [0, 24, 49] or choose_steps(range(50)) == [0, 25, 49]
    assert choose_steps([3, 1]) == [1, 3]


def test_figure_has_a_forward_backward_and_update_row_per_step():
    coords = _coords()
    slopes = fit_slopes(coords).table
    fig = coord_check(coords, slopes)
    axes = np.array(fig.axes[:9]).reshape(3, 3)
    assert [ax.get_title() for ax in axes[0]] == ["step 0", "step 2", "step 4"]
    assert "out.sq_mean" in axes[0, 0].get_ylabel() and "grad_out.sq_mean" in axes[1, 0].get_ylabel()
    assert "w.update_ratio" in axes[2, 0].get_ylabel()
    assert any("no w.update_ratio" in t.get_text() for t in axes[2, 0].texts)  # no update at step 0
    lines = axes[0, 1].get_lines()
    assert len(lines) == 2 and lines[0].get_color() != lines[1].get_color()
    assert [ln.get_linestyle() for ln in lines] == ["-", "--"]  # a width-stable, b grows
    at = slopes[(slopes["quantity"] == "out.sq_mean") & (slopes["step"] == 2)].sort_values("layer")
    assert [t.get_text() for t in axes[0, 1].texts] == [f"{s:+.2f}" for s in at["slope"]]
    assert at["slope"].tolist() == pytest.approx([0.0, 1.0], abs=0.02)
    assert axes[0, 0].get_xscale() == "log" and axes[0, 0].get_yscale() == "log"
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert "a (conv, depth 0)" in labels and "verdict (band ±0.25)" in labels
    assert set(VERDICT_STYLES) <= set(labels)


def test_caption_reads_the_slopes_table():
    coords = _coords()
    slopes = fit_slopes(coords).table
    text = caption_coord_check(slopes)
    row = slopes.set_index(["layer", "quantity", "step"]).loc
    b0, a4, a2 = row["b", "out.sq_mean", 0], row["a", "grad_out.sq_mean", 4], row["a", "w.update_ratio", 2]
    assert (f"out.sq_mean at step 0: 1 of 2 layers width-stable; grows: b {b0.slope:+.2f} [{num(b0.ci_low)}, "
            f"{num(b0.ci_high)}]") in text
    assert f"grad_out.sq_mean at step 4: 1 of 2 layers width-stable; shrinks: a {a4.slope:+.2f}" in text
    assert f"w.update_ratio at step 2: 0 of 2 layers width-stable; grows: a {a2.slope:+.2f}" in text
    assert "width-stable: the interval within ±0.25" in text


def test_non_positive_values_are_counted_and_no_row_is_refused():
    coords = _coords()
    coords.loc[0, "value"] = 0.0
    with pytest.warns(RuntimeWarning):
        slopes = fit_slopes(coords).table
    fig = coord_check(coords, slopes)
    assert "1 non-positive or non-finite value(s) left out" in fig.get_supxlabel()
    with pytest.raises(ValueError, match="present: grad_out.sq_mean"):
        coord_check(coords, slopes, rows=["gw.rms"])
