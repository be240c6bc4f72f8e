"""convert(): rebuild a user's own model under every normalization scheme."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.layers import SCHEMES, CenteredConv2d, ConvNorm, PWSConv2d, WNConv2d, WSConv2d
from varprobe.models import convert

CONV_TYPE = {"plain": nn.Conv2d, "plain+gn": nn.Conv2d, "bn": nn.Conv2d, "gn": nn.Conv2d, "ws": WSConv2d,
             "wn": WNConv2d, "pws": PWSConv2d, "centered": CenteredConv2d}
NORM_AFTER = ("bn", "gn", "ws")
CONV_NAMES = ("conv1", "conv2", "conv3", "conv4")
BN_NAMES = ("bn1", "bn2", "bn3")


class UserNet(nn.Module):
    """A user's model written by hand: conv -> BN -> ReLU in forward, grouped, dilated and strided convs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False)  # grouped
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 24, 3, padding=2, dilation=2, bias=False)  # dilated
        self.bn3 = nn.BatchNorm2d(24)
        self.conv4 = nn.Conv2d(24, 32, 3, stride=2, padding=1)  # strided, with bias
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.relu(self.conv4(x))
        return self.head(x.mean(dim=(2, 3)))


class BNAfterReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.late_bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.late_bn(self.act(self.conv(x)))


class Untraceable(nn.Module):
    """Data-dependent control flow (fx cannot trace it); conv/BN pairs live in nn.Sequential containers."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.alt = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.body(x)
        if x.mean() > 0:  # data-dependent branch
            x = x + self.alt(x)
        return self.head(x.mean(dim=(2, 3)))


def _trained_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give the BNs non-trivial running stats and affine params, then put the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def _user_net(seed: int = 0) -> UserNet:
    torch.manual_seed(seed)
    return _trained_stats(UserNet(), seed)


def _inner_conv(module: nn.Module) -> nn.Conv2d:
    return module.conv if isinstance(module, ConvNorm) else module


def _snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, type(m), m.training) for n, m in model.named_modules()])


def _assert_unchanged(model: nn.Module, snap) -> None:
    state, layout = snap
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(now[k], v), k
    assert [(n, type(m), m.training) for n, m in model.named_modules()] == layout


X = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(3))


# ------------------------------------------------------------------------------------- every scheme runs


@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_converted_model_runs_and_trains(scheme, drop):
    model = _user_net()
    snap = _snapshot(model)
    new = convert(model, scheme, drop_batchnorm=drop)
    _assert_unchanged(model, snap)
    new.train()
    out = new(X)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    for name in CONV_NAMES:
        conv = _inner_conv(new.get_submodule(name))
        assert type(conv) is CONV_TYPE[scheme]
        assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
    new.eval()
    assert torch.isfinite(new(X)).all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_geometry_bias_and_placement(scheme):
    model = _user_net()
    new = convert(model, scheme)
    for name in CONV_NAMES:
        old, mod = model.get_submodule(name), new.get_submodule(name)
        if scheme in NORM_AFTER:
            assert isinstance(mod, ConvNorm)
            norm_type = nn.BatchNorm2d if scheme == "bn" else nn.GroupNorm
            assert type(mod.norm) is norm_type
        else:
            assert type(mod) is CONV_TYPE[scheme]  # bare conv: module names unchanged
        conv = _inner_conv(mod)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                     "padding_mode"):
            assert getattr(conv, attr) == getattr(old, attr), (name, attr)
        assert conv.weight.shape == old.weight.shape
        assert torch.equal(conv.weight.detach(), old.weight.detach())  # the raw weight is copied
        if scheme in NORM_AFTER:
            assert conv.bias is None
        elif old.bias is not None:
            assert torch.equal(conv.bias.detach(), old.bias.detach())
        else:
            assert torch.equal(conv.bias.detach(), torch.zeros(conv.out_channels))
        assert mod.training == old.training
    # the BNs and the Linear head are kept as they were
    for name in BN_NAMES:
        assert type(new.get_submodule(name)) is nn.BatchNorm2d
    assert torch.equal(new.head.weight, model.head.weight)
    # the spatial geometry is unchanged: stride 2 halves 12 -> 6
    feats = []
    new.conv4.register_forward_hook(lambda m, i, o: feats.append(o.shape))
    new(X)
    assert feats[0][-2:] == (6, 6)


def test_user_net_actually_has_the_geometries():
    model = UserNet()
    assert model.conv2.groups == 4 and model.conv3.dilation == (2, 2) and model.conv4.stride == (2, 2)


# --------------------------------------------------------------------------------------- per-scheme scale


@pytest.mark.parametrize("scheme", ["wn", "plain"])
def test_output_unchanged_exactly(scheme):
    model = _user_net()
    new = convert(model, scheme).eval()
    with torch.no_grad():
        assert torch.equal(new(X), model(X))


def test_wn_kernel_is_old_weight_exactly():
    model = _user_net()
    new = convert(model, "wn")
    for name in CONV_NAMES:
        assert torch.equal(new.get_submodule(name).kernel(), model.get_submodule(name).weight)


@pytest.mark.parametrize("options", [{}, {"gamma": 0.1, "gamma_mode": "equiv"}, {"fan": "fan_out"},
                                     {"gamma": 0.0}])
def test_pws_kernel_keeps_filter_std_and_removes_mean(options):
    model = _user_net()
    new = convert(model, "pws", **options)
    for name in CONV_NAMES:
        old_w = model.get_submodule(name).weight.detach().double()
        conv = new.get_submodule(name)
        for k, v in options.items():
            assert getattr(conv, k) == v
        kernel = conv.kernel().detach().double()
        old_std = old_w.flatten(1).std(dim=1, unbiased=False)
        new_std = kernel.flatten(1).std(dim=1, unbiased=False)
        torch.testing.assert_close(new_std, old_std, rtol=1e-5, atol=0)
        centred = old_w - old_w.mean(dim=(1, 2, 3), keepdim=True)
        torch.testing.assert_close(kernel, centred, rtol=1e-5, atol=1e-7)
        assert kernel.flatten(1).sum(dim=1).abs().max() < 1e-5 * kernel.abs().sum(dim=(1, 2, 3)).max()


def test_pws_in_float64_is_exact_to_double_precision():
    model = _user_net().double()
    new = convert(model, "pws")
    for name in CONV_NAMES:
        old_w = model.get_submodule(name).weight.detach()
        kernel = new.get_submodule(name).kernel().detach()
        assert kernel.dtype == torch.float64
        torch.testing.assert_close(kernel, old_w - old_w.mean(dim=(1, 2, 3), keepdim=True), rtol=1e-12,
                                   atol=1e-14)


def test_centered_kernel_is_old_minus_mean():
    model = _user_net()
    new = convert(model, "centered")
    for name in CONV_NAMES:
        old_w = model.get_submodule(name).weight.detach().double()
        kernel = new.get_submodule(name).kernel().detach().double()
        torch.testing.assert_close(kernel, old_w - old_w.mean(dim=(1, 2, 3), keepdim=True), rtol=1e-6,
                                   atol=1e-7)


# ------------------------------------------------------------------------------------------ BatchNorms


def _without_bns(model: nn.Module, names) -> nn.Module:
    ref = copy.deepcopy(model)
    for n in names:
        setattr(ref, n, nn.Identity())
    return ref


def test_drop_batchnorm_replaces_each_bn_after_a_conv():
    model = _user_net()
    new = convert(model, "wn", drop_batchnorm=True).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in new.modules())
    for n in BN_NAMES:
        assert type(new.get_submodule(n)) is nn.Identity
    with torch.no_grad():
        assert torch.equal(new(X), _without_bns(model, BN_NAMES)(X))
    assert all(isinstance(model.get_submodule(n), nn.BatchNorm2d) for n in BN_NAMES)  # original untouched


def test_drop_batchnorm_with_a_norm_scheme_keeps_only_the_new_norms():
    new = convert(_user_net(), "bn", drop_batchnorm=True)
    for n in BN_NAMES:
        assert type(new.get_submodule(n)) is nn.Identity
    bns = [n for n, m in new.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert sorted(bns) == [f"{c}.norm" for c in CONV_NAMES]


def test_bn_after_relu_raises_naming_it():
    model = BNAfterReLU()
    snap = _snapshot(model)
    with pytest.raises(ValueError, match="late_bn"):
        convert(model, "pws", drop_batchnorm=True)
    _assert_unchanged(model, snap)
    # without dropping, the BN is simply kept
    new = convert(model, "pws")
    assert isinstance(new.late_bn, nn.BatchNorm2d) and isinstance(new.conv, PWSConv2d)


def test_bn_after_relu_in_a_sequential_raises_naming_it():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.BatchNorm2d(8))
    with pytest.raises(ValueError, match=r"'3'"):
        convert(model, "wn", drop_batchnorm=True)


def test_bn_on_a_conv_output_read_twice_is_not_dropped():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    with pytest.raises(ValueError, match="bn"):
        convert(Skip(), "wn", drop_batchnorm=True)


def test_untraceable_model_converts_with_sequential_fallback():
    torch.manual_seed(0)
    model = _trained_stats(Untraceable())
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(Exception):
        torch.fx.symbolic_trace(model)
    snap = _snapshot(model)
    bn_names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn_names == ["body.1", "body.4", "alt.1"]

    new = convert(model, "wn", drop_batchnorm=True).eval()
    _assert_unchanged(model, snap)
    for n in bn_names:
        assert type(new.get_submodule(n)) is nn.Identity
    ref = copy.deepcopy(model)
    for n in bn_names:
        parent, _, child = n.rpartition(".")
        setattr(ref.get_submodule(parent), child, nn.Identity())
    with torch.no_grad():
        assert torch.equal(new(x), ref(x))
        assert torch.equal(new(-x), ref(-x))

    for scheme in SCHEMES:
        conv = convert(model, scheme, drop_batchnorm=True)
        assert type(_inner_conv(conv.body[0])) is CONV_TYPE[scheme]
        assert torch.isfinite(conv(x)).all()
        assert not any(type(m) is nn.BatchNorm2d for n, m in conv.named_modules() if n in bn_names)


def test_untraceable_model_with_an_unmatched_bn_reports_the_trace_failure():
    class Bad(Untraceable):
        def __init__(self):
            super().__init__()
            self.loose = nn.BatchNorm2d(16)

        def forward(self, x):
            x = self.loose(self.body(x))
            if x.mean() > 0:
                x = x + self.alt(x)
            return self.head(x.mean(dim=(2, 3)))

    with pytest.raises(ValueError, match=r"loose.*torch\.fx"):
        convert(Bad(), "pws", drop_batchnorm=True)


# ----------------------------------------------------------------------------------------------- misc


def test_training_mode_is_preserved():
    model = UserNet().train()
    new = convert(model, "pws")
    assert all(m.training for m in new.modules())
    new = convert(model.eval(), "bn")
    assert not any(m.training for m in new.modules())


def test_unknown_scheme_raises():
    with pytest.raises(ValueError, match="valid schemes"):
        convert(UserNet(), "nope")


def test_unknown_scheme_raises_even_without_convs():
    with pytest.raises(ValueError, match="valid schemes"):
        convert(nn.Sequential(nn.Linear(2, 2)), "nope")


@pytest.mark.parametrize("scheme", ["pws", "bn"])
def test_a_bare_conv_is_converted(scheme):
    torch.manual_seed(0)
    old = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    new = convert(old, scheme)
    conv = _inner_conv(new)
    assert type(conv) is CONV_TYPE[scheme]
    assert (conv.stride, conv.padding) == ((2, 2), (1, 1))
    assert type(old) is nn.Conv2d
