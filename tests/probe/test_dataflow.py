"""Depth from the dataflow (varprobe.probe.dataflow): whenever layer B consumes layer A's output,
depth(B) >= depth(A), and > when B is a weight layer; parallel branches share a depth; layers
before the first weight layer are at 0, never -1."""
from __future__ import annotations

import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.plot._derive import layer_order
from varprobe.probe import Probe

transformers = pytest.importorskip("transformers")


def _depths(model: nn.Module, *inputs, layers=None, loss=None, **kw) -> tuple[dict[str, int], list[str], object]:
    probe = Probe(model, layers, quantities=["out.var", "block.out.var"], **kw)
    with probe:
        out = model(*inputs)
        out = out if isinstance(out, torch.Tensor) else out[0]
        (out.float().square().mean() if loss is None else loss(out)).backward()
        probe.step()
    frame = probe.frame()
    rows = frame[frame.layer != ""]
    return rows.groupby("layer")["depth"].first().to_dict(), list(dict.fromkeys(rows.layer)), frame


def _bert() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=64)
    return transformers.BertModel(cfg).train()


def test_bert_depths_follow_the_dataflow():
    """Q, K and V read the same input: one depth (call order gave 0, 1, 2). embeddings.LayerNorm
    comes before every probed layer: depth 0 (call order gave -1, the depth of the loss row)."""
    depth, _, _ = _depths(_bert(), torch.randint(0, 100, (2, 8)))
    for i, base in ((0, 1), (1, 5)):
        pre = f"encoder.layer.{i}."
        assert {depth[pre + f"attention.self.{q}"] for q in ("query", "key", "value")} == {base}
        assert depth[pre + "attention.output.dense"] == base + 1  # reads softmax(QK^T)V
        assert depth[pre + "attention.output.LayerNorm"] == base + 1  # a norm shares its linear's depth
        assert depth[pre + "intermediate.dense"] == base + 2
        assert depth[pre + "output.dense"] == depth[pre + "output.LayerNorm"] == base + 3
        assert depth[f"encoder.layer.{i}"] == base + 3  # the block: its deepest layer
    assert depth["embeddings.LayerNorm"] == 0
    assert depth["pooler.dense"] == 9
    assert min(depth.values()) == 0


class UNet(nn.Module):
    """enc1 -> pool -> enc2 -> pool -> mid -> up2 (transposed) -> cat(enc2) -> dec2 -> up1 -> cat(enc1) -> dec1 -> out."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        # defined out of call order on purpose: rows and plots must follow the dataflow and calls
        self.out = nn.Conv2d(c, 2, 1)
        self.dec1 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.dec2 = nn.Conv2d(4 * c, 2 * c, 3, padding=1)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.mid = nn.Sequential(nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.ReLU(), nn.Conv2d(4 * c, 4 * c, 3, padding=1))
        self.enc2 = nn.Conv2d(c, 2 * c, 3, padding=1)
        self.enc1 = nn.Conv2d(3, c, 3, padding=1)

    def forward(self, x):
        e1 = torch.relu(self.enc1(x))
        e2 = torch.relu(self.enc2(F.max_pool2d(e1, 2)))
        m = torch.relu(self.mid(F.max_pool2d(e2, 2)))
        d2 = torch.relu(self.dec2(torch.cat([self.up2(m), e2], 1)))
        d1 = torch.relu(self.dec1(torch.cat([self.up1(d2), e1], 1)))
        return self.out(d1)


def test_unet_up_path_comes_after_mid():
    torch.manual_seed(0)
    depth, rows, frame = _depths(UNet(), torch.randn(2, 3, 8, 8), layers=[nn.Conv2d, nn.ConvTranspose2d])
    assert [depth[k] for k in ("enc1", "enc2", "mid.0", "mid.2")] == [0, 1, 2, 3]
    assert depth["up2"] >= depth["mid.2"] and depth["dec2"] > depth["up2"] and depth["dec2"] > depth["enc2"]
    assert depth["up1"] >= depth["dec2"] and depth["dec1"] > depth["up1"] and depth["out"] > depth["dec1"]
    order = layer_order(frame[frame.layer != ""])
    assert order == ["enc1", "enc2", "mid.0", "mid.2", "up2", "dec2", "up1", "dec1", "out"]
    assert rows.index("up2") > rows.index("mid.2")  # rows come in call order


class Inception(nn.Module):
    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.b1 = nn.Conv2d(c, c, 1)
        self.b2 = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(c, c, 1))
        self.bn = nn.BatchNorm2d(3 * c)
        self.head = nn.Linear(3 * c, 2)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = self.bn(torch.cat([self.b1(h), self.b2(h), self.b3(h)], 1))
        return self.head(h.mean((2, 3)))


def test_inception_branches_share_a_depth():
    torch.manual_seed(0)
    depth, _, _ = _depths(Inception(), torch.randn(2, 3, 6, 6))
    assert depth["stem"] == 0
    assert depth["b1"] == depth["b2.0"] == depth["b3.1"] == 1  # three branches on one input
    assert depth["b2.2"] == 2
    assert depth["bn"] == 2  # the deepest branch it concatenates
    assert depth["head"] == 3


def test_transformer_encoder_depth_grows_along_the_stream():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # out_proj is applied inside F.multi_head_attention_forward
        depth, _, _ = _depths(model, torch.randn(2, 5, 16))
    for i in range(2):
        p = f"layers.{i}."
        assert depth[p + "linear1"] > depth[p + "norm1"] and depth[p + "linear2"] > depth[p + "linear1"]
        assert depth[p + "norm2"] == depth[p + "linear2"] == depth[f"layers.{i}"]
    assert depth["layers.1.norm1"] >= depth["layers.0.norm2"] and depth["layers.1.linear1"] > depth["layers.0.linear2"]
    assert min(depth.values()) == 0


class RandomDag(nn.Module):
    """Node i reads the sum of the outputs of ``preds[i]`` (the input when empty) through unprobed
    operations; ``kinds[i]`` is "linear" or "norm"; the output sums the nodes nobody reads."""

    def __init__(self, preds: list[list[int]], kinds: list[str], w: int = 6) -> None:
        super().__init__()
        self.preds, self.kinds = preds, kinds
        self.nodes = nn.ModuleList(nn.Linear(w, w) if k == "linear" else nn.LayerNorm(w) for k in kinds)

    def forward(self, x):
        outs: list[torch.Tensor] = []
        for node, pr in zip(self.nodes, self.preds):
            h = x if not pr else sum(torch.tanh(outs[j]) * 0.5 for j in pr)
            outs.append(node(h))
        read = {j for pr in self.preds for j in pr}
        return sum(o for i, o in enumerate(outs) if i not in read)


def _reference(preds: list[list[int]], kinds: list[str]) -> list[int]:
    """The depth rule on the known structure (not on any graph)."""
    ref: list[int] = []
    for pr, k in zip(preds, kinds):
        ref.append(0 if not pr else max(ref[j] for j in pr) + (k == "linear"))
    return ref


@pytest.mark.parametrize("seed", range(12))
def test_random_dags_depth_property(seed):
    rng = random.Random(seed)
    n = rng.randint(3, 9)
    preds = [sorted(rng.sample(range(i), rng.randint(0, min(i, 3)))) for i in range(n)]
    kinds = [rng.choice(["linear", "linear", "norm"]) for _ in range(n)]
    torch.manual_seed(seed)
    depth, rows, _ = _depths(RandomDag(preds, kinds), torch.randn(3, 6))
    got = [depth[f"nodes.{i}"] for i in range(n)]
    assert got == _reference(preds, kinds), (preds, kinds)
    for i, pr in enumerate(preds):
        for j in pr:  # B = node i consumes A = node j
            assert got[i] >= got[j] and (kinds[i] == "norm" or got[i] > got[j])
    assert rows == [f"nodes.{i}" for i in range(n)]  # call order


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.lin = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(self.a(self.lin(x)))  # lin at depth 0 and at depth 2


@pytest.mark.filterwarnings("ignore:Probe. layer 'lin' fired 2 times")
def test_module_called_twice_gets_its_deepest_depth_and_a_warning():
    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning, match=r"'lin' at \[0, 2\].*deepest call"):
        depth, _, _ = _depths(Shared(), torch.randn(2, 4))
    assert depth == {"lin": 2, "a": 1}


def test_frozen_prefix_falls_back_to_call_order_with_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 4), nn.Linear(4, 2))
    for p in [*model[0].parameters(), *model[1].parameters()]:
        p.requires_grad_(False)
    with pytest.warns(RuntimeWarning, match=r"2 layer\(s\) have no autograd history.*0, 1.*call order"):
        depth, _, _ = _depths(model, torch.randn(2, 4))
    assert depth == {"0": 0, "1": 0, "2": 1, "3": 2}


def test_eval_only_forwards_give_call_order_depths_with_a_warning():
    torch.manual_seed(0)
    model = Inception().eval()
    probe = Probe(model, quantities=["out.var"], modes=("eval",))
    with probe, torch.no_grad():
        model(torch.randn(2, 3, 6, 6))
        with pytest.warns(RuntimeWarning, match="had an autograd graph.*call order"):
            frame = probe.frame()
    depth = frame.groupby("layer")["depth"].first()
    assert (depth >= 0).all() and depth["stem"] == 0 and depth["head"] == depth.max()


@pytest.mark.filterwarnings("ignore:Probe. 4 probed layer.s. never fired")
def test_depth_is_fixed_at_the_first_recorded_training_step():
    """A later step whose forward takes another path does not move any depth."""
    torch.manual_seed(0)
    model = Inception()
    probe = Probe(model, quantities=["out.var"])
    x = torch.randn(2, 3, 6, 6)
    with probe:
        model(x).sum().backward()
        probe.step()
        flow = probe._hooks.flow
        assert not flow.tracing and flow.version == 1
        h = model.bn(torch.cat([model.b1(x.new_zeros(2, 4, 6, 6))] * 3, 1))  # b1 with no stem before it
        model.head(h.mean((2, 3))).sum().backward()
        probe.step()
    frame = probe.frame()
    assert frame.groupby("layer")["depth"].nunique().max() == 1
    assert flow.version == 1


class Unfired(nn.Module):
    """A tied copy that never runs (T5's ``shared``) and a layer whose weight the parent uses
    directly (Mamba's ``conv1d``): no dataflow reaches either."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.shared = nn.Embedding(10, 4)
        self.shared.weight = self.embed.weight
        self.a = nn.Linear(4, 4)
        self.direct = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, tokens):
        h = self.a(self.embed(tokens))
        return self.head(F.linear(h, self.direct.weight, self.direct.bias))


def test_layers_no_dataflow_reaches_are_placed_not_left_at_minus_one():
    """Was: their w.* rows sat at depth -1, the depth of rows of no layer (loss, lr)."""
    torch.manual_seed(0)
    model = Unfired()
    probe = Probe(model)
    with probe, pytest.warns(RuntimeWarning, match=r"shared \(its weight is tied to 'embed'.*direct.*"
                                                   r"module order \(one deeper for a weight layer\)"):
        for _ in range(2):
            model(torch.randint(0, 10, (3, 5))).square().mean().backward()
            probe.step(loss=1.0)
    frame = probe.frame()
    depth = frame[frame.layer != ""].groupby("layer")["depth"].agg(["min", "max"])
    assert (depth["min"] == depth["max"]).all()  # one depth per layer, every step
    depth = depth["min"].to_dict()
    assert depth == {"embed": 0, "shared": 0, "a": 1, "direct": 2, "head": 2}
    assert set(frame.loc[frame.depth < 0, "layer"]) == {""}
