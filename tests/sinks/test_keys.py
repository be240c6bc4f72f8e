"""Keys and aggregation of the dashboard sinks, against an independent pandas computation."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from varprobe.sinks import scalar_rows
from varprobe.sinks.keys import check_modes, check_quantities


def expected_scalars(table, per_layer, modes=("train",), quantities=None):
    """{(step, key): value} computed row by row in float64 (no groupby): per layer, or the mean over
    the layers of one role (``varprobe/<role>/<quantity>``, ``block.`` dropped for role block)."""
    acc: dict[tuple[int, str], list[float]] = {}
    for r in table.itertuples(index=False):
        if r.mode not in modes or (quantities is not None and r.quantity not in quantities):
            continue
        head = "varprobe/" + ("eval/" if r.mode == "eval" else "")
        if not r.layer:
            key = head + r.quantity
        elif per_layer:
            key = head + r.quantity + "/" + r.layer
        else:
            q = r.quantity[len("block."):] if r.role == "block" and r.quantity.startswith("block.") else r.quantity
            key = head + r.role + "/" + q
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
        assert {"varprobe/conv/out.var", "varprobe/norm/out.var", "varprobe/linear/out.var"} <= keys
        assert not any(k.startswith("varprobe/out.var") for k in keys)


def test_mean_over_layers_skips_nan_and_keeps_inf(run_table):
    t = run_table[(run_table["quantity"] == "out.var") & (run_table["mode"] == "train")
                  & (run_table["role"] == "conv")].copy()
    step0 = t["step"] == t["step"].min()
    first, second = t.index[step0][:2]
    t.loc[first, "value"] = np.nan
    want = t.loc[step0 & (t.index != first), "value"].mean()
    got = as_dict(scalar_rows(t))[(int(t["step"].min()), "varprobe/conv/out.var")]
    assert got == pytest.approx(want, rel=1e-12)
    t.loc[second, "value"] = np.inf
    assert as_dict(scalar_rows(t))[(int(t["step"].min()), "varprobe/conv/out.var")] == math.inf


def test_quantity_filter_accepts_names_and_globs(run_table):
    rows = scalar_rows(run_table, quantities=("out.*", "loss"))
    keys = set(rows["key"])
    assert keys and all(k.split("/")[-1].startswith("out.") or k == "varprobe/loss" for k in keys)


def test_unknown_quantity_is_one_line_naming_it_and_the_valid_ones():
    with pytest.raises(ValueError) as err:
        check_quantities(["out.var", "out.varr"], "TensorBoardSink")
    msg = str(err.value)
    assert "\n" not in msg and "'out.varr'" in msg and "out.ch_sq_mean" in msg and "TensorBoardSink" in msg
    with pytest.raises(ValueError, match="'test'"):
        check_modes(("train", "test"), "WandbSink")


def _synthetic_table():
    """Two steps of a conv, a LayerNorm whose type name contains "Conv" (role norm), a linear head,
    a residual block (block.out.*, branch.out.*) and the loss: made-up values."""
    rng = np.random.default_rng(3)
    layers = [("stem", "Conv2d", "conv"), ("stage.0.conv", "Conv2d", "conv"),
              ("stage.0.norm", "ConvNextLayerNorm", "norm"), ("stage.0", "ConvNextLayer", "block"),
              ("head", "Linear", "linear")]
    rows = []
    for step in (0, 5):
        for layer, mtype, role in layers:
            qs = ("block.out.var", "branch.out.var") if role == "block" else ("out.var", "grad_out.var")
            for q in qs:
                rows.append((step, layer, 0, "train", mtype, role, q, float(rng.lognormal(0, 2))))
        rows.append((step, "", -1, "train", "", "", "loss", 2.0 - step / 10))
    return pd.DataFrame(rows, columns=["step", "layer", "depth", "mode", "module_type", "role", "quantity", "value"])


def test_tags_are_means_within_one_role_never_across_roles():
    t = _synthetic_table()
    got = as_dict(scalar_rows(t))
    for step in (0, 5):
        at = t[t["step"] == step]
        for role, tag_q, q in (("conv", "out.var", "out.var"), ("norm", "out.var", "out.var"),
                               ("linear", "grad_out.var", "grad_out.var"), ("block", "out.var", "block.out.var"),
                               ("block", "branch.out.var", "branch.out.var")):
            v = [float(x) for x in at.loc[(at["role"] == role) & (at["quantity"] == q), "value"]]
            assert got[(step, f"varprobe/{role}/{tag_q}")] == pytest.approx(math.fsum(v) / len(v), rel=1e-14)
        # the "Conv" in ConvNextLayerNorm does not make it a conv: the conv tag is the mean of the two convs
        convs = at.loc[at["module_type"].eq("Conv2d") & at["quantity"].eq("out.var"), "value"].tolist()
        assert got[(step, "varprobe/conv/out.var")] == pytest.approx(math.fsum(convs) / 2, rel=1e-14)
        assert got[(step, "varprobe/loss")] == 2.0 - step / 10
    assert not any(k in ("varprobe/out.var", "varprobe/block.out.var") for _, k in got)
    assert {k for _, k in got} == {"varprobe/conv/out.var", "varprobe/conv/grad_out.var", "varprobe/norm/out.var",
                                   "varprobe/norm/grad_out.var", "varprobe/linear/out.var",
                                   "varprobe/linear/grad_out.var", "varprobe/block/out.var",
                                   "varprobe/block/branch.out.var", "varprobe/loss"}


def test_a_table_without_roles_is_refused_in_one_line():
    t = _synthetic_table()
    with pytest.raises(ValueError, match="no 'role' column") as err:
        scalar_rows(t.drop(columns="role"))
    assert "\n" not in str(err.value)
    assert len(scalar_rows(t.drop(columns="role"), per_layer=True))  # per layer needs no role
    t.loc[t["layer"] == "head", "role"] = ""
    with pytest.raises(ValueError, match="'head' has an empty role"):
        scalar_rows(t)
