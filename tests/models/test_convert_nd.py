"""convert() in 1, 2 and 3 dimensions, plain and transposed convs: every scheme's converted layer
against float64 references from the formulas (tests/layers/nd_refs.py), BatchNorm dropping in every
dimensionality, refusals named with their reason, and a convert that changes nothing says so."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.layers import nd_refs
from varprobe.layers import (SCHEMES, ConvNorm, PWSConv1d, PWSConv2d, PWSConv3d, PWSConvNd, WNConvTranspose2d,
                             init_alpha, reparameterize, scheme_conv_class)
from varprobe.models import convert

TORCH_CONV = {(1, False): nn.Conv1d, (2, False): nn.Conv2d, (3, False): nn.Conv3d,
              (1, True): nn.ConvTranspose1d, (2, True): nn.ConvTranspose2d, (3, True): nn.ConvTranspose3d}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
SPATIAL = {1: (9,), 2: (7, 6), 3: (5, 6, 5)}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def old_conv(dims: int, groups: int, transposed: bool, seed: int) -> tuple[nn.Module, dict]:
    """A float64 torch conv with per-filter offsets and scales in its weight and a random bias."""
    geo = dict(padding=(1,) * dims, dilation=tuple(2 if i == dims - 1 else 1 for i in range(dims)),
               stride=tuple(2 if i == 0 and not transposed else 1 for i in range(dims)))
    conv = TORCH_CONV[(dims, transposed)](4, 6, KERNEL[dims], groups=groups, **geo).double()
    rng = np.random.default_rng(seed)
    shape = tuple(conv.weight.shape)
    lead = (shape[0],) + (1,) * (len(shape) - 1)
    w = 10.0 ** rng.uniform(-2, 0, size=lead) * (rng.uniform(-2, 2, size=lead) + rng.standard_normal(shape))
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        conv.bias.copy_(torch.from_numpy(rng.standard_normal(6)))
    geo["output_padding"] = (0,) * dims
    return conv, geo


def expected_kernel(scheme: str, w: np.ndarray, groups: int, transposed: bool, conv: nn.Module) -> np.ndarray:
    """The converted kernel from the formula, with the scale convert documents (pws: alpha_i =
    sqrt(s_i^2 + gamma') / sqrt(2 / fan); wn: g_i = ||w_i||), both computed here in numpy."""
    f = nd_refs.filters_of(w, groups, transposed)
    _, var = nd_refs.mean_var(f)
    if scheme == "pws":
        fan = int(np.prod(f.shape[1:]))
        alpha = np.sqrt(var + conv.gamma) / np.sqrt(2.0 / fan)
        return nd_refs.kernel_ref("pws", w, groups, transposed, alpha=alpha, gamma=conv.gamma, gamma_mode="raw",
                                  fan="fan_in")
    g = np.sqrt((f.reshape(f.shape[0], -1) ** 2).sum(axis=1))
    return nd_refs.kernel_ref(scheme, w, groups, transposed, eps=getattr(conv, "eps", 0.0), g=g)


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_converted_layer_matches_the_formula(scheme, dims, groups, transposed):
    old, geo = old_conv(dims, groups, transposed, seed=dims * 10 + groups)
    w, b = old.weight.detach().numpy().copy(), old.bias.detach().numpy().copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything converts: nothing to warn about
        new = convert(nn.Sequential(old), scheme, gn_groups=2)[0]
    conv = new.conv if isinstance(new, ConvNorm) else new
    assert type(conv) is scheme_conv_class(scheme, dims, transposed)
    kernel = expected_kernel(scheme, w, groups, transposed, conv)
    got = conv.kernel() if hasattr(conv, "kernel") else conv.weight
    np.testing.assert_allclose(got.detach().numpy(), kernel, rtol=1e-10, atol=1e-12 * np.abs(kernel).max())

    x = np.random.default_rng(5).standard_normal((3, 4, *SPATIAL[dims]))
    bias = None if conv.bias is None else b  # the norm schemes' conv has no bias
    if transposed:
        y = nd_refs.conv_transpose_ref(x, kernel, bias, geo["stride"], geo["padding"], geo["output_padding"],
                                       geo["dilation"], groups)
    else:
        y = nd_refs.conv_ref(x, kernel, bias, geo["stride"], geo["padding"], geo["dilation"], groups)
    if scheme == "bn":
        assert type(new.norm) is BN[dims]
        y = nd_refs.batchnorm_ref(y, np.ones(6), np.zeros(6), new.norm.eps)  # train mode: batch statistics
    elif scheme in ("gn", "ws"):
        y = nd_refs.groupnorm_ref(y, 2, np.ones(6), np.zeros(6), new.norm.eps)
    new.train()
    with torch.no_grad():
        out = new(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, y, rtol=1e-9, atol=1e-10 * np.abs(y).max())


class Audio(nn.Module):
    """A Conv1d audio net written by hand: conv -> BatchNorm1d -> ReLU in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 8, 5, stride=2, padding=2, bias=False)
        self.bn1 = nn.BatchNorm1d(8)
        self.conv2 = nn.Conv1d(8, 8, 3, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=2))


def test_conv1d_batchnorm1d_net_is_converted_and_its_batchnorms_dropped():
    """Was: an unchanged copy, silently (only Conv2d/BatchNorm2d were seen)."""
    torch.manual_seed(0)
    model = Audio().double()
    x = torch.randn(4, 2, 32, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = convert(model, "pws", drop_batchnorm=True)
    assert type(new.conv1) is PWSConv1d and type(new.conv2) is PWSConv1d
    assert type(new.bn1) is nn.Identity and type(new.bn2) is nn.Identity
    assert not any(isinstance(m, nn.BatchNorm1d) for m in new.modules())
    # the forward is the model's with centred kernels and no BatchNorm, computed here from the formula
    h = x.numpy()
    for name, geo in (("conv1", ((2,), (2,), (1,), 1)), ("conv2", ((1,), (1,), (1,), 2))):
        w = getattr(model, name).weight.detach().numpy()
        f = nd_refs.filters_of(w, geo[3], False)
        k = f - nd_refs.mean_var(f)[0]
        h = np.maximum(nd_refs.conv_ref(h, k, np.zeros(8), *geo), 0.0)
    ref = h.mean(axis=2) @ model.head.weight.detach().numpy().T + model.head.bias.detach().numpy()
    new.eval()
    with torch.no_grad():
        np.testing.assert_allclose(new(x).numpy(), ref, rtol=1e-9, atol=1e-12)
    # init_alpha now reaches them: each conv's output variance on its batch is 2 (hooks, float64)
    seen = {}
    for n in ("conv1", "conv2"):
        getattr(new, n).register_forward_hook(lambda m, a, y, n=n: seen.setdefault(n, y.detach().double()))
    assert init_alpha(new, x) == ["conv1", "conv2"]
    seen.clear()
    with torch.no_grad():
        new(x)
    for n in ("conv1", "conv2"):
        y = seen[n].numpy()
        assert abs(((y - y.mean()) ** 2).mean() / 2.0 - 1) < 1e-9, n


def test_init_alpha_on_a_conv3d_net_sets_output_variance_two():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, stride=2)).double()
    new = convert(model, "pws")
    assert all(type(new[i]) is PWSConv3d for i in (0, 2))
    x = torch.randn(2, 2, 6, 6, 6, dtype=torch.float64)
    assert init_alpha(new, x) == ["0", "2"]
    out = {}
    for i in (0, 2):
        new[i].register_forward_hook(lambda m, a, y, i=i: out.__setitem__(i, y.detach().numpy()))
    with torch.no_grad():
        new(x)
    for i in (0, 2):  # bias is zero after convert only if the old one was: take the variance about the mean
        y = out[i] - new[i].bias.detach().numpy().reshape(1, -1, 1, 1, 1)
        assert abs(((y - y.mean()) ** 2).mean() / 2.0 - 1) < 1e-9


def test_init_alpha_that_does_nothing_says_so():
    model = nn.Sequential(nn.Conv1d(2, 4, 3))
    with pytest.warns(RuntimeWarning, match="init_alpha: nothing initialised: it has no PWS conv"):
        assert init_alpha(model, torch.randn(1, 2, 8)) == []
    model = nn.Sequential(PWSConv1d(2, 4, 3, data_init=False))
    with pytest.warns(RuntimeWarning, match="data_init=False"):
        assert init_alpha(model, torch.randn(1, 2, 8)) == []


class UNet(nn.Module):
    """A tiny U-Net: strided ConvTranspose2d up-sampling, plus a stride-1 ConvTranspose2d."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.refine = nn.ConvTranspose2d(4 + 3, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        h = self.up(F.relu(self.down(x)))
        return self.out(F.relu(self.refine(torch.cat([h, x], dim=1))))


@pytest.mark.parametrize("scheme", ["ws", "pws", "centered"])
def test_strided_transposed_conv_is_refused_by_name_with_the_reason(scheme):
    model = UNet()
    with pytest.warns(RuntimeWarning) as rec:
        new = convert(model, scheme, gn_groups=1)
    msg = " ".join(str(w.message) for w in rec)
    assert "1 conv(s) not converted" in msg and "up (stride (2, 2) > 1 on a transposed conv" in msg
    assert "stride phase" in msg and "changed nothing" not in msg
    assert type(new.up) is nn.ConvTranspose2d and torch.equal(new.up.weight, model.up.weight)
    inner = new.refine.conv if isinstance(new.refine, ConvNorm) else new.refine
    assert type(inner) is scheme_conv_class(scheme, 2, True)  # stride 1: converted
    assert torch.isfinite(new(torch.randn(2, 3, 8, 8))).all()


def test_unet_converts_every_conv_under_wn_with_the_same_output():
    torch.manual_seed(2)
    model = UNet().double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = convert(model, "wn")
    assert type(new.up) is WNConvTranspose2d
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), rtol=1e-12, atol=1e-12)


def test_convert_that_changes_nothing_says_so_naming_each_layer_and_why():
    """Was: an unchanged copy, silently."""
    with pytest.warns(RuntimeWarning, match=r"convert: convert changed nothing: the model has no conv"):
        convert(nn.Sequential(nn.Linear(3, 3)), "pws")
    pws = nn.Sequential(PWSConv2d(3, 4, 3), nn.ReLU(), nn.ConvTranspose1d(4, 4, 2, stride=2))
    with pytest.warns(RuntimeWarning) as rec:
        new = convert(pws, "centered")
    msg = str(rec[0].message)
    assert msg.startswith("convert: convert changed nothing: 2 conv(s) not converted to 'centered'")
    assert "0 (already a PWSConv2d" in msg and "2 (stride (2,) > 1 on a transposed conv" in msg
    assert type(new[0]) is PWSConv2d and type(new[2]) is nn.ConvTranspose1d


def test_subclass_and_lazy_convs_are_named_not_rebuilt():
    class MyConv(nn.Conv1d):
        pass

    model = nn.Sequential(MyConv(2, 4, 3), nn.LazyConv1d(4, 3), nn.Conv1d(4, 4, 1))
    with pytest.warns(RuntimeWarning) as rec:
        new = convert(model, "ws", gn_groups=2)
    msg = str(rec[0].message)
    assert "changed nothing" not in msg and "2 conv(s) not converted" in msg
    assert "0 (a MyConv, a subclass of a torch conv" in msg and "1 (a LazyConv1d not yet initialised" in msg
    assert isinstance(new[2], ConvNorm)


def test_padding_mode_and_shared_convs_are_kept():
    torch.manual_seed(3)
    shared = nn.Conv1d(4, 4, 3, padding=1, padding_mode="reflect").double()
    model = nn.Sequential(shared, nn.ReLU(), shared)
    new = convert(model, "wn")
    assert new[0] is new[2] and type(new[0]).__name__ == "WNConv1d" and new[0].padding_mode == "reflect"
    x = torch.randn(2, 4, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), rtol=1e-12, atol=1e-12)


def test_bn_after_relu_in_1d_raises_with_the_true_reason():
    class Late(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.late = nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4)

        def forward(self, x):
            return self.late(F.relu(self.conv(x)))

    with pytest.raises(ValueError, match=r"\['late'\].*its input is the output of the function relu, not of a conv"):
        convert(Late(), "pws", drop_batchnorm=True)


def test_pws_conv_nd_covers_every_dimension():
    assert all(issubclass(scheme_conv_class("pws", d, t), PWSConvNd) for d in (1, 2, 3) for t in (False, True))


def test_gn_groups_that_do_not_divide_a_conv_raise_naming_it_and_the_values_that_fit():
    """Was: torch's "num_channels (12) must be divisible by num_groups (8)", naming no layer."""
    model = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Conv1d(8, 12, 3, groups=4))
    for scheme in ("gn", "ws"):
        with pytest.raises(ValueError, match=r"^convert: gn_groups=8 does not divide the output channels of "
                                             r"2 \(12\): .*gn_groups that fit every conv: 1, 2, 4$"):
            convert(model, scheme)
    assert isinstance(convert(model, "gn", gn_groups=4)[2].norm, nn.GroupNorm)


class Normed(nn.Module):
    """Convs whose weight torch computes (weight_norm / spectral_norm, parametrized and legacy), each
    followed by a BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        par = torch.nn.utils.parametrizations
        self.c1, self.b1 = par.weight_norm(nn.Conv1d(2, 4, 3, padding=1)), nn.BatchNorm1d(4)
        self.c2, self.b2 = par.spectral_norm(nn.ConvTranspose1d(4, 4, 3, padding=1)), nn.BatchNorm1d(4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the legacy one is deprecated
            self.c3 = torch.nn.utils.weight_norm(nn.Conv1d(4, 4, 1))
        self.b3 = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.b3(self.c3(F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))))))


def test_weight_norm_and_spectral_norm_convs_are_folded_and_refused_by_name():
    """Was: reparameterize raised KeyError "attribute 'weight' already exists" folding a BatchNorm
    into a parametrized conv; convert called a parametrized conv "a subclass ... whose forward may
    differ" and silently dropped a legacy weight_norm (converting the weight of the last forward)."""
    torch.manual_seed(4)
    model = Normed().double()
    x = torch.randn(3, 2, 9, dtype=torch.float64)
    model.train()
    for _ in range(3):
        model(x)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deploy = reparameterize(model)
    assert [type(deploy.get_submodule(n)) for n in ("c1", "c2", "c3")] == [nn.Conv1d, nn.ConvTranspose1d, nn.Conv1d]
    assert all(isinstance(deploy.get_submodule(n), nn.Identity) for n in ("b1", "b2", "b3"))
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)  # the original still works as it did
    with pytest.warns(RuntimeWarning) as rec:
        new = convert(model, "wn")
    msg = str(rec[0].message)
    assert "convert changed nothing: 3 conv(s) not converted to 'wn'" in msg
    assert "c1 (its weight is computed by a torch parametrization (_WeightNorm)" in msg
    assert "c2 (its weight is computed by a torch parametrization (_SpectralNorm)" in msg
    assert "c3 (its weight is computed by torch.nn.utils.weight_norm" in msg
    assert new.c3.weight_g is not None and type(new.c1) is type(model.c1)


def test_convert_and_reparameterize_copy_a_legacy_weight_norm_model_after_a_training_step():
    """Was: after a forward with grad, the legacy weight_norm's ``weight`` is a non-leaf tensor and
    both raised torch's "Only Tensors created explicitly by the user ... support the deepcopy
    protocol"."""
    torch.manual_seed(5)
    model = Normed().double()
    x = torch.randn(3, 2, 9, dtype=torch.float64)
    model(x).square().mean().backward()  # a training step: c3.weight now has autograd history
    weight = model.c3.weight
    assert not weight.is_leaf
    deploy = reparameterize(model)
    with pytest.warns(RuntimeWarning, match="c3 \\(its weight is computed by torch.nn.utils.weight_norm"):
        converted = convert(model, "pws")
    assert model.c3.weight is weight  # the original is left as it was
    model.eval()
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(deploy(x), ref, rtol=1e-10, atol=1e-10)
    assert type(converted.c3) is type(model.c3) and converted.c3.weight_v is not model.c3.weight_v
