"""init_alpha: data-dependent alpha initialisation (paper-notes 2.3), checked by re-running with hooks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.layers import PWSConv2d, init_alpha


def biased_var(t: torch.Tensor) -> float:
    t = t.detach().double().flatten()
    mean = t.sum() / t.numel()
    return float(((t - mean) ** 2).sum() / t.numel())


class Stack(nn.Module):
    """Registration order (stem, b, down, a, c, unused) differs from call order (stem, a, b, down, c)."""

    def __init__(self):
        super().__init__()
        self.stem = PWSConv2d(3, 16, 3, padding=1)
        self.b = PWSConv2d(32, 32, 3, padding=1, data_init=False)
        self.down = PWSConv2d(16, 32, 1, stride=2, gamma=0.1, gamma_mode="equiv")
        self.a = PWSConv2d(16, 32, 3, stride=2, padding=1, groups=4, fan="fan_out")
        self.c = PWSConv2d(32, 8, 1, data_init=False)
        self.unused = PWSConv2d(8, 8, 1)

    def forward(self, x):
        h = F.relu(self.stem(x))
        u = F.relu(self.b(F.relu(self.a(h))))
        return self.c(u + self.down(h))


def outputs_by_hooks(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    handles = [m.register_forward_hook(lambda mod, args, y, name=name: out.__setitem__(name, y.detach()))
               for name, m in model.named_modules() if isinstance(m, PWSConv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return out


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_init_alpha_sets_output_variance_to_two(mode):
    torch.manual_seed(0)
    model = Stack().train(mode == "train")
    with torch.no_grad():  # start away from alpha = 1: init must not depend on the current alpha
        for m in model.modules():
            if isinstance(m, PWSConv2d) and m.data_init:
                m.alpha.uniform_(3.0, 5.0)
    x = 3.0 * torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1)) + 1.0
    before = outputs_by_hooks(model, x)
    unused_alpha = model.unused.alpha.detach().clone()
    assert abs(biased_var(before["stem"]) / 2 - 1) > 0.5  # not already 2

    names = init_alpha(model, x)

    assert names == ["stem", "a", "down"]
    after = outputs_by_hooks(model, x)
    assert set(after) == {"stem", "a", "b", "down", "c"}
    for name in names:
        assert abs(biased_var(after[name]) / 2.0 - 1.0) < 1e-4, (name, biased_var(after[name]))
        alpha = getattr(model, name).alpha
        assert torch.all(alpha == alpha.flatten()[0])  # one scalar for the whole layer
        assert alpha.flatten()[0] > 0
    for name in ("b", "c"):  # data_init=False: alpha stays exactly 1
        assert torch.equal(getattr(model, name).alpha, torch.ones_like(getattr(model, name).alpha))
    assert torch.equal(model.unused.alpha, unused_alpha)  # data_init but never called: untouched
    assert model.training is (mode == "train")
    for m in model.modules():  # the hooks are gone
        assert len(m._forward_pre_hooks) == 0


def test_alpha_value_matches_formula_on_the_first_conv():
    """alpha = sqrt(2 / Var(conv_{alpha=1}(x))), computed independently for the stem (input = x)."""
    torch.manual_seed(2)
    model = Stack()
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(3)) * 0.5
    V = model.stem.weight.detach().double()
    n = V[0].numel()
    mean = V.flatten(1).sum(1) / n
    dev = V - mean.view(-1, 1, 1, 1)
    var = (dev.flatten(1) ** 2).sum(1) / n
    k = (2.0 / n) ** 0.5 * dev / (var + model.stem.gamma).sqrt().view(-1, 1, 1, 1)
    y = F.conv2d(x.double(), k, None, 1, 1)
    expected = (2.0 / biased_var(y)) ** 0.5
    init_alpha(model, x)
    torch.testing.assert_close(model.stem.alpha.double(),
                               torch.full((16, 1, 1, 1), expected, dtype=torch.float64), rtol=1e-6, atol=0)


def test_shared_conv_is_initialised_once():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = PWSConv2d(4, 4, 3, padding=1)
            self.shared = PWSConv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.shared(F.relu(self.shared(F.relu(self.first(x)))))

    torch.manual_seed(4)
    model = Shared()
    x = torch.randn(2, 4, 8, 8)
    seen = []
    model.shared.register_forward_hook(lambda m, a, y: seen.append(biased_var(y)))
    assert init_alpha(model, x) == ["first", "shared"]
    # its first call (the one it was initialised on) has output variance 2
    assert abs(seen[0] / 2 - 1) < 1e-4


def test_returns_empty_list_without_data_init_convs():
    model = nn.Sequential(PWSConv2d(3, 4, 3, data_init=False), nn.ReLU(), nn.Conv2d(4, 4, 1))
    assert init_alpha(model, torch.randn(1, 3, 5, 5)) == []
    assert torch.all(model[0].alpha == 1)


def test_degenerate_batch_raises():
    model = nn.Sequential(PWSConv2d(3, 4, 3))
    with pytest.raises(ValueError):
        init_alpha(model, torch.zeros(1, 3, 5, 5))
