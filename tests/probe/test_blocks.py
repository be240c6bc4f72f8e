"""Residual blocks found (varprobe.probe.blocks): repeated modules of a ModuleList / Sequential
record block.out.* when a forward shows their output adds their input, and only then."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from varprobe.probe import Probe, spp

transformers = pytest.importorskip("transformers")
F64 = torch.float64


def _bert():
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=64)
    model = transformers.BertModel(cfg)
    return model, model.encoder.layer, torch.randint(0, 100, (2, 8))


def _vit():
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=16, patch_size=8, num_channels=3)
    model = transformers.ViTModel(cfg, add_pooling_layer=False)
    return model, next(m for m in model.modules() if isinstance(m, nn.ModuleList)), torch.randn(2, 3, 16, 16)


def _encoder():
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
    model = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
    return model, model.layers, torch.randn(2, 5, 16)  # the first layer's input needs no gradient


def _first(out):
    return out if isinstance(out, torch.Tensor) else out[0]


def _record(model, x, **kw):
    """One training step (dropout on): the probe's frame and every block output (float64 copies
    taken by a forward hook of the test's own)."""
    outs: dict[str, torch.Tensor] = {}
    names = {m: n for n, m in model.named_modules()}
    handles = [m.register_forward_hook(lambda mod, a, o: outs.__setitem__(names[mod], _first(o).detach().to(F64)))
               for m in model.modules() if type(m).__name__ in ("BertLayer", "ViTLayer", "TransformerEncoderLayer")]
    probe = Probe(model, quantities=["out.var", "block.out.var", "block.out.ch_var"], **kw)
    with probe, warnings.catch_warnings():
        warnings.simplefilter("error")
        _first(model(x)).square().mean().backward()
        probe.step()
    for h in handles:
        h.remove()
    return probe, probe.frame(), outs


@pytest.mark.parametrize("build", [_bert, _encoder, _vit], ids=["bert", "transformer_encoder", "vit"])
def test_transformer_blocks_record_their_residual_stream(build):
    torch.manual_seed(0)
    model, stack, x = build()
    model.train()
    probe, frame, outs = _record(model, x)
    prefix = next(n for n, m in model.named_modules() if m is stack)
    names = [f"{prefix}.{i}" for i in range(len(stack))]
    rows = frame[frame.quantity == "block.out.var"].set_index("layer")
    assert list(rows.index) == names and all(n in probe.layers for n in names)
    for n in names:
        want = outs[n].var(unbiased=False).item()
        assert rows.loc[n, "value"] == pytest.approx(want, rel=1e-9)
        ch = frame[(frame.layer == n) & (frame.quantity == "block.out.ch_var")].value.item()
        assert ch == pytest.approx(outs[n].reshape(-1, outs[n].shape[-1]).var(0, unbiased=False).mean().item(), rel=1e-9)
    depth = rows["depth"].tolist()
    assert depth == sorted(depth) and len(set(depth)) == len(depth) and min(depth) > 0


class MLP(nn.Module):
    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.fc, self.norm = nn.Linear(w, w), nn.LayerNorm(w)

    def forward(self, x):
        return self.norm(torch.relu(self.fc(x)))


class TwoPaths(nn.Module):
    """An add, but of two weighted paths: f(x) + g(x), no skip."""

    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.f, self.g = nn.Sequential(nn.Linear(w, w), nn.Tanh()), nn.Linear(w, w)

    def forward(self, x):
        return self.f(x) + self.g(x)


@pytest.mark.parametrize("block", [MLP, TwoPaths, lambda: nn.Sequential(nn.Linear(8, 8), nn.ReLU())],
                         ids=["mlp", "two_paths", "sequential"])
def test_repeated_modules_without_a_residual_add_are_not_blocks(block):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ModuleList(block() for _ in range(3)))
    model.forward = lambda x: _chain(model, x)
    probe = Probe(model, quantities=["out.var", "block.out.var"])
    with probe:
        model(torch.randn(4, 8)).sum().backward()
        probe.step()
    frame = probe.frame()
    assert not frame.quantity.str.startswith("block.").any()
    assert not any(n in probe.layers for n in ("1.0", "1.1", "1.2"))
    assert not any(p.role == "block" for p in probe._hooks.active)  # unhooked once shown not residual
    assert "out.var" in set(frame.quantity)


def _chain(model, x):
    h = model[0](x)
    for b in model[1]:
        h = b(h)
    return h


class Res(nn.Module):
    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.fc, self.norm = nn.Linear(w, w), nn.LayerNorm(w)

    def forward(self, x):
        return x + self.fc(self.norm(x))


def test_innermost_repeated_blocks_are_kept_and_stages_are_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(Res(), Res()), nn.Sequential(Res(), Res()))  # two stages of two blocks
    probe = Probe(model, quantities=["block.out.var"])
    x = torch.randn(4, 8, requires_grad=True)
    with probe:
        model(x).sum().backward()
        probe.step()
    rows = probe.frame().set_index("layer").value
    assert list(rows.index) == ["0.0", "0.1", "1.0", "1.1"]
    h = x.detach().to(F64)
    ref = model.to(F64)
    for i, name in enumerate(rows.index):
        h = ref[i // 2][i % 2](h)
        assert rows[name] == pytest.approx(h.var(unbiased=False).item(), rel=1e-6)


def test_blocks_false_opts_out_and_spp_shows_the_stream():
    torch.manual_seed(0)
    model, _, x = _encoder()
    probe = Probe(model, blocks=False)
    assert not any(n in probe.layers for n in ("layers.0", "layers.1", "layers.2"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = spp(model, x)
        off = spp(model, x, blocks=False)
    blocks = table[table.quantity == "block.out.ch_var"]
    assert list(blocks.layer) == ["layers.0", "layers.1", "layers.2"]
    assert not off.quantity.str.startswith("block.").any()
    assert model.training is True and all(p.grad is None for p in model.parameters())
    assert not x.requires_grad  # spp reads the graph of a detached alias of the caller's batch


@pytest.mark.parametrize("bad", [True, [nn.Linear], {nn.Linear: 3}, {"Linear": None}])
def test_bad_blocks_argument_is_refused_in_one_line(bad):
    with pytest.raises(TypeError, match=r"blocks must be None, False or a mapping .* got ") as err:
        Probe(nn.Sequential(nn.Linear(2, 2)), blocks=bad)
    assert "\n" not in str(err.value)


class Basic(nn.Module):
    """A ResNet basic block; the first of a stage projects its skip (1x1 conv + BatchNorm)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
                     if cin != cout else None)

    def forward(self, x):
        skip = x if self.proj is None else self.proj(x)
        return torch.relu(self.bn(self.conv(x)) + skip)


def test_a_projection_shortcut_block_is_found_beside_its_identity_siblings():
    """Was: the first block of each stage (skip through a 1x1 conv) was dropped, so the stream over
    blocks skipped it without a word; blocks of two weighted paths with no identity sibling stay out."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ModuleList([Basic(4, 4), Basic(4, 4)]),
                          nn.ModuleList([Basic(4, 8), Basic(8, 8), Basic(8, 8)]))

    def forward(x):
        h = model[0](x)
        for stage in (model[1], model[2]):
            for b in stage:
                h = b(h)
        return h

    model.forward = forward
    probe = Probe(model, quantities=["block.out.var"])
    with probe, warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.randn(2, 3, 6, 6)).sum().backward()
        probe.step()
    assert list(probe.frame().layer) == ["1.0", "1.1", "2.0", "2.1", "2.2"]
