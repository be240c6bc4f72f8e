"""varprobe.analysis.slopes: per-seed slopes against numpy.polyfit, the interval against scipy's t by
hand, the verdict rule at its edges, and nothing left out without a name."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from varprobe.analysis.slopes import (SLOPE_COLUMNS, WIDTH_BAND, compare_slopes, fit_slopes, width_verdict)
from varprobe.analysis.uncertainty import Interval

WIDTHS = (4, 8, 16, 32)


def coords(slopes_per_seed, *, layer="features.0.conv", role="conv", quantity="out.sq_mean", step=0,
           widths=WIDTHS, noise=0.0, seed0=0):
    rng = np.random.default_rng(7)
    rows = []
    for seed, s in enumerate(slopes_per_seed, start=seed0):
        for w in widths:
            rows.append({"layer": layer, "role": role, "depth": 0, "quantity": quantity, "step": step, "width": w,
                         "seed": seed, "value": 0.3 * w ** s * math.exp(noise * rng.normal())})
    return pd.DataFrame(rows)


def test_slopes_are_the_mean_of_polyfit_per_seed_with_a_t_interval():
    c = coords([0.1, 0.3, -0.05], noise=0.2)
    fit = fit_slopes(c)
    assert list(fit.table.columns) == list(SLOPE_COLUMNS)
    ref = np.array([np.polyfit(np.log(g["width"].to_numpy(np.float64)), np.log(g["value"].to_numpy(np.float64)), 1)[0]
                    for _, g in c.groupby("seed")])
    assert fit.per_seed["slope"].to_numpy() == pytest.approx(ref, rel=1e-10)
    half = stats.t.ppf(0.975, 2) * ref.std(ddof=1) / math.sqrt(3)
    row = fit.table.iloc[0]
    assert row["slope"] == pytest.approx(ref.mean(), rel=1e-10)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ref.mean() - half, ref.mean() + half), rel=1e-9)
    assert row["n"] == 3


@pytest.mark.parametrize("lo, hi, expected", [
    (-WIDTH_BAND, WIDTH_BAND, "width-stable"), (-0.1, 0.3, "inconclusive"), (0.26, 2.0, "grows"),
    (WIDTH_BAND, 2.0, "inconclusive"), (-3.0, -0.26, "shrinks"), (math.nan, math.nan, "inconclusive"),
    (-math.inf, math.inf, "inconclusive")])
def test_width_verdict_at_its_edges(lo, hi, expected):
    assert width_verdict(Interval(0.0, lo, hi, 3)) == expected


def test_exact_power_laws_give_their_verdicts():
    c = pd.concat([coords([0.0, 0.0, 0.0], layer="a"), coords([1.0, 1.0, 1.0], layer="b"),
                   coords([-1.0, -1.0, -1.0], layer="c"), coords([0.0], layer="d")])
    t = fit_slopes(c).table.set_index("layer")
    assert t.loc["a", "slope"] == pytest.approx(0.0, abs=1e-12) and t.loc["a", "verdict"] == "width-stable"
    assert t.loc["b", "verdict"] == "grows" and t.loc["c", "verdict"] == "shrinks"
    assert t.loc["d", "n"] == 1 and t.loc["d", "verdict"] == "inconclusive"  # one seed: no interval


def test_values_without_a_logarithm_are_left_out_and_named():
    c = coords([0.5, 0.5])
    c.loc[1, "value"] = 0.0
    c.loc[5, "value"] = np.nan
    with pytest.warns(RuntimeWarning, match=r"left out 2 value\(s\).*non-positive.*non-finite"):
        fit = fit_slopes(c)
    assert sorted(fit.left_out["reason"]) == ["non-finite value", "non-positive value"]
    assert fit.per_seed["widths"].tolist() == [3, 3]
    assert fit.table["slope"].iloc[0] == pytest.approx(0.5)


def test_a_seed_with_one_width_left_is_named():
    c = coords([0.5, 0.5], widths=(4, 8))
    c.loc[c["seed"] == 1, "value"] = [-1.0, 2.0]
    with pytest.warns(RuntimeWarning, match="only one width for this seed"):
        fit = fit_slopes(c)
    assert fit.table["n"].iloc[0] == 1


def test_layers_are_matched_by_name_and_role_and_partial_ones_named():
    c = pd.concat([coords([0.0, 0.0], layer="x"), coords([0.0, 0.0], layer="y", widths=(8, 16)),
                   coords([0.0, 0.0], layer="x", role="linear", widths=(4, 8))])
    # shuffled rows: nothing depends on position
    c = c.sample(frac=1.0, random_state=3)
    with pytest.warns(RuntimeWarning, match=r"2 layer\(s\) not at every width.*'x' \(linear\) only at widths 4, 8"):
        fit = fit_slopes(c)
    assert set(map(tuple, fit.partial[["layer", "role"]].to_numpy())) == {("x", "linear"), ("y", "conv")}
    assert fit.partial.set_index("layer").loc["y", "missing"] == (4, 32)
    assert len(fit.table) == 3


def test_intact_coordinates_give_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_slopes(coords([0.0, 0.1]))


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match="missing seed"):
        fit_slopes(coords([0.0]).drop(columns="seed"))
    with pytest.raises(ValueError, match="rows share a coordinate"):
        fit_slopes(pd.concat([coords([0.0]), coords([0.0])]))
    with pytest.raises(ValueError, match="band"):
        fit_slopes(coords([0.0]), band=0.0)


def test_compare_slopes_joins_on_the_keys_it_is_given():
    c = pd.concat([coords([0.0, 0.02, -0.01], layer="a"), coords([1.0, 1.1, 0.9], layer="b")])
    table = fit_slopes(c).table
    out = compare_slopes(table, pd.DataFrame({"layer": ["a", "b"], "predicted": [0.0, 2.0]}))
    assert out.set_index("layer")["within"].to_dict() == {"a": True, "b": False}
    assert out.set_index("layer").loc["b", "error"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="predicted"):
        compare_slopes(table, pd.DataFrame({"x": [1]}))
