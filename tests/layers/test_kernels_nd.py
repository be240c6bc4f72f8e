"""Every reparametrized scheme in 1, 2 and 3 dimensions, plain and transposed, groups 1 and 2: kernel()
and forward against the float64 references of ``nd_refs`` (numpy, written from the formulas), which are
themselves checked against torch's float64 convolutions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.layers import (PWSConv1d, PWSConv2d, PWSConvNd, PWSConvTranspose2d, ReparamConvNd, WNConvTranspose1d,
                             WSConv3d, make_conv, scheme_conv_class)

from . import nd_refs

REPARAM = ("ws", "wn", "pws", "centered")
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
SPATIAL = {1: (9,), 2: (7, 6), 3: (5, 6, 5)}
TORCH_CONV = {(1, False): nn.Conv1d, (2, False): nn.Conv2d, (3, False): nn.Conv3d,
              (1, True): nn.ConvTranspose1d, (2, True): nn.ConvTranspose2d, (3, True): nn.ConvTranspose3d}


def geometry(dims: int, transposed: bool, stride: int = 1) -> dict:
    """Regular convs: stride 2 on the first axis, dilation 2 on the last, padding 1. Transposed ones:
    ``stride`` on the first axis, dilation 2 on the last, padding 1, output padding 1 where strided."""
    first = lambda a, b: tuple(a if i == 0 else b for i in range(dims))  # noqa: E731
    last = lambda a, b: tuple(a if i == dims - 1 else b for i in range(dims))  # noqa: E731
    geo = dict(kernel_size=KERNEL[dims], padding=(1,) * dims, dilation=last(2, 1))
    if transposed:
        geo.update(stride=first(stride, 1), output_padding=first(1 if stride > 1 else 0, 0))
    else:
        geo.update(stride=first(2, 1))
    return geo


def random_params(m: nn.Module, rng: np.random.Generator) -> dict:
    """Per-filter scales 1e-3..1 and mean offsets in the raw weight; random bias, alpha, g."""
    shape = tuple(m.weight.shape)
    lead = (shape[0],) + (1,) * (len(shape) - 1)
    w = 10.0 ** rng.uniform(-3, 0, size=lead) * (rng.uniform(-3, 3, size=lead) + rng.standard_normal(shape))
    out = {"weight": w}
    if m.bias is not None:
        out["bias"] = rng.standard_normal(m.out_channels)
    if hasattr(m, "alpha"):
        out["alpha"] = rng.uniform(-2, 2, size=tuple(m.alpha.shape))
    if hasattr(m, "g"):
        out["g"] = rng.uniform(-2, 2, size=tuple(m.g.shape))
    with torch.no_grad():
        for k, v in out.items():
            getattr(m, k).copy_(torch.from_numpy(v))
    return out


def scheme_params(m: nn.Module, p: dict) -> dict:
    if isinstance(m, PWSConvNd):
        return dict(alpha=p["alpha"], gamma=m.gamma, gamma_mode=m.gamma_mode, fan=m.fan)
    return dict(eps=getattr(m, "eps", 0.0), g=p.get("g"))


def forward_ref(x: np.ndarray, kernel: np.ndarray, bias, geo: dict, groups: int, transposed: bool) -> np.ndarray:
    if transposed:
        return nd_refs.conv_transpose_ref(x, kernel, bias, geo["stride"], geo["padding"], geo["output_padding"],
                                          geo["dilation"], groups)
    return nd_refs.conv_ref(x, kernel, bias, geo["stride"], geo["padding"], geo["dilation"], groups)


def torch_forward(x: np.ndarray, kernel: np.ndarray, bias, geo: dict, groups: int, transposed: bool) -> np.ndarray:
    dims = len(geo["kernel_size"])
    xt, kt = torch.from_numpy(x), torch.from_numpy(kernel)
    bt = None if bias is None else torch.from_numpy(bias)
    if transposed:
        fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[dims]
        return fn(xt, kt, bt, geo["stride"], geo["padding"], geo["output_padding"], groups, geo["dilation"]).numpy()
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    return fn(xt, kt, bt, geo["stride"], geo["padding"], geo["dilation"], groups).numpy()


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("scheme", REPARAM)
def test_kernel_and_forward_match_the_formula(scheme, dims, groups, transposed):
    rng = np.random.default_rng(100 * dims + 10 * groups + transposed)
    geo = geometry(dims, transposed)
    opts = {"pws": dict(gamma=1e-3, gamma_mode="equiv", fan="fan_in"), "ws": dict(eps=1e-5)}.get(scheme, {})
    m = make_conv(scheme, 4, 6, groups=groups, dims=dims, transposed=transposed, gn_groups=2, **geo,
                  **opts).conv.double()
    assert isinstance(m, TORCH_CONV[(dims, transposed)]) and isinstance(m, ReparamConvNd)
    assert type(m) is scheme_conv_class(scheme, dims, transposed)
    p = random_params(m, rng)
    ref = nd_refs.kernel_ref(scheme, p["weight"], groups, transposed, **scheme_params(m, p))
    np.testing.assert_allclose(m.kernel().detach().numpy(), ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())

    x = rng.standard_normal((2, 4, *SPATIAL[dims]))
    bias = p.get("bias")
    want = forward_ref(x, ref, bias, geo, groups, transposed)
    np.testing.assert_allclose(torch_forward(x, ref, bias, geo, groups, transposed), want, rtol=1e-10,
                               atol=1e-12 * np.abs(want).max())  # the two references agree
    for mode in (True, False):
        m.train(mode)
        with torch.no_grad():
            y = m(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(y, want, rtol=1e-9, atol=1e-11 * np.abs(want).max())


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
@pytest.mark.parametrize("dims", [1, 3])
def test_pws_raw_gradient_has_zero_filter_mean_in_every_layout(dims, transposed):
    """The PWS property in 1-D, 3-D and transposed: each output unit's raw-weight gradient sums to zero."""
    torch.manual_seed(dims)
    geo = geometry(dims, transposed)
    m = make_conv("pws", 4, 6, groups=2, dims=dims, transposed=transposed, **geo).conv.double()
    x = torch.randn(2, 4, *SPATIAL[dims], dtype=torch.float64)
    m(x).pow(3).sum().backward()
    grad = nd_refs.filters_of(m.weight.grad.numpy(), 2, transposed).reshape(6, -1)
    assert np.abs(grad.sum(axis=1)).max() <= 1e-12 * np.abs(grad).sum(axis=1).max()


def test_references_pass_a_hand_computed_case():
    """conv_transpose_ref on a case done by hand: 1-D, one channel, stride 2, kernel [1, 10]."""
    out = nd_refs.conv_transpose_ref(np.array([[[1.0, 2.0, 3.0]]]), np.array([[[1.0, 10.0]]]), None, (2,), (0,),
                                     (0,), (1,), 1)
    np.testing.assert_array_equal(out, [[[1, 10, 2, 20, 3, 30]]])
    w = np.arange(2 * 3 * 2, dtype=np.float64).reshape(2, 3, 2)  # transposed, groups 2: (C_in=2, C_out/g=3, k)
    f = nd_refs.filters_of(w, 2, True)
    assert f.shape == (6, 1, 2) and np.array_equal(f[4, 0], w[1, 1])  # channel 4 = group 1, j = 1
    np.testing.assert_array_equal(nd_refs.weight_of(f, 2, True), w)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("scheme", ["ws", "pws", "centered"])
def test_strided_transposed_conv_of_a_centring_scheme_is_refused_with_the_reason(scheme, dims):
    geo = geometry(dims, True, stride=2)
    with pytest.raises(ValueError, match=r"Transpose.*stride.*stride phase.*shift"):
        make_conv(scheme, 4, 6, dims=dims, transposed=True, gn_groups=2, **geo)


@pytest.mark.parametrize("scheme", ["wn", "plain", "bn", "gn"])
def test_strided_transposed_conv_is_built_where_the_scheme_is_defined(scheme):
    rng = np.random.default_rng(7)
    geo = geometry(2, True, stride=2)
    m = make_conv(scheme, 4, 6, dims=2, transposed=True, groups=2, gn_groups=2, **geo).conv.double()
    p = random_params(m, rng)
    x = rng.standard_normal((2, 4, *SPATIAL[2]))
    ref = nd_refs.kernel_ref(scheme, p["weight"], 2, True, eps=getattr(m, "eps", 0.0), g=p.get("g"))
    want = forward_ref(x, ref, p.get("bias"), geo, 2, True)
    with torch.no_grad():
        np.testing.assert_allclose(m(torch.from_numpy(x)).numpy(), want, rtol=1e-9, atol=1e-11 * np.abs(want).max())


def test_factory_builds_the_norm_of_the_dimensionality():
    assert type(make_conv("bn", 4, 6, 3, dims=1).norm) is nn.BatchNorm1d
    assert type(make_conv("bn", 4, 6, 3, dims=3, transposed=True).norm) is nn.BatchNorm3d
    assert type(make_conv("ws", 4, 6, 3, dims=3, gn_groups=2).conv) is WSConv3d
    assert type(make_conv("pws", 4, 6, 3, dims=1).conv) is PWSConv1d
    assert type(make_conv("pws", 4, 6, 3, transposed=True).conv) is PWSConvTranspose2d
    assert type(make_conv("wn", 4, 6, 3, dims=1, transposed=True).conv) is WNConvTranspose1d
    assert make_conv("pws", 4, 6, 3, dims=3).conv.alpha.shape == (6, 1, 1, 1, 1)


@pytest.mark.parametrize("kwargs, needle", [(dict(dims=4), "dims must be 1, 2 or 3, got 4"),
                                            (dict(output_padding=1), "output_padding is for transposed")])
def test_bad_dimensionality_arguments_are_one_line(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        make_conv("pws", 4, 6, 3, **kwargs)


@pytest.mark.parametrize("fan", ["fan_in", "fan_out"])
def test_transposed_pws_fan_is_that_of_the_output_unit(fan):
    """fan_in = (C_in/groups) * prod(k) of the filter feeding one output channel, not the weight's
    dim-1 size (C_out/groups) that torch's own init reads."""
    m = PWSConvTranspose2d(8, 6, (3, 2), groups=2, fan=fan)
    assert m.fan_value == {"fan_in": 4 * 6, "fan_out": 6 * 6}[fan]
    assert PWSConv2d(8, 6, (3, 2), groups=2, fan=fan).fan_value == {"fan_in": 4 * 6, "fan_out": 6 * 6}[fan]


@pytest.mark.parametrize("dims", [1, 3])
def test_to_plain_gives_the_torch_conv_of_the_same_geometry(dims):
    torch.manual_seed(0)
    for transposed in (False, True):
        geo = geometry(dims, transposed)
        m = make_conv("pws", 4, 6, groups=2, dims=dims, transposed=transposed, **geo).conv.double()
        plain = m.to_plain()
        assert type(plain) is TORCH_CONV[(dims, transposed)]
        x = torch.randn(2, 4, *SPATIAL[dims], dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(plain(x), m(x), rtol=1e-12, atol=1e-12)
