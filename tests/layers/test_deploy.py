"""reparameterize: the deploy copy computes what the eval-mode original computes, with plain convs."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.layers import SCHEMES, PWSConv2d, ReparamConv2d, WNConv2d, WSConv2d, make_conv, reparameterize
from varprobe.layers.deploy import conv_bn_pairs


def assert_same_output(a: nn.Module, b: nn.Module, x: torch.Tensor, rtol=1e-5) -> None:
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == yb.shape
    err = (ya - yb).abs().max().item()
    assert err <= rtol * ya.abs().max().item(), (err, ya.abs().max().item())


def snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, type(m), m.training) for n, m in model.named_modules()])


def assert_unchanged(model: nn.Module, snap) -> None:
    state, modules = snap
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k in state:
        assert torch.equal(now[k], state[k]), k
    assert [(n, type(m), m.training) for n, m in model.named_modules()] == modules


def randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 2.0, generator=gen)
                m.bias.normal_(generator=gen)
                m.running_mean.normal_(generator=gen)
                m.running_var.uniform_(0.3, 3.0, generator=gen)


def train_a_few_steps(model: nn.Module, x: torch.Tensor, steps=4) -> None:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    target = torch.randn(model(x).shape, generator=torch.Generator().manual_seed(99))
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(model(x), target).backward()
        opt.step()


def small_model(scheme: str) -> nn.Sequential:
    return nn.Sequential(
        make_conv(scheme, 3, 16, 3, padding=1), nn.ReLU(),
        make_conv(scheme, 16, 16, 3, stride=2, padding=1), nn.ReLU(),       # strided
        make_conv(scheme, 16, 32, 3, padding=1, groups=4), nn.ReLU(),       # grouped
        make_conv(scheme, 32, 8, 1),
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_deploy_copy_matches_original_for_every_scheme(scheme):
    torch.manual_seed(0)
    model = small_model(scheme)
    x = torch.randn(4, 3, 12, 12) + 0.5
    train_a_few_steps(model, x)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if scheme == "bn":
        assert len(bns) == 4
        for bn in bns:  # running stats moved away from their initial (0, 1)
            assert bn.running_mean.abs().max() > 1e-3 and (bn.running_var - 1).abs().max() > 1e-3
            assert bn.num_batches_tracked.item() >= 4
    model.eval()
    with torch.no_grad():
        y_before = model(x)
    snap = snapshot(model)

    deploy = reparameterize(model)

    assert deploy is not model
    assert_unchanged(model, snap)
    with torch.no_grad():
        assert torch.equal(model(x), y_before)
    assert_same_output(model, deploy, x)
    assert_same_output(model, deploy, torch.randn(2, 3, 7, 9))  # another input, odd sizes
    assert not any(isinstance(m, ReparamConv2d) for m in deploy.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deploy.modules())
    convs = [m for m in deploy.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(type(m) is nn.Conv2d for m in convs)
    assert [c.groups for c in convs] == [1, 1, 4, 1] and convs[1].stride == (2, 2)
    assert not any(m.training for m in deploy.modules())
    # what is not a conv-BN pair is kept (GroupNorm after GN/WS convs)
    n_gn = sum(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in deploy.modules()) == n_gn


def test_original_in_train_mode_stays_in_train_mode():
    torch.manual_seed(1)
    model = small_model("bn")
    x = torch.randn(2, 3, 8, 8)
    train_a_few_steps(model, x, steps=2)
    snap = snapshot(model)
    deploy = reparameterize(model)
    assert_unchanged(model, snap)
    assert model.training and not deploy.training
    assert_same_output(model.eval(), deploy, x)


class FxNet(nn.Module):
    """conv -> bn inside forward (not a Sequential), with a residual and several conv kinds."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = PWSConv2d(8, 8, 3, padding=1, groups=2)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = WSConv2d(8, 12, 3, stride=2, bias=False)
        self.bn3 = nn.BatchNorm2d(12)
        self.conv4 = WNConv2d(12, 4, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(x)) + x
        y = F.relu(self.bn3(self.conv3(F.relu(y))))
        return self.conv4(y)


def test_fx_path_folds_conv_bn_in_a_plain_module():
    torch.manual_seed(2)
    model = FxNet()
    x = torch.randn(3, 3, 10, 10)
    train_a_few_steps(model, x, steps=3)
    randomize_bn(model, torch.Generator().manual_seed(3))
    model.eval()
    pairs, error = conv_bn_pairs(model)
    assert error is None  # traced with torch.fx
    assert sorted(pairs) == [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")]
    snap = snapshot(model)
    deploy = reparameterize(model)
    assert_unchanged(model, snap)
    assert_same_output(model, deploy, x)
    assert not any(isinstance(m, (ReparamConv2d, nn.BatchNorm2d)) for m in deploy.modules())
    assert all(isinstance(getattr(deploy, f"bn{i}"), nn.Identity) for i in (1, 2, 3))


class BNAfterReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = PWSConv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.bn2 = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn2(self.conv2(self.bn(F.relu(self.conv(x)))))


@pytest.mark.parametrize("kind", ["module", "sequential"])
def test_bn_not_directly_after_a_conv_is_kept(kind):
    torch.manual_seed(4)
    if kind == "module":
        model = BNAfterReLU()
    else:
        model = nn.Sequential(make_conv("pws", 3, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
                              nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))
    randomize_bn(model, torch.Generator().manual_seed(5))
    model.eval()
    x = torch.randn(2, 3, 6, 6)
    deploy = reparameterize(model)
    assert_same_output(model, deploy, x)
    kept = [n for n, m in deploy.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert kept == (["bn"] if kind == "module" else ["2"])
    assert not any(isinstance(m, ReparamConv2d) for m in deploy.modules())


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, so the Sequential fallback is used."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(PWSConv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))

    def forward(self, x):
        y = self.body(x)
        if y.mean() > 0:
            return y
        return -y


def test_untraceable_model_uses_sequential_pairs():
    torch.manual_seed(6)
    model = Untraceable()
    randomize_bn(model, torch.Generator().manual_seed(7))
    model.eval()
    pairs, error = conv_bn_pairs(model)
    assert error is not None
    assert pairs == [("body.0", "body.1"), ("body.3", "body.4")]
    deploy = reparameterize(model)
    assert_same_output(model, deploy, torch.randn(2, 3, 6, 6))
    assert not any(isinstance(m, (ReparamConv2d, nn.BatchNorm2d)) for m in deploy.modules())


# ----------------------------------------------------------------------------------------------
# regressions (each of these used to give wrong outputs or crash)
# ----------------------------------------------------------------------------------------------
class SharedBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.bn(F.relu(x))


class ConvTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = PWSConv2d(4, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn1(self.conv(x)) + self.bn2(self.conv(x))


class ConvOutputReused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class AliasedReparam(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = PWSConv2d(4, 4, 3, padding=1)
        self.b = self.a

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


def _sequential_shared_bn():
    bn = nn.BatchNorm2d(4)
    return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), bn, nn.ReLU(), bn)


@pytest.mark.parametrize("build,n_bn_left", [
    (SharedBN, 1),
    (ConvTwice, 2),
    (ConvOutputReused, 1),
    (AliasedReparam, 0),
    (lambda: nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)), 1),
    (lambda: nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, affine=False)), 0),
])
def test_shared_or_unfoldable_batchnorms(build, n_bn_left):
    torch.manual_seed(8)
    model = build()
    randomize_bn_safe(model, torch.Generator().manual_seed(9))
    model.eval()
    x = torch.randn(3, 4, 6, 6)
    deploy = reparameterize(model)
    assert_same_output(model, deploy, x)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in deploy.modules()) == n_bn_left
    assert not any(isinstance(m, ReparamConv2d) for m in deploy.modules())
    assert not any(isinstance(m, ReparamConv2d)
                   for _, m in deploy.named_modules(remove_duplicate=False))


@pytest.mark.parametrize("build", [SharedBN, ConvTwice, ConvOutputReused])
def test_conv_bn_pairs_skips_shared_modules_and_reused_outputs(build):
    pairs, error = conv_bn_pairs(build())
    assert error is None and pairs == []


def test_untraceable_shared_bn_in_sequential_is_not_folded():
    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = _sequential_shared_bn()

        def forward(self, x):
            if x.sum() > 0:  # untraceable
                return self.seq(x)
            return self.seq(-x)

    torch.manual_seed(10)
    model = Wrap()
    randomize_bn_safe(model, torch.Generator().manual_seed(11))
    model.eval()
    x = torch.randn(2, 4, 6, 6) + 1
    assert conv_bn_pairs(model)[1] is not None
    assert_same_output(model, reparameterize(model), x)


def randomize_bn_safe(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                if m.affine:
                    m.weight.uniform_(0.5, 2.0, generator=gen)
                    m.bias.normal_(generator=gen)
                if m.track_running_stats:
                    m.running_mean.normal_(generator=gen)
                    m.running_var.uniform_(0.3, 3.0, generator=gen)


def test_deploy_of_deploy_is_stable():
    torch.manual_seed(12)
    model = small_model("bn")
    randomize_bn(model, torch.Generator().manual_seed(13))
    model.eval()
    d1 = reparameterize(model)
    d2 = reparameterize(copy.deepcopy(d1))
    x = torch.randn(2, 3, 8, 8)
    assert_same_output(d1, d2, x, rtol=1e-7)
