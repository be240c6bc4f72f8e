"""Layouts and coverage: transposed convs and attention projections recorded with their filter axes,
every trainable parameter accounted for, a user's own layer registered through the public API, and
the role of each layer, against float64 references computed here from the definitions."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import varprobe
from varprobe.layouts import _REGISTRY
from varprobe.vocabulary import ROLES

F64 = torch.float64


def value(frame, layer, quantity):
    v = frame.loc[(frame["layer"] == layer) & (frame["quantity"] == quantity), "value"]
    assert len(v) == 1, (layer, quantity, len(v))
    return float(v.iloc[0])


def filter_ref(filters: list[torch.Tensor]) -> dict[str, float]:
    """w.* of a weight given as its list of filters (one tensor per output unit)."""
    f = torch.stack([t.detach().to(F64).reshape(-1) for t in filters])
    n = f.shape[1]
    sums = f.sum(1)
    return {"w.fan_var": float((n * f.var(1, unbiased=False)).mean()),
            "w.filter_mean_abs": float(f.mean(1).abs().mean()),
            "w.filter_sum_var": float(sums.var(unbiased=False)),
            "w.filter_sum_sq": float(sums.square().mean()),
            "w.sq_norm": float(f.square().sum(1).mean())}


def grad_ref(filters: list[torch.Tensor]) -> dict[str, float]:
    """gw.avg_abs, gw.rms, gw.shift_ratio of a gradient given as its list of filters."""
    f = torch.stack([t.detach().to(F64).reshape(-1) for t in filters])
    n = f.shape[1]
    avg_abs = float(f.mean(1).abs().mean())
    rms = float(f.square().mean().sqrt())
    return {"gw.avg_abs": avg_abs, "gw.rms": rms, "gw.shift_ratio": avg_abs / (rms / n ** 0.5)}


def transposed_filters(conv: nn.ConvTranspose2d, w: torch.Tensor) -> list[torch.Tensor]:
    """Filter of output channel o: the weights [in, out/groups, k, k] that feed it, by loops."""
    cin_g, cout_g = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    out = []
    for o in range(conv.out_channels):
        g, j = divmod(o, cout_g)
        out.append(w[g * cin_g:(g + 1) * cin_g, j])
    return out


def one_step(model, x, target_fn, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with varprobe.Probe(model, modes=("train",), **kw) as probe:
            loss = target_fn(model(x))
            loss.backward()
            probe.step(loss=loss)
            frame = probe.frame()
    return probe, frame


class UNet(nn.Module):
    """Two levels down, two transposed convs up (one grouped), skip connections by concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.down1 = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(8, 6, 2, stride=2, groups=2)
        self.fuse = nn.Conv2d(10, 4, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(4, 3, 3, padding=1)
        self.head = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        a = self.down1(x)
        b = self.mid(self.down2(a))
        u = self.fuse(torch.cat([self.up2(b), a], 1))
        return self.head(torch.relu(self.up1(u)))


def test_transposed_convs_get_w_and_gw_per_output_channel_against_float64_loops():
    """Fails on 3939bf3: ConvTranspose2d is not probed by default (no rows at all), and selected
    by type it is "other", with no w.* or gw.*."""
    torch.manual_seed(0)
    model = UNet().to(F64)
    x = torch.randn(3, 2, 8, 8, dtype=F64)
    probe, frame = one_step(model, x, lambda y: (y - 0.3).square().mean())
    for name in ("up2", "up1"):
        conv = model.get_submodule(name)
        rows = frame[frame["layer"] == name]
        assert set(rows["role"]) == {"conv_transpose"}
        for q, want in filter_ref(transposed_filters(conv, conv.weight)).items():
            assert value(frame, name, q) == pytest.approx(want, rel=1e-10, abs=1e-300), (name, q)
        for q, want in grad_ref(transposed_filters(conv, conv.weight.grad)).items():
            assert value(frame, name, q) == pytest.approx(want, rel=1e-10), (name, q)
    assert value(frame, "fuse", "gw.shift_ratio") == pytest.approx(
        grad_ref(list(model.fuse.weight.grad))["gw.shift_ratio"], rel=1e-10)
    assert probe.coverage.complete, str(probe.coverage)
    assert set(frame.loc[frame["layer"] == "mid.1", "role"]) == {"norm"}


class Attn(nn.Module):
    def __init__(self, kdim=None) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, kdim=kdim, vdim=kdim)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        kv = x if self.attn._qkv_same_embed_dim else x[..., :self.attn.kdim]
        y, _ = self.attn(x, kv, kv)
        return self.head(y).mean(1)


@pytest.mark.parametrize("kdim", [None, 5])
def test_attention_projections_get_w_and_gw_against_slices_of_in_proj_weight(kdim):
    """Fails on 3939bf3: nothing of in_proj_weight is recorded, and out_proj only warns that it
    never fired (nn.MultiheadAttention never calls it)."""
    torch.manual_seed(0)
    model = Attn(kdim).to(F64)
    x = torch.randn(4, 6, 8, dtype=F64)
    seen = {}

    def hook(m, args, out):
        seen["out"] = out[0].detach().clone()
        out[0].register_hook(lambda g: seen.__setitem__("grad", g.detach().clone()))
    handle = model.attn.register_forward_hook(hook)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "never fired", no coverage warning
        with varprobe.Probe(model, modes=("train",)) as probe:
            loss = model(x).square().mean()
            loss.backward()
            probe.step(loss=loss)
            frame = probe.frame()
    handle.remove()
    a = model.attn
    e = a.embed_dim
    if kdim is None:
        w, g = a.in_proj_weight, a.in_proj_weight.grad
        parts = {"q": (w[:e], g[:e]), "k": (w[e:2 * e], g[e:2 * e]), "v": (w[2 * e:], g[2 * e:])}
    else:
        parts = {n: (getattr(a, f"{n}_proj_weight"), getattr(a, f"{n}_proj_weight").grad) for n in "qkv"}
    parts["out_proj"] = (a.out_proj.weight, a.out_proj.weight.grad)
    for n, (w, g) in parts.items():
        layer = f"attn.{n}"
        for q, want in filter_ref(list(w)).items():
            assert value(frame, layer, q) == pytest.approx(want, rel=1e-10), (layer, q)
        for q, want in grad_ref(list(g)).items():
            assert value(frame, layer, q) == pytest.approx(want, rel=1e-10), (layer, q)
        rows = frame[frame["layer"] == layer]
        assert set(rows["role"]) == {"attention"} and set(rows["module_type"]) == {"MultiheadAttention"}
        assert set(rows["depth"]) == set(frame.loc[frame["layer"] == "attn", "depth"])
        assert not rows["quantity"].str.startswith(("out.", "in.", "grad_out.")).any()
    out, grad = seen["out"], seen["grad"]
    assert value(frame, "attn", "out.var") == pytest.approx(float(out.var(unbiased=False)), rel=1e-10)
    assert value(frame, "attn", "grad_out.var") == pytest.approx(float(grad.var(unbiased=False)), rel=1e-10)
    ch = out.reshape(-1, e)  # channel axis: the last (embedding) axis
    assert value(frame, "attn", "out.ch_var") == pytest.approx(float(ch.var(0, unbiased=False).mean()), rel=1e-10)
    assert "out_proj" not in " ".join(probe.layers).replace("attn.out_proj", "")
    assert probe.coverage.complete, str(probe.coverage)


def test_attention_update_ratio_of_each_projection_is_that_of_its_rows():
    torch.manual_seed(0)
    model = Attn().to(F64)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(4, 6, 8, dtype=F64)
    before = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with varprobe.Probe(model, modes=("train",), quantities=["w.update_ratio"]) as probe:
            for _ in range(2):
                before = model.attn.in_proj_weight.detach().clone()
                loss = model(x).square().mean()
                loss.backward()
                probe.step(loss=loss)
                opt.step()
                opt.zero_grad()
            model(x).square().mean().backward()
            probe.step()
            frame = probe.frame()
    now = model.attn.in_proj_weight.detach()
    e = 8
    for i, n in enumerate("qkv"):
        rows = slice(i * e, (i + 1) * e)
        want = float((now[rows] - before[rows]).norm() / before[rows].norm())
        got = frame[(frame["layer"] == f"attn.{n}") & (frame["quantity"] == "w.update_ratio") & (frame["step"] == 2)]
        assert float(got["value"].iloc[0]) == pytest.approx(want, rel=1e-10)


def test_transformer_encoder_coverage_is_complete_and_attention_is_recorded():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True, dropout=0.0)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).to(F64)
    x = torch.randn(3, 5, 8, dtype=F64)
    probe, frame = one_step(model, x, lambda y: y.square().mean())
    assert probe.coverage.complete, str(probe.coverage)
    assert len(probe.coverage.sizes) == len([p for p in model.parameters() if p.requires_grad])
    for i in range(2):
        for n in ("q", "k", "v", "out_proj"):
            assert value(frame, f"layers.{i}.self_attn.{n}", "gw.shift_ratio") > 0
        assert value(frame, f"layers.{i}.self_attn", "out.var") > 0
    roles = frame.drop_duplicates("layer").set_index("layer")["role"]
    assert roles["layers.0.linear1"] == "linear" and roles["layers.0.norm1"] == "norm"
    assert roles[""] == ""



def test_attention_is_hooked_once_on_every_recorded_step():
    """Found blocks re-hook the model after the first step; the attention's Q, K, V and out_proj
    parts must not get hooks of their own then (each would count the module's call again)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True, dropout=0.0)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).to(F64)
    attn = model.layers[1].self_attn
    outs: list[torch.Tensor] = []
    attn.register_forward_hook(lambda m, a, o: outs.append(o[0].detach().clone()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with varprobe.Probe(model, modes=("train",), quantities=["out.var", "block.out.var", "gw.shift_ratio"]) as probe:
            for _ in range(3):
                model(torch.randn(3, 5, 8, dtype=F64)).square().mean().backward()
                probe.step()
    fired = [str(w.message) for w in caught if "times in step" in str(w.message)]
    assert not fired, fired
    assert sum(p.module is attn for p in probe._hooks.active) == 1
    frame = probe.frame()
    got = frame[(frame.layer == "layers.1.self_attn") & (frame.quantity == "out.var")].sort_values("step")
    assert got["value"].tolist() == pytest.approx([float(o.var(unbiased=False)) for o in outs], rel=1e-12)

class Audio(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(1, 4, 9, stride=4), nn.BatchNorm1d(4), nn.ReLU(),
                                 nn.Conv1d(4, 8, 5, stride=2, groups=2), nn.InstanceNorm1d(8, affine=True),
                                 nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)


class Voxels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                                 nn.ConvTranspose3d(4, 2, 2, stride=2), nn.Flatten(1), nn.LazyLinear(3))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("build, shape", [(Audio, (2, 1, 200)), (Voxels, (2, 1, 4, 4, 4))])
def test_conv1d_and_conv3d_nets_are_covered_with_w_per_filter(build, shape):
    torch.manual_seed(0)
    model = build().to(F64)
    x = torch.randn(*shape, dtype=F64)
    model(x)  # materialize the lazy layer
    probe, frame = one_step(model, x, lambda y: y.square().mean())
    assert probe.coverage.complete, str(probe.coverage)
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv3d)):
            assert value(frame, name, "w.fan_var") == pytest.approx(filter_ref(list(m.weight))["w.fan_var"], rel=1e-10)
            assert value(frame, name, "gw.shift_ratio") == pytest.approx(
                grad_ref(list(m.weight.grad))["gw.shift_ratio"], rel=1e-10)
        if isinstance(m, nn.ConvTranspose3d):
            assert value(frame, name, "w.sq_norm") == pytest.approx(
                filter_ref(list(m.weight.transpose(0, 1)))["w.sq_norm"], rel=1e-10)
        if isinstance(m, nn.InstanceNorm1d):
            assert set(frame.loc[frame["layer"] == name, "role"]) == {"norm"}


class Dense(nn.Module):
    """A user's own layer: weight [in, out], so the output units are on axis 1."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_in, n_out) / n_in ** 0.5)
        self.b = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return x @ self.w + self.b


class WithDense(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.dense = Dense(6, 5)
        self.scale = nn.Parameter(torch.ones(5))  # used by this container's own forward

    def forward(self, x):
        return self.dense(torch.relu(self.inp(x))) * self.scale


@pytest.fixture
def clean_registry():
    saved = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(saved)


def test_unknown_layer_is_reported_then_registered_and_covered(clean_registry):
    torch.manual_seed(0)
    model = WithDense().to(F64)
    x = torch.randn(7, 4, dtype=F64)
    with pytest.warns(RuntimeWarning, match=r"(?s)3 trainable parameter\(s\) of WithDense.*dense\.w: Dense has no "
                                            r"layout.*whole-tensor.*dense\.b: .*no statistics of this parameter.*"
                                            r"scale: held directly by the model \(WithDense\)"):
        probe = varprobe.Probe(model, modes=("train",)).attach()
    cov = probe.coverage
    assert set(cov.whole) == {"dense.w", "dense.b"} and set(cov.missing) == {"scale"}
    assert set(cov.recorded) == {"inp.weight", "inp.bias"}
    loss = model(x).square().mean()
    loss.backward()
    probe.step(loss=loss)
    probe.remove()
    frame = probe.frame()
    assert set(frame.loc[frame["layer"] == "dense", "role"]) == {"other"}
    # whole-tensor statistics: the weight as one filter
    assert value(frame, "dense", "w.fan_var") == pytest.approx(filter_ref([model.dense.w])["w.fan_var"], rel=1e-10)
    assert value(frame, "dense", "gw.shift_ratio") == pytest.approx(
        grad_ref([model.dense.w.grad])["gw.shift_ratio"], rel=1e-10)
    model.zero_grad()

    varprobe.register_layout(Dense, "linear", weight="w", filter_axis=1, channel_axis=-1)
    with pytest.warns(RuntimeWarning, match=r"(?s)1 trainable parameter\(s\).*scale") as caught:
        probe = varprobe.Probe(model, modes=("train",)).attach()
    assert "dense" not in str(caught[0].message).replace("held directly", "")
    assert set(probe.coverage.recorded) == {"inp.weight", "inp.bias", "dense.w", "dense.b"}
    loss = model(x).square().mean()
    loss.backward()
    probe.step(loss=loss)
    probe.remove()
    frame = probe.frame()
    assert set(frame.loc[frame["layer"] == "dense", "role"]) == {"linear"}
    for q, want in filter_ref(list(model.dense.w.t())).items():
        assert value(frame, "dense", q) == pytest.approx(want, rel=1e-10), q
    for q, want in grad_ref(list(model.dense.w.grad.t())).items():
        assert value(frame, "dense", q) == pytest.approx(want, rel=1e-10), q
    assert "scale (5): held directly by the model (WithDense), which has child modules" in str(probe.coverage)


def test_layers_left_out_by_selection_are_listed_but_not_warned():
    model = WithDense()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = varprobe.Probe(model, layers="inp")
    assert "inp.weight" in probe.coverage.recorded
    assert "'dense' (Dense) is not selected by layers='inp'" in probe.coverage.missing["dense.w"]
    assert {"dense.w", "scale"} <= probe.coverage.deselected and probe.coverage.warning() is None


@pytest.mark.parametrize("args, error, match", [
    ((Dense, "dense"), ValueError, r"layout role must be one of \('conv', .*'other'\), got 'dense'"),
    ((torch.Tensor, "linear"), TypeError, r"register_layout takes an nn.Module subclass, got"),
])
def test_register_layout_refuses_a_bad_role_or_type_in_one_line(args, error, match, clean_registry):
    with pytest.raises(error, match=match):
        varprobe.register_layout(*args)


def test_roles_vocabulary_and_every_frame_has_the_role_column():
    assert ROLES == ("conv", "conv_transpose", "linear", "attention", "embedding", "norm", "block", "other")
    from varprobe.probe.table import empty_frame
    assert "role" in empty_frame().columns
