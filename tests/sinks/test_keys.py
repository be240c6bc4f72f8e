"""Keys and aggregation of the dashboard sinks, against an independent pandas computation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from varprobe.sinks import scalar_rows
from varprobe.sinks.keys import check_modes, check_quantities


def expected_scalars(table, per_layer, modes=("train",), quantities=None):
    """{(step, key): value} computed row by row in float64 (no groupby)."""
    acc: dict[tuple[int, str], list[float]] = {}
    for r in table.itertuples(index=False):
        if r.mode not in modes or (quantities is not None and r.quantity not in quantities):
            continue
        base = "varprobe/" + ("eval/" if r.mode == "eval" else "") + r.quantity
        key = base + ("/" + r.layer if per_layer and r.layer else "")
        acc.setdefault((int(r.step), key), []).append(float(r.value))
    out = {}
    for k, vs in acc.items():
        finite = [v for v in vs if not math.isnan(v)]
        out[k] = math.fsum(finite) / len(finite) if finite else math.nan
    return out


def as_dict(rows):
    return {(int(s), k): float(v) for s, k, v in zip(rows["step"], rows["key"], rows["value"])}


def assert_same(got, want):
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-300, nan_ok=True), k


@pytest.mark.parametrize("per_layer", [False, True])
@pytest.mark.parametrize("modes", [("train",), ("train", "eval")])
def test_scalar_rows_match_a_row_by_row_reference(run_table, per_layer, modes):
    rows = scalar_rows(run_table, per_layer=per_layer, modes=modes)
    assert_same(as_dict(rows), expected_scalars(run_table, per_layer, modes))
    assert list(rows["step"]) == sorted(rows["step"])
    keys = set(rows["key"])
    assert "varprobe/loss" in keys and "varprobe/lr" in keys
    assert any(k.startswith("varprobe/eval/") for k in keys) == ("eval" in modes)
    if per_layer:
        assert "varprobe/out.var/0" in keys and "varprobe/out.var" not in keys
    else:
        assert "varprobe/out.var" in keys and not any(k.startswith("varprobe/out.var/") for k in keys)


def test_mean_over_layers_skips_nan_and_keeps_inf(run_table):
    t = run_table[(run_table["quantity"] == "out.var") & (run_table["mode"] == "train")].copy()
    step0 = t["step"] == t["step"].min()
    first, second = t.index[step0][:2]
    t.loc[first, "value"] = np.nan
    want = t.loc[step0 & (t.index != first), "value"].mean()
    got = as_dict(scalar_rows(t))[(int(t["step"].min()), "varprobe/out.var")]
    assert got == pytest.approx(want, rel=1e-12)
    t.loc[second, "value"] = np.inf
    assert as_dict(scalar_rows(t))[(int(t["step"].min()), "varprobe/out.var")] == math.inf


def test_quantity_filter_accepts_names_and_globs(run_table):
    rows = scalar_rows(run_table, quantities=("out.*", "loss"))
    keys = set(rows["key"])
    assert keys and all(k.startswith("varprobe/out.") or k == "varprobe/loss" for k in keys)


def test_unknown_quantity_is_one_line_naming_it_and_the_valid_ones():
    with pytest.raises(ValueError) as err:
        check_quantities(["out.var", "out.varr"], "TensorBoardSink")
    msg = str(err.value)
    assert "\n" not in msg and "'out.varr'" in msg and "out.ch_sq_mean" in msg and "TensorBoardSink" in msg
    with pytest.raises(ValueError, match="'test'"):
        check_modes(("train", "test"), "WandbSink")
