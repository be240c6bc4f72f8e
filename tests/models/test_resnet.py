"""CIFAR ResNet: trainability under every scheme and faithfulness to the official PWS code (paper-notes
2.6-2.7), checked structurally and numerically rather than by re-reading the implementation."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.layers import (SCHEMES, CenteredConv2d, ConvNorm, PWSConv2d, ResidualBlock, WNConv2d, WSConv2d,
                             init_alpha)
from tests.models.conftest import _batch, assert_memorises, memorise
from varprobe.models import resnet_cifar

NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d, nn.LocalResponseNorm)
CONV_TYPE = {"plain": nn.Conv2d, "plain+gn": nn.Conv2d, "bn": nn.Conv2d, "gn": nn.Conv2d, "ws": WSConv2d,
             "wn": WNConv2d, "pws": PWSConv2d, "centered": CenteredConv2d}
NORM_AFTER = ("bn", "gn", "ws")
PWS_LAYOUT = ("pws", "wn", "centered")


def convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def norms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, NORM_TYPES)]


def blocks(model: nn.Module) -> list[ResidualBlock]:
    return [m for m in model.modules() if isinstance(m, ResidualBlock)]


# ----------------------------------------------------------------------------------------------- training


def assert_basic_stages(model: nn.Module, c_in: int, widths) -> None:
    """Every stage's basic blocks: conv3x3 (stride 2 at the first block of every stage but the
    first) - ReLU - conv3x3, and a 1x1 stride-2 projection shortcut exactly where the stride is 2."""
    for i, (stage, width) in enumerate(zip(model.stages, widths)):
        for j, block in enumerate(stage):
            stride = 2 if (i > 0 and j == 0) else 1
            c1, c2 = block.branch[0].conv, block.branch[2].conv
            assert isinstance(block.branch[1], nn.ReLU)
            assert (c1.in_channels, c1.out_channels, c1.kernel_size, c1.stride, c1.padding) == \
                (c_in, width, (3, 3), (stride, stride), (1, 1))
            assert (c2.in_channels, c2.out_channels, c2.kernel_size, c2.stride, c2.padding) == \
                (width, width, (3, 3), (1, 1), (1, 1))
            if stride == 2:
                sc = block.shortcut.conv
                assert (sc.in_channels, sc.out_channels, sc.kernel_size, sc.stride, sc.padding) == \
                    (c_in, width, (1, 1), (2, 2), (0, 0))
            else:
                assert block.shortcut is None
            c_in = width


@pytest.mark.parametrize("scheme", SCHEMES)
def test_resnet8_memorises_a_batch(scheme):
    torch.manual_seed(0)
    model = resnet_cifar(8, scheme)
    x, y = _batch((16, 3, 16, 16))
    assert_memorises(memorise(model, x, y))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_resnet20_shapes(scheme):
    torch.manual_seed(0)
    model = resnet_cifar(20, scheme, num_classes=7)
    shapes = []
    for stage in model.stages:
        stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert shapes == [(2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4)]
    assert [len(s) for s in model.stages] == [3, 3, 3]


# ------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("depth", [0, 2, 7, 9, 10, 21, 33])
def test_bad_depth_raises_naming_it(depth):
    with pytest.raises(ValueError, match=rf"6n\+2.*\b{depth}\b"):
        resnet_cifar(depth, "pws")


def test_unknown_scheme_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        resnet_cifar(8, "batchnorm")
    msg = str(info.value)
    assert "batchnorm" in msg
    for s in SCHEMES:
        assert s in msg


# ------------------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("depth", [8, 14, 20])
@pytest.mark.parametrize("scheme", ["plain", "bn", "pws"])
def test_conv_count_widths_and_strides(depth, scheme):
    model = resnet_cifar(depth, scheme)
    n = (depth - 2) // 6
    all_convs = convs(model)
    projections = [b.shortcut for b in blocks(model) if b.shortcut is not None]
    assert len(projections) == 2
    assert len(all_convs) == depth - 1 + len(projections)
    assert [len(s) for s in model.stages] == [n, n, n]

    stem = model.stem[0].conv
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding) == \
        (3, 16, (3, 3), (1, 1), (1, 1))
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model.stem.modules())
    assert_basic_stages(model, 16, (16, 32, 64))
    assert model.head.in_features == 64


@pytest.mark.parametrize("scheme", SCHEMES)
def test_conv_type_and_bias_per_scheme(scheme):
    model = resnet_cifar(8, scheme)
    for name, conv in convs(model):
        assert type(conv) is CONV_TYPE[scheme], name
        assert (conv.bias is None) == (scheme in NORM_AFTER), name


def test_width_option_scales_every_stage():
    model = resnet_cifar(8, "gn", width=8)
    outs = [b.branch[2].conv.out_channels for b in blocks(model)]
    assert outs == [8, 16, 32]
    assert model.head.in_features == 32


# ------------------------------------------------------------------------------------- block semantics


def _record_block(block: ResidualBlock):
    rec = {}
    hooks = [
        block.register_forward_hook(lambda m, i, o: rec.update(x=i[0].detach().clone(), out=o.detach().clone())),
        block.branch.register_forward_hook(
            lambda m, i, o: rec.update(branch_in=i[0].detach().clone(), branch_out=o.detach().clone())),
    ]
    if block.shortcut is not None:
        hooks.append(block.shortcut.register_forward_hook(
            lambda m, i, o: rec.update(sc_in=i[0].detach().clone(), sc_out=o.detach().clone())))
    return rec, hooks


@pytest.mark.parametrize("scheme", SCHEMES)
def test_identity_block_adds_x_not_relu_x(scheme):
    torch.manual_seed(0)
    model = resnet_cifar(8, scheme).eval()
    block = model.stages[0][0]
    assert block.shortcut is None
    rec, _ = _record_block(block)
    x = torch.randn(4, 16, 8, 8) - 0.5  # mostly negative entries
    assert (x < 0).float().mean() > 0.5
    with torch.no_grad():
        out = block(x)
    assert torch.equal(rec["x"], x)  # the block did not modify its input in place
    assert torch.equal(rec["branch_in"], F.relu(x))
    assert torch.allclose(out, rec["branch_out"] + x, atol=1e-6)
    assert not torch.allclose(out, rec["branch_out"] + F.relu(x), atol=1e-3)
    assert (out < 0).any()  # no ReLU after the add

    # an all-negative input: relu(x) = 0, the branch sees zeros and the block passes x through
    xn = -torch.rand(2, 16, 8, 8) - 0.1
    with torch.no_grad():
        outn = block(xn)
    assert torch.equal(rec["branch_in"], torch.zeros_like(xn))
    assert torch.allclose(outn - rec["branch_out"], xn, atol=1e-6)
    assert (outn < 0).any()


@pytest.mark.parametrize("scheme", ["plain", "bn", "pws"])
def test_identity_inside_the_network_is_the_raw_residual_stream(scheme):
    """In ResNet-14 the second block of stage 1 receives the residual stream, which has negative entries.

    BN's official zero init makes every branch output 0 at init, so its stream is still the rectified
    stem output there; the ordering is checked on the BN net without it (the zero init is tested below).
    """
    torch.manual_seed(0)
    model = resnet_cifar(14, scheme, **({"zero_init_residual": False} if scheme == "bn" else {}))
    block = model.stages[0][1]
    rec, _ = _record_block(block)
    model(torch.randn(4, 3, 16, 16))
    x = rec["x"]
    assert (x < 0).any()
    assert torch.equal(rec["branch_in"], F.relu(x))
    assert torch.allclose(rec["out"], rec["branch_out"] + x, atol=1e-5)
    assert not torch.allclose(rec["out"], rec["branch_out"] + F.relu(x), atol=1e-3)
    assert (rec["out"] < 0).any()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_projection_shortcut_reads_relu_x(scheme):
    torch.manual_seed(0)
    model = resnet_cifar(8, scheme).eval()
    block = model.stages[1][0]
    assert block.shortcut is not None
    rec, _ = _record_block(block)
    x = torch.randn(4, 16, 8, 8) - 0.5
    with torch.no_grad():
        out = block(x)
    assert torch.equal(rec["sc_in"], F.relu(x))
    assert torch.equal(rec["branch_in"], F.relu(x))
    assert out.shape == (4, 32, 4, 4)
    assert torch.allclose(out, rec["branch_out"] + rec["sc_out"], atol=1e-6)
    assert (out < 0).any()


def test_block_outputs_can_be_negative_in_the_network():
    """No ReLU after the add: every block's output (the residual stream) has negative entries."""
    torch.manual_seed(0)
    model = resnet_cifar(8, "pws")
    mins = []
    for b in blocks(model):
        b.register_forward_hook(lambda m, i, o: mins.append(o.min().item()))
    model(torch.randn(4, 3, 16, 16))
    assert len(mins) == 3
    assert all(v < 0 for v in mins), mins


# ------------------------------------------------------------------------------------------ norm layout


def test_plain_has_no_norm_at_all():
    model = resnet_cifar(8, "plain")
    assert norms(model) == []
    for m in model.modules():
        if isinstance(m, ConvNorm):
            assert isinstance(m.norm, nn.Identity)


@pytest.mark.parametrize("scheme", NORM_AFTER)
@pytest.mark.parametrize("neck_norm", [None, True])
def test_norm_after_every_conv_and_none_in_the_neck(scheme, neck_norm):
    """configs/cifar/bn.py: a norm after every conv, ``neck_norm_cfg = None`` (the neck is ReLU only);
    ``neck_norm=True`` restores the earlier layout with the scheme's norm in the neck."""
    model = resnet_cifar(8, scheme, neck_norm=neck_norm)
    norm_type = nn.BatchNorm2d if scheme == "bn" else nn.GroupNorm
    conv_norms = [m for m in model.modules() if isinstance(m, ConvNorm)]
    assert len(conv_norms) == len(convs(model)) == 9  # 7 + 2 projection shortcuts
    for cn in conv_norms:
        assert type(cn.norm) is norm_type
        if scheme != "bn":
            assert cn.norm.num_groups == 8
        channels = cn.norm.num_features if scheme == "bn" else cn.norm.num_channels
        assert channels == cn.conv.out_channels
    for b in blocks(model):
        if b.shortcut is not None:
            assert type(b.shortcut.norm) is norm_type
    assert isinstance(model.neck[1], nn.ReLU)
    if neck_norm:
        assert type(model.neck[0]) is norm_type
        assert len(norms(model)) == len(conv_norms) + 1
    else:
        assert type(model.neck[0]) is nn.Identity
        assert len(norms(model)) == len(conv_norms)


@pytest.mark.parametrize("scheme", NORM_AFTER)
def test_zero_init_residual_zeroes_exactly_the_last_norm_of_each_branch(scheme):
    model = resnet_cifar(14, scheme)
    last = {id(b.branch[2].norm) for b in blocks(model)}
    assert len(last) == 6
    for name, m in norms(model):
        if id(m) in last:
            assert torch.equal(m.weight.detach(), torch.zeros_like(m.weight)), name
        else:  # every other norm keeps the default affine init (1, 0)
            assert torch.equal(m.weight.detach(), torch.ones_like(m.weight)), name
        assert torch.equal(m.bias.detach(), torch.zeros_like(m.bias)), name
    off = resnet_cifar(14, scheme, zero_init_residual=False)
    for _, m in norms(off):
        assert torch.equal(m.weight.detach(), torch.ones_like(m.weight))


@pytest.mark.parametrize("scheme", NORM_AFTER)
def test_zero_init_residual_blocks_start_as_their_shortcuts(scheme):
    """At init (train mode) every branch outputs exactly 0, so the net equals stem -> shortcuts -> neck
    -> head, computed here by hand; its branch convs get exactly zero gradient at step 0 (their filter
    statistics such as gw.shift_ratio are then 0/0), while the zeroed norms' weights get a non-zero one."""
    torch.manual_seed(0)
    model = resnet_cifar(14, scheme)
    x, y = _batch((8, 3, 16, 16))
    branch_outs = []
    for b in blocks(model):
        b.branch.register_forward_hook(lambda m, i, o: branch_outs.append(o.detach().clone()))
    out = model(x)
    assert len(branch_outs) == 6 and all(torch.equal(o, torch.zeros_like(o)) for o in branch_outs)
    with torch.no_grad():
        h = model.stem(x)
        for b in blocks(model):
            h = h if b.shortcut is None else b.shortcut(F.relu(h))
        expected = model.head(model.neck(h))
    assert torch.allclose(out, expected, rtol=1e-6, atol=1e-6)
    F.cross_entropy(out, y).backward()
    for b in blocks(model):
        for conv in (b.branch[0].conv, b.branch[2].conv):
            assert torch.equal(conv.weight.grad, torch.zeros_like(conv.weight))
        assert b.branch[2].norm.weight.grad.abs().max() > 0


@pytest.mark.parametrize("scheme, options, pattern", [
    ("plain", {"neck_norm": True}, r"neck_norm=True .*'plain'"),
    ("pws", {"zero_init_residual": True}, r"zero_init_residual=True .*'pws'.*bn, gn, ws"),
    ("plain", {"zero_init_residual": True}, r"zero_init_residual=True .*'plain'"),
    ("bn", {"neck_norm": "yes"}, r"neck_norm must be None, True or False, got 'yes'"),
    ("bn", {"zero_init_residual": 1}, r"zero_init_residual must be None, True or False, got 1"),
])
def test_layout_options_reject_what_the_scheme_cannot_do(scheme, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        resnet_cifar(8, scheme, **options)


def test_pws_layout_without_neck_norm():
    model = resnet_cifar(8, "pws", neck_norm=False)
    assert [n for n, _ in norms(model)] == ["stem.0.norm"]
    assert type(model.neck[0]) is nn.Identity


def test_gn_groups_option_reaches_every_norm():
    model = resnet_cifar(8, "gn", gn_groups=4)
    assert {m.num_groups for _, m in norms(model)} == {4}


@pytest.mark.parametrize("scheme", PWS_LAYOUT)
def test_pws_layout_has_exactly_two_gn1(scheme):
    model = resnet_cifar(8, scheme)
    found = norms(model)
    assert len(found) == 2, found
    (n1, m1), (n2, m2) = found
    assert m1 is model.stem[0].norm and m2 is model.neck[0]
    for m in (m1, m2):
        assert type(m) is nn.GroupNorm and m.num_groups == 1
    assert m1.num_channels == 16 and m2.num_channels == 64
    for b in blocks(model):
        assert not any(isinstance(m, NORM_TYPES) for m in b.modules())
    # the neck is norm -> ReLU before pooling, and the stem is conv -> norm -> ReLU
    assert isinstance(model.neck[1], nn.ReLU)
    assert isinstance(model.stem[1], nn.ReLU)


def test_plain_gn_is_plain_convs_with_exactly_the_pws_norm_layers():
    control, pws, plain = resnet_cifar(8, "plain+gn"), resnet_cifar(8, "pws"), resnet_cifar(8, "plain")
    names = lambda m, types: [n for n, x in m.named_modules() if isinstance(x, types)]  # noqa: E731
    assert names(control, NORM_TYPES) == names(pws, NORM_TYPES)
    assert [type(m) for m in control.modules() if isinstance(m, nn.Conv2d)] == \
           [type(m) for m in plain.modules() if isinstance(m, nn.Conv2d)]
    torch.manual_seed(0)
    a = resnet_cifar(8, "plain")
    torch.manual_seed(0)
    b = resnet_cifar(8, "plain+gn")  # the same initial weights: only the two GroupNorms differ
    conv_state = {k: v for k, v in b.state_dict().items() if k in a.state_dict()}
    assert set(b.state_dict()) - set(a.state_dict()) == {"stem.0.norm.weight", "stem.0.norm.bias",
                                                         "neck.0.weight", "neck.0.bias"}
    for k, v in conv_state.items():
        assert torch.equal(v, a.state_dict()[k]), k


def test_pws_data_init_flags():
    model = resnet_cifar(14, "pws")
    assert model.stem[0].conv.data_init is True
    for b in blocks(model):
        assert b.branch[0].conv.data_init is True
        assert b.branch[2].conv.data_init is False
        if b.shortcut is not None:
            assert b.shortcut.conv.data_init is True
    off = [n for n, m in convs(model) if not m.data_init]
    assert len(off) == len(blocks(model)) == 6


def test_pws_conv_options_reach_every_conv():
    model = resnet_cifar(8, "pws", gamma=0.1, gamma_mode="equiv", fan="fan_out")
    for _, conv in convs(model):
        assert (conv.gamma, conv.gamma_mode, conv.fan) == (0.1, "equiv", "fan_out")


# ------------------------------------------------------------------------------------------------- head


@pytest.mark.parametrize("scheme", ["plain", "pws"])
def test_head_init_normal_001_zero_bias(scheme):
    torch.manual_seed(0)
    model = resnet_cifar(8, scheme, num_classes=100)
    w = model.head.weight.detach()
    assert w.shape == (100, 64)
    assert torch.equal(model.head.bias.detach(), torch.zeros(100))
    assert abs(w.std().item() - 0.01) < 0.0006  # 6400 samples: sd of the estimate ~ 9e-5
    assert abs(w.mean().item()) < 0.0005
    # normal, not uniform: excess kurtosis ~ 0 (uniform gives -1.2)
    z = (w - w.mean()) / w.std()
    assert abs((z ** 4).mean().item() - 3.0) < 0.4


# ------------------------------------------------------------------------------------------- init_alpha


def test_init_alpha_sets_output_variance_to_two():
    torch.manual_seed(0)
    model = resnet_cifar(8, "pws")
    x = torch.randn(16, 3, 16, 16)
    names = init_alpha(model, x)
    data_init = {n for n, m in model.named_modules() if isinstance(m, PWSConv2d) and m.data_init}
    assert set(names) == data_init and len(names) == len(data_init) == 1 + 3 + 2

    variances = {}

    def hook(name):
        # measured inside the hook: the branch ReLU is in place and would rectify the stored tensor
        return lambda m, i, o: variances.__setitem__(name, o.detach().double().var(unbiased=False).item())

    for n, m in model.named_modules():
        if isinstance(m, PWSConv2d):
            m.register_forward_hook(hook(n))
    with torch.no_grad():
        model(x)
    for n in data_init:
        assert variances[n] == pytest.approx(2.0, rel=1e-4), (n, variances[n])
    # the others keep alpha = 1 and are not forced to variance 2
    for n, m in model.named_modules():
        if isinstance(m, PWSConv2d) and not m.data_init:
            assert torch.equal(m.alpha.detach(), torch.ones_like(m.alpha))
            assert variances[n] != pytest.approx(2.0, rel=1e-3)
    # eval mode (cached kernel) sees the same variances
    model.eval()
    before = dict(variances)
    with torch.no_grad():
        model(x)
    for n in data_init:
        assert variances[n] == pytest.approx(before[n], rel=1e-5)


# -------------------------------------------------------------------------------------------- hooks


@pytest.mark.parametrize("scheme", ["plain", "bn", "pws"])
def test_hooks_see_outputs_that_are_not_modified_later(scheme):
    """No in-place op rewrites a module's output after its hooks ran: a forward hook may keep the tensor
    itself, and full backward hooks work on every conv, ConvNorm and block."""
    torch.manual_seed(0)
    model = resnet_cifar(8, scheme)
    kept, copies = {}, {}

    def keep(name):
        def hook(m, i, o):
            kept[name], copies[name] = o, o.detach().clone()
        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, ConvNorm, ResidualBlock)):
            m.register_forward_hook(keep(name))
            m.register_full_backward_hook(lambda m, gi, go: None)
    model(torch.randn(4, 3, 16, 16, requires_grad=True)).sum().backward()
    assert len(kept) == 9 + 9 + 3
    for name in kept:
        assert torch.equal(kept[name].detach(), copies[name]), name
    assert (kept["stages.2.0"] < 0).any()  # the last block's output, read by the neck
