"""varprobe.experiment.sweep: slopes against an independent float64 fit of the runs' own frames, the
init slopes 0 and L of theory recovered within their intervals, resume like grid, and what cannot be a
coordinate named (pooled calls, layers at only some widths, bad widths)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from varprobe.experiment import RunConfig
from varprobe.experiment.sweep import RUNS_DIR, SLOPES_NAME, check_widths, sweep
from varprobe.record import load_run

TINY = dict(batch_size=16, data_limit=64, threads=1, momentum=0.0, weight_decay=0.0)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """simple_cnn, plain, widths 4, 8, 16, two seeds, two steps."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    base = RunConfig(scheme="plain", steps=2, **TINY)
    threads = torch.get_num_threads()
    try:
        return sweep("simple_cnn", (4, 8, 16), out, base=base, seeds=(0, 1), progress=False)
    finally:
        torch.set_num_threads(threads)


def test_slopes_match_an_independent_fit_of_the_runs_own_frames(plain):
    runs = sorted((plain.root / RUNS_DIR).iterdir())
    assert len(runs) == 6
    per = {}
    for path in runs:
        r = load_run(path)
        f = r.frame[(r.frame["mode"] == "train") & (r.frame["layer"] != "")]
        for (layer, quantity, step), value in f.set_index(["layer", "quantity", "step"])["value"].items():
            per.setdefault((layer, quantity, step), {}).setdefault(r.config["seed"], []).append(
                (r.config["width"], value))
    table = pd.read_csv(plain.root / SLOPES_NAME)
    assert list(table.columns) == ["layer", "role", "quantity", "step", "slope", "ci_low", "ci_high", "n", "verdict"]
    pd.testing.assert_frame_equal(table, plain.slopes.reset_index(drop=True), check_dtype=False, rtol=1e-12)
    checked = 0
    for row in table.itertuples():
        seeds = per[(row.layer, row.quantity, row.step)]
        slopes = []
        for points in seeds.values():
            w, v = np.array(points, dtype=np.float64).T
            if np.all(v > 0) and np.unique(w).size > 1:
                slopes.append(np.polyfit(np.log(w), np.log(v), 1)[0])
        slopes = np.array(slopes)
        assert row.n == slopes.size
        assert row.slope == pytest.approx(slopes.mean(), rel=1e-9, abs=1e-12)
        if slopes.size == 2:
            half = stats.t.ppf(0.975, 1) * slopes.std(ddof=1) / math.sqrt(2)
            assert (row.ci_low, row.ci_high) == pytest.approx((slopes.mean() - half, slopes.mean() + half),
                                                              rel=1e-8, abs=1e-10)
        checked += 1
    assert checked == len(table) > 50
    assert {"out.sq_mean", "grad_out.sq_mean", "gw.rms", "w.update_ratio"} <= set(table["quantity"])
    assert set(plain.coords["width"]) == {4, 8, 16} and (plain.root / "coord_check.png").stat().st_size > 0


def test_a_sweep_resumes_like_grid(plain):
    dirs = sorted((plain.root / RUNS_DIR).iterdir())
    starts = {d.name: load_run(d).meta["start_time"] for d in dirs}
    again = sweep("simple_cnn", (4, 8, 16), plain.root, base=RunConfig(scheme="plain", steps=2, **TINY), seeds=(0, 1),
                  progress=False, figure=None)
    assert not any(o["ran"] for o in again.runs.outcomes)
    assert {d.name: load_run(d).meta["start_time"] for d in dirs} == starts
    pd.testing.assert_frame_equal(again.slopes, plain.slopes)


def _mlp(width: int, std=None, depth: int = 4) -> nn.Module:
    """A plain ReLU chain on 8x8 digits: linear 64 -> width, (depth - 2) x width -> width, width -> 10,
    zero biases, Kaiming fan-in (std None) or N(0, std^2) weights."""
    sizes = [64] + [width] * (depth - 1) + [10]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        lin = nn.Linear(a, b)
        if std is None:
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        else:
            nn.init.normal_(lin.weight, 0.0, std)
        nn.init.zeros_(lin.bias)
        layers += [lin] + ([nn.ReLU()] if i < depth - 1 else [])
    return nn.Sequential(*layers)


def kaiming_mlp(width: int) -> nn.Module:
    return _mlp(width)


def standard_mlp(width: int) -> nn.Module:
    return _mlp(width, std=1.0)


@pytest.mark.parametrize("factory, init, expected", [(kaiming_mlp, "kaiming", [0, 0, 0, 0]),
                                                      (standard_mlp, "standard", [0, 1, 2, 3])])
def test_init_slopes_0_and_L_are_recovered_within_their_intervals(tmp_path, factory, init, expected):
    base = RunConfig(steps=1, quantities="forward", **{**TINY, "batch_size": 64})
    threads = torch.get_num_threads()
    try:
        result = sweep(factory, (16, 32, 64), tmp_path / "s", base=base, seeds=(0, 1, 2), progress=False, figure=None)
    finally:
        torch.set_num_threads(threads)
    for how in (init, "measured"):  # the named law, and the one read off the weights agree
        got = result.compare_init(how).sort_values("layer", key=lambda s: s.str.split(".").str[0].astype(int))
        assert got["predicted"].tolist() == pytest.approx(expected)
        assert got["within"].all(), got
        assert np.abs(got["error"]).max() < 0.5  # nearer the prediction than any other integer slope
    verdicts = got.set_index("layer")["verdict"]
    if init == "kaiming":  # three seeds at widths 16-64 are too few for width-stable; never a wrong direction
        assert not verdicts.isin(["grows", "shrinks"]).any()
    else:
        assert verdicts.iloc[-1] == "grows"


class Twice(nn.Module):
    """A shared block called twice per forward, and a layer that exists only from width 8 on."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(64, width)
        self.shared = nn.Linear(width, width)
        self.extra = nn.Linear(width, width) if width >= 8 else None
        self.out = nn.Linear(width, 10)

    def forward(self, x):
        h = torch.relu(self.inp(x.flatten(1)))
        h = torch.relu(self.shared(torch.relu(self.shared(h))))
        if self.extra is not None:
            h = torch.relu(self.extra(h))
        return self.out(h)


def test_pooled_calls_and_partial_layers_are_named(tmp_path):
    base = RunConfig(steps=1, quantities="forward", **TINY)
    with pytest.warns(RuntimeWarning) as caught:
        result = sweep(Twice, (4, 8, 16), tmp_path / "s", base=base, seeds=(0,), progress=False, figure=None)
    text = "\n".join(str(w.message) for w in caught)
    assert "shared (2 calls)" in text and "'extra' (linear) only at widths 8, 16" in text
    assert result.pooled.to_dict("records") == [{"layer": "shared", "calls": 2}]
    assert result.partial[["layer", "role"]].to_dict("records") == [{"layer": "extra", "role": "linear"}]
    assert result.partial["missing"].tolist() == [(4,)]
    assert any("pooled" in line for line in result.report()) and any("extra" in line for line in result.report())
    assert load_run(next((tmp_path / "s" / RUNS_DIR).iterdir())).config["model_factory"].endswith("Twice")


@pytest.mark.parametrize("widths, needle", [((8,), "at least two widths"), ((8, 8), "width 8 is given more than once"),
                                            ((0, 8), "width 0 is not a positive integer"),
                                            ((8, 2.5), "width 2.5 is not"), ((), "at least two")])
def test_bad_widths_are_refused_before_anything_runs(tmp_path, widths, needle):
    with pytest.raises(ValueError, match=needle):
        sweep("simple_cnn", widths, tmp_path / "s")
    with pytest.raises(ValueError, match=needle):
        check_widths(widths)
    assert not (tmp_path / "s").exists()


def test_a_model_that_cannot_be_built_at_a_width_is_named(tmp_path):
    def odd(width: int) -> nn.Module:
        if width % 2:
            raise ValueError(f"width {width} is odd")
        return _mlp(width)
    with pytest.raises(ValueError, match=r"at width 5: width 5 is odd; valid: the widths that work here, 4, 8"):
        sweep(odd, (4, 5, 8), tmp_path / "s", base=RunConfig(**TINY))
    with pytest.raises(ValueError, match="width 4 cannot be built.*widths that build: 8"):
        sweep("simple_cnn", (4, 8), tmp_path / "s", base=RunConfig(scheme="gn", **TINY))
    assert not (tmp_path / "s").exists()
