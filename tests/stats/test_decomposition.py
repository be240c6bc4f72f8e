"""tap_overlap and second_moment_parts against float64 references built from F.unfold (the
explicit receptive fields, padding included), and against Monte Carlo for i.i.d. inputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from varprobe.stats import second_moment_parts, tap_overlap

F64 = torch.float64

# (in_channels, out_channels, size, kernel, stride, padding, dilation, groups)
GEOMETRIES = [
    (3, 4, (7, 7), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (4, 6, (9, 6), (3, 2), (2, 1), (2, 0), (1, 2), 2),
    (2, 3, (5, 8), (1, 3), (1, 2), (0, 1), (1, 1), 1),
    (3, 5, (6, 6), (5, 5), (1, 1), (2, 2), (1, 1), 1),   # border taps are outside for most positions
    (4, 4, (8, 8), (3, 3), (3, 3), (0, 0), (2, 2), 4),   # depthwise, no padding
]


def _unfold_parts(kernel, size, kernel_size, stride, padding, dilation, mean, var):
    """The i.i.d. expectation of E[(y_i - b_i)^2] per filter, written out position by position:
    the receptive field of each output position read from an unfolded mask of the input."""
    O, I = kernel.shape[:2]
    mask = F.unfold(torch.ones(1, I, *size, dtype=F64), kernel_size, dilation, padding, stride)[0]  # (I*T, P)
    w = kernel.to(F64).reshape(O, I * mask.shape[0] // I)  # (O, I*T)
    iid = var * (w.square() @ mask).mean(1)
    shift = mean ** 2 * (w @ mask).square().mean(1)
    return iid, shift


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_parts_match_the_unfolded_reference(geo):
    cin, cout, size, k, stride, pad, dil, groups = geo
    g = torch.Generator().manual_seed(sum(size) + cin)
    kernel = torch.randn(cout, cin // groups, *k, generator=g) + 0.3  # filters with non-zero sums
    overlap = tap_overlap(size, k, stride, dil, [(p, p) for p in pad])
    iid, shift = second_moment_parts(kernel, overlap, mean=0.7, var=1.9)
    ref_iid, ref_shift = _unfold_parts(kernel, size, k, stride, pad, dil, 0.7, 1.9)
    torch.testing.assert_close(iid, ref_iid, rtol=1e-12, atol=0)
    torch.testing.assert_close(shift, ref_shift, rtol=1e-12, atol=0)


def test_without_padding_the_parts_are_the_textbook_ones():
    kernel = torch.randn(5, 3, 3, 3, dtype=F64)
    iid, shift = second_moment_parts(kernel, tap_overlap((6, 6), (3, 3), (1, 1), (1, 1), [(0, 0)] * 2), -0.4, 2.5)
    torch.testing.assert_close(iid, 2.5 * kernel.flatten(1).square().sum(1), rtol=1e-13, atol=0)
    torch.testing.assert_close(shift, 0.16 * kernel.flatten(1).sum(1).square(), rtol=1e-13, atol=0)


def test_asymmetric_padding_as_conv_same_uses_it():
    """padding='same' with an even kernel pads 0 before and 1 after on each axis."""
    kernel = torch.randn(2, 1, 2, 2, dtype=F64)
    overlap = tap_overlap((4, 4), (2, 2), (1, 1), (1, 1), [(0, 1), (0, 1)])
    mask = F.pad(torch.ones(1, 1, 4, 4, dtype=F64), (0, 1, 0, 1))
    cols = F.unfold(mask, (2, 2))[0]  # (4 taps, 16 positions)
    w = kernel.reshape(2, 4)
    torch.testing.assert_close(second_moment_parts(kernel, overlap, 1.0, 1.0)[0], (w.square() @ cols).mean(1))


def test_linear_layer_is_one_tap():
    w = torch.randn(4, 7, dtype=F64)
    iid, shift = second_moment_parts(w, torch.ones(1, 1, dtype=F64), 0.5, 3.0)
    torch.testing.assert_close(iid, 3.0 * w.square().sum(1))
    torch.testing.assert_close(shift, 0.25 * w.sum(1).square())


def test_iid_inputs_have_no_rest():
    """Monte Carlo: for inputs with i.i.d. entries, measured E[(y - b)^2] = iid + shift."""
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=True).double()
    with torch.no_grad():
        conv.weight.add_(0.05)  # a clear filter-sum term
    x = torch.randn(4000, 3, 6, 6, generator=g, dtype=F64) * 1.3 + 0.8
    with torch.no_grad():
        measured = (conv(x) - conv.bias[:, None, None]).square().mean((0, 2, 3))
    overlap = tap_overlap((6, 6), (3, 3), (1, 1), (1, 1), [(1, 1), (1, 1)])
    iid, shift = second_moment_parts(conv.weight, overlap, x.mean(), x.var(unbiased=False))
    assert float(shift.mean() / measured.mean()) > 0.2
    torch.testing.assert_close(iid + shift, measured, rtol=0.02, atol=0)


@pytest.mark.parametrize("bad, match", [
    (dict(size=(2, 2), kernel_size=(5, 5)), "shorter than the dilated kernel 5"),
    (dict(size=(4,), kernel_size=(3, 3)), "one entry per spatial axis"),
])
def test_bad_geometry(bad, match):
    args = dict(size=(4, 4), kernel_size=(3, 3), stride=(1, 1), dilation=(1, 1), padding=[(0, 0), (0, 0)])
    args.update(bad)
    if len(args["size"]) == 1:
        args.update(stride=(1,), dilation=(1,), padding=[(0, 0)])
    with pytest.raises(ValueError, match=match):
        tap_overlap(**args)


def test_overlap_must_fit_the_kernel():
    with pytest.raises(ValueError, match="does not fit a kernel with 9 taps"):
        second_moment_parts(torch.ones(2, 1, 3, 3), torch.ones(4, 4, dtype=F64), 0.0, 1.0)
