"""Probe API behaviour: selection, schedules, modes, attach/remove, diagnostics and bad input."""
from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import varprobe.probe.hooks as hooks_module
from varprobe.layers import ResidualBlock, make_conv
from varprobe.probe import PRESETS, QUANTITIES, Probe, Tap, describe, log_schedule
from varprobe.probe.schedule import as_schedule

from .nets import Chain, make_net


def _data(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _train(model, probe, steps=2, n=4):
    for s in range(steps):
        x, y = _data(n, s)
        F.cross_entropy(model(x), y).backward()
        probe.step()
        model.zero_grad()


# -- selection -------------------------------------------------------------------------------------
def test_default_selection_and_depth_counts_conv_and_linear_only():
    model = Chain()
    probe = Probe(model)
    assert probe.layers == ["conv1", "norm", "conv2", "head"]
    with probe:
        _train(model, probe, 1)
    depth = probe.frame().groupby("layer")["depth"].first().to_dict()
    assert depth == {"": -1, "conv1": 0, "norm": 0, "conv2": 1, "head": 2} or \
        depth == {"conv1": 0, "norm": 0, "conv2": 1, "head": 2}


@pytest.mark.parametrize("layers,expected", [
    ("conv*", ["conv1", "conv2"]), (nn.Linear, ["head"]), ("norm", ["norm"]),
    (["head", nn.BatchNorm2d], ["norm", "head"]), (lambda n, m: n.endswith("2"), ["conv2"]),
])
def test_selection_forms(layers, expected):
    model = Chain()
    assert Probe(model, layers=layers).layers == expected


def test_selection_by_module_and_explicit_other_module():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    probe = Probe(model, layers=[model[0], "1"])
    assert probe.layers == ["0", "1"]
    with probe:
        model(torch.randn(2, 3, 5, 5)).sum().backward()
        probe.step()
    f = probe.frame()
    assert set(f[f.layer == "1"].quantity) >= {"in.var", "out.var", "grad_out.var", "grad_in.var"}
    assert f[f.layer == "1"].module_type.iloc[0] == "ReLU"


@pytest.mark.parametrize("layers", ["nothing*", "nothing", ["head", "missing"], nn.LSTM, []])
def test_selection_matching_nothing_lists_what_is_there(layers):
    with pytest.raises(ValueError, match="probe-able modules: conv1 \\(Conv2d\\)"):
        Probe(Chain(), layers=layers)


def test_model_without_probeable_layers():
    with pytest.raises(ValueError, match="no probe-able module.*0 \\(ReLU\\)"):
        Probe(nn.Sequential(nn.ReLU(), nn.Flatten()))


def test_bad_arguments():
    with pytest.raises(ValueError, match="every must be a positive int.*got 0"):
        Probe(Chain(), every=0)
    with pytest.raises(ValueError, match="got -3"):
        Probe(Chain(), every=-3)
    with pytest.raises(ValueError, match="got 2.5"):
        Probe(Chain(), every=2.5)
    with pytest.raises(ValueError, match="modes must be"):
        Probe(Chain(), modes=("training",))
    with pytest.raises(ValueError, match="quantity 'out.variance' matches nothing; presets: all, forward"):
        Probe(Chain(), quantities=["out.variance"])
    with pytest.raises(ValueError, match="flush_every"):
        Probe(Chain(), flush_every=0)
    with pytest.raises(TypeError, match="layers entries"):
        Probe(Chain(), layers=[3])


def test_quantity_registry_and_presets():
    assert "gw.shift_ratio" in QUANTITIES and "sqrt(n)" in describe("gw.shift_ratio")
    outputs = {q for q in QUANTITIES if q.split(".")[0] in ("out", "block", "branch")}
    assert set(PRESETS["forward"]) == outputs | {"loss", "lr"}
    with pytest.raises(ValueError, match="unknown quantity"):
        describe("nope")
    model = Chain()
    probe = Probe(model, quantities=["out.var", "gw.*"])
    with probe:
        _train(model, probe, 2)
    assert set(probe.frame().quantity) == {"out.var", "gw.avg_abs", "gw.rms", "gw.shift_ratio",
                                           "gw.sign_persistence", "gw.bias_corr"}


# -- schedules -------------------------------------------------------------------------------------
def test_log_schedule():
    sched = log_schedule(10)
    assert sched.steps(130) == [0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 79, 100, 126]
    assert [s for s in range(1000, 1300) if sched(s)] == [1000, 1259]
    assert log_schedule(1).steps(2000) == [0, 1, 10, 100, 1000]
    with pytest.raises(ValueError):
        log_schedule(0)


def test_callable_schedule():
    model = Chain()
    probe = Probe(model, every=lambda s: s in (1, 3), modes=("train",))
    with probe:
        _train(model, probe, 5)
    assert set(probe.frame().step) == {1, 3}
    assert as_schedule(4)(8) and not as_schedule(4)(9)


# -- modes -----------------------------------------------------------------------------------------
def test_eval_and_no_grad_forwards_are_eval_mode_and_apart():
    model = Chain()
    probe = Probe(model)
    with probe:
        _train(model, probe, 1)
        with torch.no_grad():  # training-mode module under no_grad: eval
            model(_data()[0])
        model.eval()
        model(_data()[0])  # eval-mode module with grad: eval
        model.train()
        f_open = probe.frame()  # eval rows of the open step, without closing it
        _train(model, probe, 1)
    f = probe.frame()
    ev = f[f["mode"] == "eval"]
    assert set(ev.step) == {1}
    assert set(ev.quantity.str.split(".").str[0]) <= {"in", "out", "bn"}
    assert len(f_open[f_open["mode"] == "eval"]) == len(ev)
    tr = f[(f["mode"] == "train") & (f.step == 1) & (f.layer == "conv1") & (f.quantity == "in.mean")]
    assert len(tr) == 1


def test_modes_train_only():
    model = Chain()
    probe = Probe(model, modes=("train",))
    with probe:
        _train(model, probe, 1)
        model.eval()
        with torch.no_grad():
            model(_data()[0])
        model.train()
    assert set(probe.frame()["mode"]) == {"train"}


# -- attach / remove -------------------------------------------------------------------------------
def test_attach_twice_does_not_double_count():
    model = Chain(bn=False)
    once, twice = Probe(model), Probe(model)
    twice.attach()
    with once, twice:
        x, y = _data()
        F.cross_entropy(model(x), y).backward()
        once.step()
        twice.step()
    a, b = once.frame(), twice.frame()
    assert len(a) == len(b)
    assert a.value.equals(b.value)  # NaN (if any) in the same rows


def test_hooks_removed_on_exit_even_when_body_raises():
    model = Chain()
    probe = Probe(model)
    with pytest.raises(RuntimeError, match="boom"):
        with probe:
            model(_data()[0])
            raise RuntimeError("boom")
    assert not probe.attached
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_inplace_relu_after_probed_layer_works():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3),
                          nn.BatchNorm2d(2), nn.ReLU(inplace=True))
    probe = Probe(model)
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    with probe:
        y = model(x)
        y.sum().backward()
        probe.step()
    f = probe.frame()
    # the grad reaching the first conv's output is masked by the in-place ReLU's derivative
    assert f[(f.layer == "0") & (f.quantity == "grad_out.var")].value.iloc[0] > 0
    assert set(f.layer) >= {"0", "2", "3"}


# -- diagnostics -----------------------------------------------------------------------------------
def test_step_twice_without_forward_raises():
    model = Chain()
    probe = Probe(model)
    with probe:
        _train(model, probe, 1)
        with pytest.raises(RuntimeError, match="called twice without a training forward"):
            probe.step()


def test_step_without_backward_raises():
    model = Chain()
    probe = Probe(model)
    with probe:
        model(_data()[0])
        with pytest.raises(RuntimeError, match="before its backward"):
            probe.step()


def test_never_fired_layer_warns_once():
    model = Chain()
    model.unused = nn.Linear(2, 2)
    probe = Probe(model)
    with probe:
        with pytest.warns(RuntimeWarning, match=r"never fired during training step 0: unused"):
            _train(model, probe, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _train(model, probe, 1)


def test_checkpoint_recomputation_warns_and_is_not_double_counted():
    class Ckpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = Chain(bn=False)

        def forward(self, x):
            return checkpoint(self.body, x, use_reentrant=False)

    model, plain = Ckpt(), Chain(bn=False)
    plain.load_state_dict(model.body.state_dict())
    pa, pb = Probe(model), Probe(plain)
    x, y = _data()
    with pa, pb:
        with pytest.warns(RuntimeWarning, match="fired again during backward.*activation checkpointing"):
            F.cross_entropy(model(x), y).backward()
            pa.step()
        F.cross_entropy(plain(x), y).backward()
        pb.step()
    a, b = pa.frame(), pb.frame()
    a["layer"] = a.layer.str.replace("body.", "", regex=False)
    key = ["layer", "quantity"]
    merged = a.merge(b, on=key, how="outer", suffixes=("_a", "_b"))
    assert len(merged) == len(a) == len(b)  # same rows, gradients included
    torch.testing.assert_close(torch.tensor(merged.value_a.values), torch.tensor(merged.value_b.values),
                               equal_nan=True)


def test_module_called_twice_per_forward_warns():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(self.lin(x))

    model = Twice()
    probe = Probe(model)
    with probe, pytest.warns(RuntimeWarning, match="fired 2 times in step 0 for 1 forward"):
        model(torch.randn(2, 3)).sum().backward()
        probe.step()


def test_compiled_model_is_refused_at_attach_time():
    model = Chain()
    with pytest.raises(ValueError, match="already torch.compile'd.*before calling torch.compile"):
        Probe(torch.compile(model, backend="eager"))


# -- residual blocks and taps ----------------------------------------------------------------------
def test_tap_and_marked_blocks_record_block_and_branch():
    class UserBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Conv2d(3, 3, 3, padding=1)
            self.tap_branch, self.tap_out = Tap("branch"), Tap("block")

        def forward(self, x):
            return self.tap_out(x + self.tap_branch(self.f(x)))

    class Marked(nn.Module):
        def __init__(self):
            super().__init__()
            self.residual = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return x + self.residual(x)

    model = nn.Sequential(UserBlock(), Marked(), ResidualBlock(make_conv("pws", 3, 3, 3, padding=1)))
    probe = Probe(model, blocks={Marked: "residual"})
    with probe:
        model(torch.randn(2, 3, 5, 5)).sum().backward()
        probe.step()
    f = probe.frame()
    for layer, mtype in (("0", "UserBlock"), ("1", "Marked"), ("2", "ResidualBlock")):
        rows = f[f.layer == layer]
        assert {"block.out.var", "branch.out.var", "block.out.ch_sq_mean"} <= set(rows.quantity), layer
        assert set(rows.module_type) == {mtype}
    rows = f[f.layer == "2.branch.conv"]
    assert {"k.alpha_mean", "k.shrink", "k.fan_var"} <= set(rows.quantity)
    with pytest.raises(ValueError):
        Tap("sum")


def test_tensor_read_once_per_step(monkeypatch):
    """A tensor that is one layer's output and the next one's input (conv -> BN) is reduced once,
    and an output gradient shared as the next layer's input gradient once."""
    calls = []
    real = hooks_module.channel_sum_norm

    def counting(t, dim=1, **kwargs):
        calls.append(tuple(t.shape))
        return real(t, dim, **kwargs)

    monkeypatch.setattr(hooks_module, "channel_sum_norm", counting)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    probe = Probe(model)
    x = torch.randn(2, 3, 6, 6)
    with probe:
        model(x).sum().backward()
        probe.step()
    # forward: x, conv out (= BN in), BN out; backward: dL/dBN out, dL/dconv out (= dL/dBN in)
    assert len(calls) == 5


def test_nonfinite_activation_is_counted():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    probe = Probe(model, quantities="forward")
    with probe:
        model(torch.ones(4, 3)).sum().backward()
        probe.step(loss=float("nan"))
    f = probe.frame().set_index(["layer", "quantity"]).value
    assert f[("0", "out.nonfinite")] == 4
    assert f[("1", "out.nonfinite")] > 0


@pytest.mark.skipif(os.environ.get("VARPROBE_TEST_FUSED") != "1",
                    reason="compiles an inductor kernel (5-30 s); set VARPROBE_TEST_FUSED=1")
def test_fused_reduction_matches_eager():
    model = make_net(0, torch.float32)
    eager, fused = Probe(model), Probe(model, fused=True)
    x, y = torch.randn(5, 3, 11, 9), torch.randint(0, 4, (5,))
    with eager, fused:
        F.cross_entropy(model(x), y).backward()
        eager.step()
        fused.step()
    a, b = eager.frame(), fused.frame()
    assert (a.quantity.values == b.quantity.values).all()
    scale = a.groupby(["layer", "quantity"]).value.transform(lambda v: v.abs().max()).fillna(0)
    close = (a.value - b.value).abs() <= 1e-4 * scale + 1e-9
    assert (close | (a.value.isna() & b.value.isna())).all()


# -- hooks only around recorded steps --------------------------------------------------------------
def _layer_hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules() if m is not model)


def test_layer_hooks_are_attached_only_for_recorded_steps_and_eval_forwards():
    model = Chain()
    probe = Probe(model, every=3)
    with probe:
        for step in range(4):
            assert (_layer_hooks(model) > 0) == (step % 3 == 0), step
            x, y = _data(seed=step)
            F.cross_entropy(model(x), y).backward()
            probe.step()
            model.zero_grad()
            if step == 1:  # an eval forward on a step that is not recorded is still recorded
                model.eval()
                with torch.no_grad():
                    model(_data()[0])
                model.train()
                assert _layer_hooks(model) == 0  # its hooks lived for that forward only
    f = probe.frame()
    assert set(f[f["mode"] == "train"].step) == {0, 3}
    assert set(f[f["mode"] == "eval"].step) == {2}
    assert _layer_hooks(model) == 0 and not model._forward_hooks and not model._forward_pre_hooks


def test_persistent_hooks_stay_between_recorded_steps():
    model = Chain()
    probe = Probe(model, every=3, persistent_hooks=True)
    with probe:
        _train(model, probe, 2)
        assert _layer_hooks(model) > 0
    assert set(probe.frame().step) == {0}


def test_in_backward_detects_recomputation():
    """The behaviour of the private torch._C._current_graph_task_id that plan.in_backward relies on:
    False outside a backward, True inside one (a tensor hook, a checkpoint recomputation)."""
    from varprobe.probe.plan import in_backward

    assert not in_backward()
    seen = []
    x = torch.randn(3, requires_grad=True)
    y = x * 2
    y.register_hook(lambda g: seen.append(in_backward()))
    y.sum().backward()
    assert seen == [True] and not in_backward()
    body = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))
    body[0].register_forward_hook(lambda m, a, o: seen.append(in_backward()))
    checkpoint(body, x, use_reentrant=False).sum().backward()
    assert seen[1:] == [False, True]  # the forward, then its recomputation inside backward


# -- step() arguments and state ---------------------------------------------------------------------
@pytest.mark.parametrize("loss,lr,error,match", [
    (0.5, "abc", TypeError, r"lr=.*'abc'"),
    (torch.tensor([1.0, 3.0]), None, ValueError, r"loss=.*shape \(2,\)"),
    (torch.ones(2, 1), 0.1, ValueError, r"loss=.*shape \(2, 1\)"),
    ("1.0", 0.1, TypeError, r"loss=.*'1.0'"),
    (True, 0.1, TypeError, r"loss=.*True"),
    (torch.tensor(1 + 2j), 0.1, TypeError, r"loss=.*complex"),
    (0.5, float("nan"), ValueError, r"lr=.*finite.*nan"),
    (0.5, float("inf"), ValueError, r"lr=.*finite.*inf"),
    (0.5, torch.tensor(float("inf")), ValueError, r"lr=.*finite"),
    (0.5, [0.1], TypeError, r"lr=.*\[0.1\]"),
])
def test_bad_step_argument_raises_and_changes_nothing(loss, lr, error, match):
    model = Chain()
    bad, good = Probe(model), Probe(model)  # both see the same forwards and backwards
    with bad, good:
        for s in range(2):
            x, y = _data(seed=s)
            F.cross_entropy(model(x), y).backward()
            if s == 0:
                with pytest.raises(error, match=match):
                    bad.step(loss=loss, lr=lr)
            bad.step(loss=0.5, lr=0.1)
            good.step(loss=0.5, lr=0.1)
            model.zero_grad()
    a, b = bad.frame(), good.frame()
    assert set(a.step) == {0, 1}
    assert a[["step", "layer", "quantity"]].equals(b[["step", "layer", "quantity"]])
    assert ((a.value == b.value) | (a.value.isna() & b.value.isna())).all()


def test_one_element_tensor_loss_and_lr_are_recorded():
    model = Chain()
    probe = Probe(model)
    with probe:
        x, y = _data()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        probe.step(loss=loss.reshape(1, 1), lr=torch.tensor([0.25]))
    f = probe.frame().set_index("quantity").value
    assert f["loss"] == pytest.approx(loss.item(), rel=1e-12) and f["lr"] == 0.25


def test_step_after_detach_or_close_says_so(tmp_path):
    model = Chain()
    probe = Probe(model)
    with probe:
        _train(model, probe, 1)
    with pytest.raises(RuntimeError, match="while the probe is detached"):
        probe.step()
    probe.attach()
    _train(model, probe, 1)  # attached again: steps go on
    probe.remove()
    with pytest.raises(RuntimeError, match="while the probe is detached"):
        probe.step()
    assert set(probe.frame().step) == {0, 1}
    run = Probe(model, out=tmp_path / "r")
    with run:
        _train(model, run, 1)
    with pytest.raises(RuntimeError, match="after the probe was closed"):
        run.step()


@pytest.mark.parametrize("how,match", [("eval", "eval mode .* no backward reached them"),
                                       ("no_grad", "ran under torch.no_grad"),
                                       ("inference", "ran under torch.no_grad\\(\\) or torch.inference_mode")])
def test_step_after_eval_forwards_only_says_what_ran(how, match):
    model = Chain()
    probe = Probe(model)
    with probe:
        _train(model, probe, 1)
        if how == "eval":  # eval mode, grad enabled, no backward: an evaluation
            model.eval()
            model(_data()[0])
            model.train()
        else:
            with torch.no_grad() if how == "no_grad" else torch.inference_mode():
                model(_data()[0])
        with pytest.raises(RuntimeError, match=match):
            probe.step()
        _train(model, probe, 1)  # the step stayed open: a training forward and step() close it
    f = probe.frame()
    assert set(f.step) == {0, 1}
    assert set(f[f["mode"] == "eval"].step) == {1}


# -- non-negative quantities -------------------------------------------------------------------------
NONNEGATIVE = ("var", "sq_mean", "ch_var", "ch_sq_mean", "dead_frac", "nonfinite", "grad_in.var", "w.fan_var",
               "w.filter_sum_var", "w.filter_sum_sq", "w.sq_norm", "k.fan_var", "k.filter_sum_var",
               "k.filter_sum_sq", "k.sq_norm", "dec.measured", "dec.iid", "dec.shift", "bn.var_ratio",
               "bn.mean_gap", "gw.avg_abs", "gw.rms")


@pytest.mark.parametrize("fill", [0.0, 3.0])
def test_quantities_nonnegative_by_definition_are_never_negative(fill):
    # An all-zero (or constant) input: E[(y - b)^2] of the first conv is exactly 0 (a constant),
    # the cancellation of q/n - 2 b s/n + b^2 must not make it negative.
    model = make_net(0, torch.float32)
    probe = Probe(model)
    x = torch.full((5, 3, 11, 9), fill)
    with probe:
        F.cross_entropy(model(x), torch.randint(0, 4, (5,))).backward()
        probe.step()
    f = probe.frame()
    nonneg = f[f.quantity.map(lambda q: q.endswith(NONNEGATIVE))]
    assert len(nonneg) > 60
    assert (nonneg.value.dropna() >= 0).all(), nonneg[nonneg.value < 0]
    stem = f[(f.layer == "stem") & (f.quantity == "dec.measured")].value.item()
    if fill == 0.0:  # y = b exactly: the reference is 0
        bias = model.stem.bias.detach().double()
        assert 0.0 <= stem <= 1e-6 * bias.square().mean().item()
