"""convert and reparameterize on a Hugging Face ResNet (built from a small config): torch.fx cannot
trace it and its conv/BatchNorm pairs are attributes of ResNetConvLayer, not an nn.Sequential."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install 'varprobe[hf]'")

from varprobe.layers import PWSConv2d, reparameterize  # noqa: E402
from varprobe.layers.deploy import attribute_pairs, conv_bn_pairs  # noqa: E402
from varprobe.models import convert  # noqa: E402


def resnet(layer_type="basic"):
    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                    layer_type=layer_type, num_labels=3)
    return transformers.ResNetForImageClassification(cfg)


def bn_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


def settle_running_stats(model, x):
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(pixel_values=x)
    return model.eval()


@pytest.mark.parametrize("layer_type", ["basic", "bottleneck"])
def test_every_batchnorm_is_paired_with_the_conv_before_it(layer_type):
    model = resnet(layer_type)
    pairs, err = conv_bn_pairs(model)
    assert err is not None  # fx cannot trace it; nothing in an nn.Sequential pairs
    found = attribute_pairs(model)
    assert sorted(b for _, b in found) == sorted(bn_names(model))
    for c, b in found:
        assert c.rpartition(".")[0] == b.rpartition(".")[0] and c.endswith("convolution")


def test_a_module_whose_norm_runs_first_is_not_paired():
    class NormFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.conv(self.norm(x))

    class ConvThenScaledNorm(NormFirst):
        def forward(self, x):
            return self.norm(2 * self.conv(x))  # the BatchNorm does not read the conv's output

    assert attribute_pairs(nn.Sequential(NormFirst())) == []
    assert attribute_pairs(nn.Sequential(ConvThenScaledNorm())) == []


def test_reparameterize_folds_every_batchnorm_with_the_same_eval_outputs():
    x = torch.randn(4, 3, 16, 16)
    model = settle_running_stats(resnet(), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deploy = reparameterize(model)
    assert bn_names(deploy) == []
    with torch.no_grad():
        torch.testing.assert_close(deploy(pixel_values=x).logits, model(pixel_values=x).logits, rtol=1e-4, atol=1e-5)


def test_reparameterize_warns_naming_every_batchnorm_it_cannot_fold():
    model = resnet()
    first = bn_names(model)[0]
    conv = first.rpartition(".")[0] + ".convolution"
    with pytest.warns(RuntimeWarning) as rec:
        deploy = reparameterize(model, pairs=[(conv, first)])
    msg = " ".join(str(w.message) for w in rec)
    assert all(n in msg for n in bn_names(model)[1:]) and "pairs=" in msg
    assert bn_names(deploy) == bn_names(model)[1:]


def test_bad_pairs_are_one_line():
    model = resnet()
    with pytest.raises(ValueError, match="'classifier.1'"):
        convert(model, "pws", drop_batchnorm=True, pairs=[("classifier.1", bn_names(model)[0])])


def test_convert_pws_drops_batchnorm_trains_and_reparameterizes_to_the_same_outputs():
    model = resnet()
    pws = convert(model, "pws", drop_batchnorm=True)
    assert bn_names(pws) == [] and any(isinstance(m, PWSConv2d) for m in pws.modules())
    assert [n for n, _ in pws.named_modules() if n.endswith("convolution")] == \
        [n for n, _ in model.named_modules() if n.endswith("convolution")]
    opt = torch.optim.SGD(pws.parameters(), lr=0.05)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,))
    losses = []
    for _ in range(5):
        loss = pws(pixel_values=x, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    pws.eval()
    deploy = reparameterize(pws)
    assert not any(isinstance(m, PWSConv2d) for m in deploy.modules())
    with torch.no_grad():
        torch.testing.assert_close(deploy(pixel_values=x).logits, pws(pixel_values=x).logits, rtol=1e-4, atol=1e-5)
