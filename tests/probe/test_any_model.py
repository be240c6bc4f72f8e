"""Issue 23 on models of the kinds researchers bring (besides Hugging Face BERT and ViT, in
test_third_party_models): ``nn.TransformerEncoder``, a U-Net with ``ConvTranspose2d`` skip paths, a
Conv1d audio net and a Conv3d net. Each: every trainable parameter is recorded; depth grows along
the dataflow; ``out.var``, ``grad_out.var`` and ``gw.shift_ratio`` of a few layers equal float64
statistics from our own hooks in the same step."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import varprobe

from .float64 import biased_var, shift_ratio, value


class UNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.dec = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        a = self.enc1(x)
        b = self.mid(self.enc2(a))
        return self.out(self.dec(torch.cat([self.up(b), a], 1))).mean((2, 3))


def transformer():
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.Linear(6, 16), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                         nn.Flatten(), nn.Linear(16 * 5, 3))


def audio():
    return nn.Sequential(nn.Conv1d(1, 4, 9, stride=2), nn.BatchNorm1d(4), nn.ReLU(), nn.Conv1d(4, 8, 5, stride=2),
                         nn.GroupNorm(2, 8), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3))


def volume():
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True), nn.ReLU(),
                         nn.Conv3d(4, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2 * 2, 3))


#: model, input shape, layers checked against float64 hooks (with how their weight holds filters), and
#: a chain of weight layers each fed (through other operations) by the one before: depths increase.
MODELS = {
    "transformer": (transformer, (4, 5, 6), {"1.layers.0.linear1": "rows", "1.layers.1.linear2": "rows", "3": "rows"},
                    ["0", "1.layers.0.self_attn", "1.layers.0.linear1", "1.layers.0.linear2",
                     "1.layers.1.self_attn", "1.layers.1.linear1", "1.layers.1.linear2", "3"]),
    "unet": (UNet, (2, 1, 8, 8), {"enc1.0": "rows", "up": "transposed", "dec.0": "rows"},
             ["enc1.0", "enc2.0", "mid.0", "up", "dec.0", "out"]),
    "audio": (audio, (3, 1, 64), {"0": "rows", "3": "rows", "8": "rows"}, ["0", "3", "8"]),
    "volume": (volume, (2, 1, 6, 6, 6), {"0": "rows", "3": "rows"}, ["0", "3", "6"]),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_coverage_depth_and_statistics_against_float64_hooks(kind):
    build, shape, checked, chain = MODELS[kind]
    torch.manual_seed(0)
    model = build().train()
    x, y = torch.randn(*shape), torch.randint(0, 3 if kind != "unet" else 2, (shape[0],))
    seen: dict[str, dict[str, torch.Tensor]] = {n: {} for n in checked}
    handles = []
    for n in checked:
        def hook(module, args, out, n=n):
            seen[n]["out"] = out.detach().to(torch.float64).clone()
            out.register_hook(lambda g, n=n: seen[n].__setitem__("grad", g.detach().to(torch.float64).clone()))
        handles.append(model.get_submodule(n).register_forward_hook(hook))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a coverage warning would mean a parameter is left out
        with varprobe.Probe(model, modes=("train",)) as probe:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            probe.step(loss=loss)
            frame = probe.frame()
    for h in handles:
        h.remove()

    cov = probe.coverage
    assert cov.complete, str(cov)
    assert set(cov.recorded) == {n for n, p in model.named_parameters() if p.requires_grad}
    depth = frame[frame["layer"] != ""].drop_duplicates("layer").set_index("layer")["depth"]
    assert [depth[n] for n in chain] == sorted(depth[n] for n in chain), depth[chain].to_dict()
    assert len(set(depth[chain])) == len(chain) and (depth >= 0).all()
    for n, layout in checked.items():
        assert value(frame, n, "out.var") == pytest.approx(biased_var(seen[n]["out"]), rel=1e-6)
        assert value(frame, n, "grad_out.var") == pytest.approx(biased_var(seen[n]["grad"]), rel=1e-6)
        assert value(frame, n, "gw.shift_ratio") == pytest.approx(
            shift_ratio(model.get_submodule(n).weight.grad, layout), rel=1e-6)


def test_legacy_spectral_norm_conv_records_its_raw_weight():
    """torch.nn.utils.spectral_norm (the legacy hook) keeps the raw weight in ``weight_orig``. Was:
    w.* of the computed weight, no gw.* (torch warned of reading .grad of a non-leaf tensor), and
    coverage said weight_orig acts "in the output of" the conv."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.utils.spectral_norm(nn.Conv1d(2, 4, 3)), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with varprobe.Probe(model, modes=("train",)) as probe:
            loss = nn.functional.cross_entropy(model(torch.randn(4, 2, 7)), torch.tensor([0, 1, 2, 0]))
            loss.backward()
            probe.step(loss=loss)
            frame = probe.frame()
    assert probe.coverage.complete and probe.coverage.recorded["0.weight_orig"] == "w.*, gw.* of 0"
    assert value(frame, "0", "gw.shift_ratio") == pytest.approx(shift_ratio(model[0].weight_orig.grad), rel=1e-6)
    raw = model[0].weight_orig.detach().double()  # the raw weight, not the computed one: mean filter norm²
    assert value(frame, "0", "w.sq_norm") == pytest.approx(float(raw.square().sum()) / 4, rel=1e-6)
