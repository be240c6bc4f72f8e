"""reparameterize in 1, 2 and 3 dimensions and for transposed convs: the deploy copy computes what the
eval-mode original computes (float64), and every BatchNorm left unfolded is named with its true reason."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from varprobe.layers import ReparamConvNd, make_conv, reparameterize
from varprobe.layers.deploy import check_pairs, conv_bn_pairs, fold_batchnorm

from . import nd_refs

SPATIAL = {1: (10,), 2: (6, 7), 3: (5, 4, 6)}
CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def settle(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm running statistics and affine parameters; float64, eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) + 0.3)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g))
    return model.double().eval()


class Net(nn.Module):
    """conv -> BN -> ReLU, a grouped conv -> BN, a transposed conv (groups 2) -> BN, in ``dims`` dimensions."""

    def __init__(self, dims: int, scheme: str = "plain") -> None:
        super().__init__()
        self.conv1 = make_conv(scheme, 3, 8, 3, padding=1, dims=dims, gn_groups=2).conv
        self.bn1 = BN[dims](8)
        self.conv2 = make_conv(scheme, 8, 8, 3, stride=2, padding=1, groups=2, dims=dims, gn_groups=2).conv
        self.bn2 = BN[dims](8)
        self.up = make_conv(scheme, 8, 6, 2, stride=1, groups=2, dims=dims, transposed=True,
                            gn_groups=2).conv
        self.bn3 = BN[dims](6)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.bn3(self.up(F.relu(self.bn2(self.conv2(x)))))


@pytest.mark.parametrize("scheme", ["plain", "pws", "wn", "ws", "centered"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_conv_bn_pairs_fold_with_the_same_eval_output(dims, scheme):
    torch.manual_seed(dims)
    model = settle(Net(dims, scheme), seed=dims)
    x = torch.randn(2, 3, *SPATIAL[dims], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every BatchNorm folds: nothing to say
        deploy = reparameterize(model)
    assert not any(isinstance(m, (_BatchNorm, ReparamConvNd)) for m in deploy.modules())
    assert type(deploy.conv1) is CONV[dims] and type(deploy.up) is CONVT[dims]
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), model(x), rtol=1e-10, atol=1e-10)


def test_fold_of_a_grouped_transposed_conv_matches_the_formula():
    """fold_batchnorm scales the weights feeding output channel o (a transposed conv's filter-major
    row o), checked against numpy: bn(conv_transpose(x)) with running statistics."""
    torch.manual_seed(4)
    conv = nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2).double()
    bn = settle(nn.Sequential(nn.BatchNorm1d(6)), 5)[0]
    x = np.random.default_rng(6).standard_normal((2, 4, 7))
    y = nd_refs.conv_transpose_ref(x, conv.weight.detach().numpy(), conv.bias.detach().numpy(), (2,), (1,), (1,),
                                   (1,), 2)
    ref = nd_refs.batchnorm_ref(y, bn.weight.detach().numpy(), bn.bias.detach().numpy(), bn.eps,
                                bn.running_mean.numpy(), bn.running_var.numpy())
    with torch.no_grad():
        out = fold_batchnorm(conv.eval(), bn)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


def test_conv1d_batchnorm1d_in_sequential_is_folded_not_misreported():
    """Was: "not found directly after a conv" for every BatchNorm1d, which was not the reason."""
    torch.manual_seed(7)
    model = settle(nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Conv1d(4, 4, 1),
                                 nn.BatchNorm1d(4)), 8)
    assert conv_bn_pairs(model) == ([("0", "1"), ("3", "4")], None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deploy = reparameterize(model)
    x = torch.randn(3, 2, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), model(x), rtol=1e-10, atol=1e-10)


class AfterReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm3d(4)

    def forward(self, x):
        return self.bn(F.relu(self.conv(x)))


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.BatchNorm1d(4))

    def forward(self, x):
        y = self.body(x)
        return y if y.mean() > 0 else -y


@pytest.mark.parametrize("build, dims, reason", [
    (AfterReLU, 3, "bn (its input is the output of the function relu, not of a conv)"),
    (Reused, 1, "bn (the output of the conv before it, conv, is also read by the function add)"),
    (Untraceable, 1, "body.2 (in nn.Sequential body: its input comes from a ReLU, not a conv; torch.fx could "
                     "not trace the model"),
    (lambda: nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4, track_running_stats=False)), 1,
     "1 (no running statistics: in eval mode it normalizes with the batch's)"),
])
def test_unfolded_batchnorm_is_named_with_the_true_reason(build, dims, reason):
    torch.manual_seed(9)
    model = build()
    model.eval().double()
    x = torch.randn(2, 2, *SPATIAL[dims], dtype=torch.float64) + 0.5
    with pytest.warns(RuntimeWarning) as rec:
        deploy = reparameterize(model)
    msg = " ".join(str(w.message) for w in rec)
    assert reason in msg and "not found directly after a conv" not in msg
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), model(x), rtol=1e-10, atol=1e-10)


def test_explicit_pairs_check_the_dimensionality():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Conv1d(4, 3, 1), nn.BatchNorm1d(4))
    assert check_pairs(model, [("0", "1")]) == [("0", "1")]
    with pytest.raises(ValueError, match=r"pair \('2', '3'\): it has 4 features, the conv 3 output channels"):
        check_pairs(model, [("2", "3")])
    with pytest.raises(ValueError, match=r"BatchNorm2d after a 1-D conv"):
        check_pairs(nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm2d(4)), [("0", "1")])
