"""channel_axis: the channel axis of a module's output, from the module and the output's shape."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from varprobe.probe.channel_axis import channel_axis


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: a LayerNorm over C of an NCHW tensor, no data_format attribute."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelsFirst(LayerNorm2d):
    def __init__(self, c, data_format):
        super().__init__(c)
        self.data_format = data_format


def test_plain_modules_keep_the_old_axes():
    assert channel_axis(nn.Conv2d(3, 4, 3), (2, 4, 5, 5)) == 1
    assert channel_axis(nn.BatchNorm2d(4), (2, 4, 5, 5)) == 1
    assert channel_axis(nn.GroupNorm(2, 4), (2, 4, 5, 5)) == 1
    assert channel_axis(nn.Linear(3, 4), (2, 7, 4)) == -1
    assert channel_axis(nn.LayerNorm(4), (2, 4, 4)) == -1  # plain LayerNorm: trailing dims, whatever axis 1 is
    assert channel_axis(nn.LayerNorm((5, 6)), (2, 4, 5, 6)) == -1


def test_layernorm_subclass_on_nchw_is_told_from_the_shape():
    ln = LayerNorm2d(4)
    x = torch.randn(2, 4, 5, 6)
    assert ln(x).shape == x.shape  # it runs on NCHW
    assert channel_axis(ln, ln(x).shape) == 1
    assert channel_axis(ln, (2, 5, 6, 4)) == -1  # NHWC input: the last axis


def test_data_format_decides_even_when_the_shape_is_ambiguous():
    assert channel_axis(ChannelsFirst(4, "channels_first"), (2, 4, 4, 4)) == 1
    assert channel_axis(ChannelsFirst(4, "channels_last"), (2, 4, 4, 4)) == -1


def test_undeterminable_is_none():
    ln = LayerNorm2d(4)
    assert channel_axis(ln, (2, 4, 5, 4)) is None  # C == W and no data_format
    assert channel_axis(ln, (2, 3, 5, 6)) is None  # no axis of size C
    assert channel_axis(ln, (2, 3)) is None
    assert channel_axis(ln, (2, 4)) == -1


def test_transformers_convnext_layernorm():
    transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install 'varprobe[hf]'")
    from transformers.models.convnext.modeling_convnext import ConvNextLayerNorm
    first = ConvNextLayerNorm(8, data_format="channels_first")
    last = ConvNextLayerNorm(8, data_format="channels_last")
    assert channel_axis(first, first(torch.randn(2, 8, 8, 8)).shape) == 1
    assert channel_axis(last, last(torch.randn(2, 8, 8, 8)).shape) == -1
    assert transformers  # imported for the class above


# -- in the probe ----------------------------------------------------------------------------------

def _probe_steps(shape, steps=2):
    """A float64 conv -> LayerNorm2d (no data_format) trained ``steps`` steps on inputs of ``shape``
    under a Probe; returns the frame and, per step, the LayerNorm's input, output and dL/d output."""
    from varprobe.probe import Probe
    def build():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), LayerNorm2d(4)).double()

    torch.manual_seed(0)
    model = build()
    with torch.no_grad():  # a non-trivial affine, so the output's channel means differ
        model[1].weight.uniform_(0.5, 2.0)
        model[1].bias.uniform_(-1.0, 1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    probe = Probe(model)
    with probe:
        for _ in range(steps):
            x = torch.randn(*shape, dtype=torch.float64)
            ref = build()  # the reference runs on a copy without hooks: the probe sees one forward
            ref.load_state_dict(model.state_dict())
            h = ref[0](x)
            y = ref[1](h)
            y.retain_grad()
            (y ** 3).mean().backward()
            seen.append((h.detach(), y.detach(), y.grad.detach()))
            loss = (model(x) ** 3).mean()
            loss.backward()
            probe.step(loss=loss)
            opt.step()
            opt.zero_grad()
    return probe.frame(), seen


def _rows(frame, step, layer):
    f = frame[(frame.step == step) & (frame.layer == layer) & (frame["mode"] == "train")]
    return dict(zip(f.quantity, f.value))


def _per_channel(t):
    mu = t.mean(dim=(0, 2, 3))
    var = ((t - mu[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
    return {"ch_var": var.mean().item(), "ch_sq_mean": (mu ** 2).mean().item()}


def test_probe_reduces_a_layernorm_subclass_over_the_axis_its_shape_tells():
    """C=4 on axis 1 of (N, 4, 5, 6): the subclass without data_format is reduced over channels
    (axis 1), against a float64 reference; whole-tensor rows of input, output and dL/dy too."""
    frame, seen = _probe_steps((3, 3, 5, 6))
    for step, (h, y, g) in enumerate(seen):
        got = _rows(frame, step, "1")
        for name, want in _per_channel(y).items():  # (in.* and grad_out.* have no per-channel rows)
            assert got["out." + name] == pytest.approx(want, rel=1e-9, abs=1e-15), name
        for prefix, t in (("in.", h), ("out.", y), ("grad_out.", g)):
            for name, want in {"var": t.var(unbiased=False).item(), "sq_mean": (t * t).mean().item()}.items():
                assert got[prefix + name] == pytest.approx(want, rel=1e-9, abs=1e-15), prefix + name


def test_probe_records_only_whole_tensor_statistics_when_the_axis_cannot_be_told():
    """(N, 4, 5, 4): axis 1 and the last axis both have size C=4. One warning naming the layer;
    mean, var and sq_mean of input, output and output gradient match the float64 reference; no
    ch_var, ch_sq_mean or dead_frac rows for that layer; the conv before it keeps them."""
    with pytest.warns(RuntimeWarning, match=r"layer '1' \(LayerNorm2d.*channel axis cannot be told") as rec:
        frame, seen = _probe_steps((3, 3, 5, 4))
    assert sum("channel axis cannot be told" in str(w.message) for w in rec) == 1
    for step, (h, y, g) in enumerate(seen):
        got = _rows(frame, step, "1")
        assert not {q for q in got if q.split(".")[-1] in ("ch_var", "ch_sq_mean", "dead_frac")}, sorted(got)
        for prefix, t in (("in.", h), ("out.", y), ("grad_out.", g)):
            want = {"mean": t.mean().item(), "var": t.var(unbiased=False).item(), "sq_mean": (t * t).mean().item()}
            for name, v in want.items():
                if prefix + name in got:
                    assert got[prefix + name] == pytest.approx(v, rel=1e-9, abs=1e-15), prefix + name
            assert prefix + "var" in got
        conv = _rows(frame, step, "0")
        assert conv["out.ch_var"] == pytest.approx(_per_channel(h)["ch_var"], rel=1e-9)
