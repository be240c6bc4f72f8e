"""compare() against varprobe.theory on the actual weights of a probed layer."""
import numpy as np
import torch
from torch import nn

from varprobe import theory
from varprobe.analysis import compare
from varprobe.probe import Probe


def test_compare_equals_theory_split_on_the_layer_weights():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, bias=False)  # no padding, no bias: the i.i.d. prediction applies as stated
    model = nn.Sequential(conv)
    x = torch.rand(64, 4, 10, 10)           # i.i.d. entries with a non-zero mean
    probe = Probe(model)
    with probe:
        model(x).sum().backward()
        probe.step()
    table = compare(probe.frame())
    mu, var = float(x.double().mean()), float(x.double().var(unbiased=False))
    split = theory.second_moment_split(conv.weight.detach(), mu, var)
    got = table.set_index("quantity")["predicted"]
    np.testing.assert_allclose(got["out.ch_var"], split.zero_mean.mean(), rtol=1e-6)
    np.testing.assert_allclose(got["out.ch_sq_mean"], split.shift.mean(), rtol=1e-6)
    # the measurement agrees with the prediction for i.i.d. inputs (Monte Carlo, 64*8*8 positions)
    assert (table["rel_error"].abs() < 0.1).all(), table
