"""reset_parameters of every reparametrized conv: the initialisation lives there, so
``module.reset_parameters()`` re-initialises a trained conv exactly as construction does."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from varprobe.layers import CenteredConv2d, PWSConv2d, WNConv2d, WSConv2d
from varprobe.layers.reparam import conv_fan

GEOMETRY = dict(in_channels=6, out_channels=8, kernel_size=3, stride=2, padding=1, groups=2)
CASES = [(PWSConv2d, {}), (PWSConv2d, {"fan": "fan_out", "gamma": 0.5, "gamma_mode": "equiv"}),
         (WSConv2d, {}), (WNConv2d, {}), (CenteredConv2d, {}), (CenteredConv2d, {"bias": False})]
IDS = ["pws", "pws-fan_out", "ws", "wn", "centered", "centered-nobias"]


def _reference_weight(seed: int, fan_mode: str, bias: bool) -> torch.Tensor:
    """What the constructors did before reset_parameters held the initialisation: nn.Conv2d's own
    draws, then the weight redrawn N(0, 2 / fan) (float64 reference of the variance below)."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(**GEOMETRY, bias=bias)
    fan = conv_fan(conv.weight, fan_mode)
    with torch.no_grad():
        return conv.weight.normal_(0.0, (2.0 / fan) ** 0.5).clone()


@pytest.mark.parametrize("cls, options", CASES, ids=IDS)
def test_construction_draws_what_it_drew_before(cls, options):
    bias = options.get("bias", True)
    torch.manual_seed(3)
    m = cls(**GEOMETRY, **options)
    assert torch.equal(m.weight, _reference_weight(3, options.get("fan", "fan_in"), bias))
    if bias:
        assert torch.equal(m.bias, torch.zeros(8))


@pytest.mark.parametrize("cls, options", CASES, ids=IDS)
def test_reset_parameters_restores_the_initialisation(cls, options):
    torch.manual_seed(5)
    fresh = cls(**GEOMETRY, **options)
    m = cls(**GEOMETRY, **options)
    with torch.no_grad():  # a "trained" conv: every parameter moved
        for p in m.parameters():
            p.add_(torch.randn_like(p)).mul_(1.7)
    torch.manual_seed(5)
    m.reset_parameters()
    state, want = m.state_dict(), fresh.state_dict()
    assert state.keys() == want.keys()
    for name in want:
        assert torch.equal(state[name], want[name]), name
    if isinstance(m, PWSConv2d):
        assert torch.equal(m.alpha, torch.ones(8, 1, 1, 1))
        assert m.fan_value == conv_fan(m.weight, options.get("fan", "fan_in"))
    if isinstance(m, WNConv2d):  # g = ||v_i||: the kernel starts equal to the Kaiming weight
        f64 = m.weight.detach().double()
        torch.testing.assert_close(m.g.detach().double().flatten(), f64.flatten(1).norm(dim=1), rtol=1e-6, atol=0)
        torch.testing.assert_close(m.kernel().detach().double(), f64, rtol=1e-5, atol=1e-7)


def test_reset_parameters_draws_the_he_variance():
    """fan * Var(V) = 2 on a large conv, against the float64 sample variance."""
    torch.manual_seed(0)
    m = PWSConv2d(64, 128, 3)
    m.reset_parameters()
    v = m.weight.detach().double()
    assert abs(v.var().item() * conv_fan(m.weight, "fan_in") - 2.0) < 0.05
