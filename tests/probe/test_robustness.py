"""What a step records does not depend on the schedule, on hooks others add, on activation
checkpointing, on the model's dtype or on a forward that raised; containers and None outputs. Each
against a float64 reference computed outside the probe."""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.layers import raw_weight
from varprobe.probe import Probe

from .nets import WEIGHTED, make_net

F64 = torch.float64


def _rows(probe: Probe, quantity: str, mode: str = "train") -> dict[tuple[int, str], float]:
    f = probe.frame()
    f = f[(f.quantity == quantity) & (f["mode"] == mode)]
    return {(int(r.step), r.layer): r.value for r in f.itertuples()}


# -- half precision without autocast ---------------------------------------------------------------
def test_bfloat16_sign_persistence_matches_float64_reference():
    """A bfloat16 model: gw.sign_persistence of every layer equals the float64 fraction of filters
    whose mean gradient kept its sign, from the bfloat16 .grad; the PWS conv, whose filter means are
    zero up to rounding, stays NaN."""
    net = make_net(0, torch.bfloat16)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(3)
    gis: list[dict[str, torch.Tensor]] = []
    probe = Probe(net, quantities=["gw.sign_persistence"])
    with probe:
        for _ in range(3):
            x = torch.randn(6, 3, 11, 9, generator=g).to(torch.bfloat16)
            y = torch.randint(0, 4, (6,), generator=g)
            F.cross_entropy(net(x).float(), y).backward()
            gis.append({n: raw_weight(net.get_submodule(n)).grad.to(F64).flatten(1).mean(1) for n in WEIGHTED})
            probe.step()
            opt.step()
            opt.zero_grad()
    got = _rows(probe, "gw.sign_persistence")
    assert set(got) == {(t, n) for t in (1, 2) for n in WEIGHTED}
    for t in (1, 2):
        for n in WEIGHTED:
            if n == "block.branch.2":  # PWS
                assert math.isnan(got[(t, n)])
                continue
            want = (torch.sign(gis[t][n]) == torch.sign(gis[t - 1][n])).to(F64).mean().item()
            assert got[(t, n)] == want, (t, n)


# -- hooks added by others -------------------------------------------------------------------------
def _times10(module, args, out):
    return out * 10


@pytest.mark.parametrize("when", ["before_attach", "step1", "step2_mid", "prepend_step3"])
@pytest.mark.parametrize("every", [1, 2])
def test_user_hook_does_not_change_what_a_step_records(every, when):
    """A user forward hook that scales layer 0's output by 10, added before the probe, between
    steps, between a step's forward and its next micro-batch, or with prepend=True: on every
    recorded step, with every=1 or every=2, out.var of layer 0 is the float64 variance of the
    module's own output (before others' hooks), and in.var of layer 2 that of what it received."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(F64)
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(2, 4, 5, generator=g, dtype=F64) for _ in range(5)]  # two micro-batches a step
    handle = model[0].register_forward_hook(_times10) if when == "before_attach" else None
    probe = Probe(model, every=every, quantities=["out.var", "in.var"])
    with probe:
        for t, x in enumerate(xs):
            if t == 1 and when == "step1":
                handle = model[0].register_forward_hook(_times10)
            if t == 3 and when == "prepend_step3":
                handle = model[0].register_forward_hook(_times10, prepend=True)
            for k in range(2):
                model(x[k]).square().mean().backward()
                if t == 2 and k == 0 and when == "step2_mid":
                    handle = model[0].register_forward_hook(_times10)
            probe.step()
    handle.remove()
    out0, in2 = _rows(probe, "out.var"), _rows(probe, "in.var")
    assert {t for t, n in out0 if n == "0"} == set(range(0, 5, every))
    w, b = model[0].weight.detach(), model[0].bias.detach()
    for t in range(0, 5, every):
        own = torch.cat([xs[t][k] @ w.T + b for k in range(2)])
        assert out0[(t, "0")] == pytest.approx(own.var(unbiased=False).item(), rel=1e-12), t
        scaled = [k for k in range(2) if when == "before_attach" or (when == "step1" and t >= 1)
                  or (when == "step2_mid" and (t > 2 or (t == 2 and k == 1))) or (when == "prepend_step3" and t >= 3)]
        seen = torch.cat([torch.tanh((10 if k in scaled else 1) * (xs[t][k] @ w.T + b)) for k in range(2)])
        assert in2[(t, "2")] == pytest.approx(seen.var(unbiased=False).item(), rel=1e-12), t


# -- outputs that are containers -------------------------------------------------------------------
@dataclasses.dataclass
class _Out:
    loss: torch.Tensor | None
    hidden: torch.Tensor


class _ModelOutput(OrderedDict):  # what a Hugging Face ModelOutput is: an OrderedDict without its None fields
    pass


class _Returns(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.lin = kind, nn.Linear(4, 3)

    def forward(self, x):
        y = self.lin(x)
        return {"dict": lambda: {"mask": x > 0, "logits": y}, "tuple": lambda: (None, y, y * 2),
                "list": lambda: [[y], x], "dataclass": lambda: _Out(None, y),
                "model_output": lambda: _ModelOutput(logits=y), "none": lambda: None}[self.kind]()


@pytest.mark.parametrize("kind", ["dict", "tuple", "list", "dataclass", "model_output"])
def test_container_outputs_record_their_first_tensor(kind):
    """A module returning a dict, tuple, nested list, dataclass or ModelOutput records out.* and
    grad_out.* of the first floating-point tensor in it (depth first, in order), against float64."""
    torch.manual_seed(0)
    model = nn.Sequential(_Returns(kind)).to(F64)
    x = torch.randn(6, 4, dtype=F64)
    probe = Probe(model, layers="0", quantities=["out.var", "grad_out.var"])
    with probe, warnings.catch_warnings():
        warnings.simplefilter("error")
        y = model(x)
        out = {"dict": lambda: y["logits"], "tuple": lambda: y[1] + y[2], "list": lambda: y[0][0],
               "dataclass": lambda: y.hidden, "model_output": lambda: y["logits"]}[kind]()
        out.square().sum().backward()
        probe.step()
    got = {r.quantity: r.value for r in probe.frame().itertuples()}
    ref = model[0].lin(x).detach()  # the linear map's output, the first tensor of every container
    grad = 18 * ref if kind == "tuple" else 2 * ref  # d/dy (y + 2y)^2 = 18y; d/dy y^2 = 2y
    assert got["out.var"] == pytest.approx(ref.var(unbiased=False).item(), rel=1e-12)
    assert got["grad_out.var"] == pytest.approx(grad.var(unbiased=False).item(), rel=1e-12)


def test_output_without_a_tensor_is_named_in_one_warning():
    model = nn.Sequential(_Returns("none"))
    probe = Probe(model, layers="0", quantities=["in.var", "out.var"])
    with probe, torch.no_grad():
        with pytest.warns(RuntimeWarning, match=r"layer '0' \(_Returns\) returned NoneType.*out\.\* rows are not") as seen:
            model(torch.randn(3, 4))
            model(torch.randn(3, 4))
        assert len([w for w in seen if "returned" in str(w.message)]) == 1
        f = probe.frame()
    assert set(f.quantity) == {"in.var"}


# -- forwards that never reach a backward ----------------------------------------------------------
def _chain():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3)).to(F64)


def _reference(model, xs) -> dict[tuple[str, str], float]:
    """out.var and grad_out.var of layers 0, 2, 4 over the micro-batches ``xs``, each backpropagating
    the sum of its squared outputs: float64, autograd on the layers called one by one, no hook."""
    outs: dict[str, list] = {"0": [], "2": [], "4": []}
    grads: dict[str, list] = {"0": [], "2": [], "4": []}
    for x in xs:
        h, kept = x, []
        for i, m in enumerate(model):
            h = m.forward(h)  # forward(): hooks do not run
            if str(i) in outs:
                kept.append((str(i), h))
        gs = torch.autograd.grad(h.square().sum(), [t for _, t in kept])
        for (n, t), g in zip(kept, gs):
            outs[n].append(t.detach())
            grads[n].append(g)
    ref = {}
    for n in outs:
        ref[(n, "out.var")] = torch.cat(outs[n]).var(unbiased=False).item()
        ref[(n, "grad_out.var")] = torch.cat(grads[n]).var(unbiased=False).item()
    return ref


def _raise_once():
    state = {"armed": True}

    def hook(module, args, out):
        if state["armed"]:
            state["armed"] = False
            raise RuntimeError("user hook failed")
    return hook


@pytest.mark.parametrize("micro", [1, 2])
def test_forward_that_raised_is_not_merged_into_the_next_step(micro):
    """A user hook on layer 2 raises once, in the first forward of step 1 (after layer 0 ran); the
    step then runs ``micro`` clean micro-batches: its rows equal the float64 reference of those
    alone, and steps 0 and 2 are untouched; with micro=2 the raise comes between two micro-batches."""
    model = _chain()
    g = torch.Generator().manual_seed(2)
    xs = [[torch.randn(4, 5, generator=g, dtype=F64) for _ in range(micro)] for _ in range(3)]
    bad = torch.randn(4, 5, generator=g, dtype=F64)
    probe = Probe(model, quantities=["out.var", "grad_out.var"])
    with probe:
        for t in range(3):
            for k, x in enumerate(xs[t]):
                if t == 1 and k == micro - 1:
                    handle = model[2].register_forward_hook(_raise_once())
                    with pytest.warns(RuntimeWarning, match="a forward of the model raised at step 1"):
                        with pytest.raises(RuntimeError, match="user hook failed"):
                            model(bad)
                    handle.remove()
                model(x).square().sum().backward()
            probe.step()
    f = probe.frame()
    for t in range(3):
        got = {(r.layer, r.quantity): r.value for r in f[f.step == t].itertuples()}
        ref = _reference(model, xs[t])
        assert set(got) == set(ref)
        for key, want in ref.items():
            assert got[key] == pytest.approx(want, rel=1e-12), (t, key)


def test_discard_step_drops_forwards_and_their_late_backward():
    """discard_step() after a forward: neither that forward nor a backward run from it later counts;
    the step then records the next forward and backward alone (float64 reference)."""
    model = _chain()
    g = torch.Generator().manual_seed(4)
    skipped, x = torch.randn(4, 5, generator=g, dtype=F64), torch.randn(4, 5, generator=g, dtype=F64)
    probe = Probe(model, quantities=["out.var", "grad_out.var"])
    with probe:
        loss = model(skipped).square().sum()
        probe.discard_step()
        assert probe.current_step == 0
        loss.backward()  # from the discarded forward: not recorded
        model(x).square().sum().backward()
        probe.step()
    got = {(r.layer, r.quantity): r.value for r in probe.frame().itertuples()}
    ref = _reference(model, [x])
    assert set(got) == set(ref)
    for key, want in ref.items():
        assert got[key] == pytest.approx(want, rel=1e-12), key


# -- reentrant activation checkpointing ------------------------------------------------------------
class _Checkpointed(nn.Module):
    def __init__(self, reentrant: bool | None) -> None:
        super().__init__()
        self.reentrant = reentrant
        self.body = _chain()

    def forward(self, x):
        b = self.body
        h = b[1](b[0](x))
        if self.reentrant is not None:
            h = torch.utils.checkpoint.checkpoint(lambda t: b[3](b[2](t)), h, use_reentrant=self.reentrant)
        else:
            h = b[3](b[2](h))
        return b[4](h)


@pytest.mark.parametrize("reentrant", [True, False])
def test_checkpointed_layers_record_as_without_checkpointing(reentrant):
    """Layers inside torch.utils.checkpoint (reentrant or not) are recorded as training with every
    quantity, equal to the same model without checkpointing (rel 1e-12, float64), two micro-batches
    a step and an eval forward; nothing is labelled eval but the eval forward."""
    frames = []
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(4, 5, generator=g, dtype=F64) for _ in range(4)]
    for kind in (reentrant, None):
        model = _Checkpointed(kind)
        probe = Probe(model)
        with probe, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Probe: layer .* fired again during backward")
            warnings.filterwarnings("ignore", "None of the inputs have requires_grad")  # the no_grad forward
            for t in range(2):
                for x in xs[2 * t:2 * t + 2]:
                    model(x).square().sum().backward()
                probe.step()
            with torch.no_grad():
                model(xs[0])
        frames.append(probe.frame().set_index(["step", "mode", "layer", "quantity"]).value)
    ckpt, plain = frames
    assert set(ckpt.index) == set(plain.index)
    assert set(plain.index.get_level_values("quantity")) >= {"out.var", "grad_out.var", "grad_in.var", "gw.rms"}
    both = ckpt.to_frame("a").join(plain.to_frame("b"))
    close = ((both.a - both.b).abs() <= 1e-12 * both.b.abs()) | (both.a.isna() & both.b.isna())
    assert close.all(), both[~close].head()
