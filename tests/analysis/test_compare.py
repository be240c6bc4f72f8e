"""compare() and compare_summary() against float64 references computed here, on the actual weights
and inputs of probed layers."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe import theory
from varprobe.analysis import compare, compare_summary
from varprobe.analysis.compare import BAND, CHANNEL, FLOOR, POOLED
from varprobe.probe import Probe


def _probe(model, x, quantities="all"):
    probe = Probe(model, quantities=quantities)
    with probe:
        model(x).sum().backward()
        probe.step()
    return probe.frame()


def test_pooled_prediction_equals_theory_split_on_the_layer_weights():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, bias=False)  # no padding, no bias: the i.i.d. prediction applies as stated
    model = nn.Sequential(conv)
    x = torch.rand(64, 4, 10, 10)           # i.i.d. entries with a non-zero mean
    table = compare(_probe(model, x), prediction="pooled")
    assert set(table["prediction"]) == {POOLED}
    mu, var = float(x.double().mean()), float(x.double().var(unbiased=False))
    split = theory.second_moment_split(conv.weight.detach(), mu, var)
    got = table.set_index("quantity")["predicted"]
    np.testing.assert_allclose(got["out.ch_var"], split.zero_mean.mean(), rtol=1e-6)
    np.testing.assert_allclose(got["out.ch_sq_mean"], split.shift.mean(), rtol=1e-6)
    # the measurement agrees with the prediction for i.i.d. inputs (Monte Carlo, 64*8*8 positions)
    assert (table["rel_error"].abs() < 0.1).all(), table


def _brute(conv, x):
    """float64 per-channel padding-aware prediction written out: E[y] at every output position is
    the conv of the image of the input channel means, Var[y] that of the channel variances with the
    squared kernel; per output channel the mean over positions of E[y], and the mean of Var[y] plus
    the spread of E[y]; averaged over channels as out.ch_var / out.ch_sq_mean."""
    x = x.double()
    mu, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    w, b = conv.weight.detach().double(), conv.bias.detach().double()
    geo = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
    shape = (1, x.shape[1], *x.shape[2:])
    e = F.conv2d(mu[None, :, None, None].expand(shape), w, b, **geo)[0].flatten(1)
    v = F.conv2d(var[None, :, None, None].expand(shape), w * w, None, **geo)[0].flatten(1)
    m = e.mean(1)
    return float((v.mean(1) + (e - m[:, None]).square().mean(1)).mean()), float((m * m).mean())


def test_best_prediction_is_per_channel_padding_aware_and_equals_a_brute_force_reference():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 8, 3, padding=1, stride=2, groups=1)
    nn.init.normal_(conv.bias, 0.0, 0.3)
    model = nn.Sequential(conv)
    mu, sd = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 0.5, 2.0])  # channels of unequal moments
    x = mu[None, :, None, None] + sd[None, :, None, None] * torch.randn(256, 3, 9, 9)
    frame = _probe(model, x)
    table = compare(frame).set_index("quantity")
    assert set(table["prediction"]) == {CHANNEL}
    want_var, want_sq = _brute(conv, x)
    assert table.loc["out.ch_var", "predicted"] == pytest.approx(want_var, rel=1e-6)  # float32 model
    assert table.loc["out.ch_sq_mean", "predicted"] == pytest.approx(want_sq, rel=1e-6)
    # i.i.d. entries per channel: the per-channel prediction meets the measurement (MC), the pooled misses it
    assert (table["rel_error"].abs() < 0.03).all(), table
    pooled = compare(frame, prediction="pooled").set_index("quantity")
    assert pooled.loc["out.ch_var", "rel_error"] < -0.3 and pooled["rel_error"].abs().max() > 0.3
    only = compare(frame, prediction="channel")
    assert set(only["prediction"]) == {CHANNEL} and len(only) == 2
    with pytest.raises(ValueError, match="unknown prediction 'iid'; valid: best, channel, pooled"):
        compare(frame, prediction="iid")


def test_frames_without_the_per_channel_rows_fall_back_to_the_pooled_prediction():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    frame = _probe(model, torch.randn(16, 2, 6, 6))
    old = frame[~frame["quantity"].str.startswith("dec.pred")]  # a run recorded before dec.pred_*
    table = compare(old)
    assert set(table["prediction"]) == {POOLED} and len(table) == 4
    assert compare(old, prediction="channel").empty
    # eval forwards have no dec.* rows: the pooled prediction
    net = model.eval()
    probe = Probe(net)
    with probe:
        with torch.no_grad():
            net(torch.randn(8, 2, 6, 6))
        net.train()
        net(torch.randn(8, 2, 6, 6)).sum().backward()
        probe.step()
    ev = compare(probe.frame(), mode="eval")
    assert set(ev["prediction"]) == {POOLED} and len(ev) == 4


def test_compare_summary_counts_within_band_and_below_floor_per_quantity_and_scheme():
    t = pd.DataFrame({
        "scheme": ["plain"] * 4 + ["pws"] * 4,
        "quantity": ["out.ch_var", "out.ch_var", "out.ch_sq_mean", "out.ch_sq_mean"] * 2,
        "prediction": [CHANNEL] * 8,
        #            within  out(0.5)  within  floor     within(edge) nan-meas  below floor  0 pred
        "predicted": [1.0,   2.0,      1.0,    1e-12,    1.0,          1.0,      1e-9,        0.0],
        "measured":  [1.1,   1.0,      0.85,   1.0,      1.2,          np.nan,   1e-2,        1.0],
    })
    s = compare_summary(t).set_index(["quantity", "scheme"])
    assert s.loc[("out.ch_var", "plain"), ["n", "within", "below_floor"]].tolist() == [2, 1, 0]
    assert s.loc[("out.ch_var", "plain"), "share"] == pytest.approx(0.5)
    assert s.loc[("out.ch_var", "plain"), "median_abs_error"] == pytest.approx((0.1 + 0.5) / 2)
    assert s.loc[("out.ch_sq_mean", "plain"), ["n", "within", "below_floor"]].tolist() == [2, 1, 1]
    assert s.loc[("out.ch_var", "pws"), ["n", "within", "below_floor"]].tolist() == [1, 1, 0]  # nan left out
    assert s.loc[("out.ch_sq_mean", "pws"), ["n", "within", "below_floor"]].tolist() == [2, 0, 2]
    assert np.isnan(s.loc[("out.ch_sq_mean", "pws"), "median_abs_error"])
    assert s.loc[("out.ch_var", "plain"), "prediction"] == CHANNEL
    assert BAND == 0.2 and FLOOR == 1e-6
    assert compare_summary(t, band=0.05).set_index(["quantity", "scheme"]).loc[("out.ch_var", "plain"), "within"] == 0
    with pytest.raises(ValueError, match="band must be in"):
        compare_summary(t, band=1.5)


class _Project(nn.Module):
    """A leaf with a weight of a type varprobe has no layout for (role "other": whole-tensor w.*)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t()


def test_only_conv_and_linear_layers_get_a_prediction():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), _Project(), nn.LayerNorm(6))
    with pytest.warns(RuntimeWarning, match="_Project has no layout"):
        frame = _probe(model, torch.randn(32, 5))
    assert set(frame.loc[frame["layer"] == "1", "role"]) == {"other"}
    assert {"w.sq_norm", "in.var", "out.ch_var"} <= set(frame.loc[frame["layer"] == "1", "quantity"])
    table = compare(frame)
    assert set(table["layer"]) == {"0"} and set(table["role"]) == {"linear"}
