"""Every quantity the Probe records, against a float64 reference computed without hooks.

Net (tests/probe/nets.py) has odd shapes, a grouped dilated conv followed by an in-place ReLU, a PWS
conv, a residual add (ResidualBlock), BatchNorm, GroupNorm and a Linear head. Four training steps,
one of them with two forwards (gradient accumulation, different batch sizes), and an eval forward.
"""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from varprobe.probe import QUANTITIES, Probe

from .nets import LAYERS, clone, expected_eval, expected_train, make_net

F64 = torch.float64


def _batch(n: int, seed: int, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 11, 9, generator=g).to(dtype), torch.randint(0, 4, (n,), generator=g)


def _run(dtype, every: int = 1):
    """Train the probed net, recording every ``every`` steps; return the probe's table and the
    expected {(step, mode, layer, q): v}."""
    net = make_net(0, dtype)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    plan = {0: [_batch(5, 1, dtype)], 1: [_batch(5, 2, dtype), _batch(3, 3, dtype)],
            2: [_batch(4, 4, dtype)], 3: [_batch(5, 5, dtype)]}
    eval_x = _batch(6, 9, dtype)[0]
    expected: dict[tuple, float] = {}
    prev_gi = prev_net = None
    probe = Probe(net, every=every)
    with probe:
        for step, batches in plan.items():
            recorded = step % every == 0
            ref = clone(net)
            if recorded:  # sign persistence against the previous recorded step, update ratio the previous step
                exp, prev_gi = expected_train(ref, [(x.to(F64), y) for x, y in batches], prev_gi,
                                              prev_net=prev_net)
                for k, v in exp.items():
                    expected[(step, "train") + k] = v
            prev_net = ref
            losses = []
            for x, y in batches:
                loss = F.cross_entropy(net(x), y)
                loss.backward()
                losses.append(loss.item())
            probe.step(loss=losses[-1], lr=0.05)
            if recorded:
                expected[(step, "train", "", "loss")] = losses[-1]
                expected[(step, "train", "", "lr")] = 0.05
            opt.step()
            opt.zero_grad()
            if step == 1:  # an eval forward between steps 1 and 2: recorded at step 2, mode "eval"
                ref = clone(net).eval()
                for k, v in expected_eval(ref, [eval_x.to(F64)]).items():
                    expected[(2, "eval") + k] = v
                net.eval()
                with torch.no_grad():
                    net(eval_x)
                net.train()
    return probe.frame(), expected


def _compare(frame, expected, rtol, atol, only=None, zero_tol=None):
    got = {(r.step, r.mode, r.layer, r.quantity): r.value for r in frame.itertuples()}
    assert len(got) == len(frame), "duplicate (step, mode, layer, quantity) rows"
    if only is None:
        missing = sorted(set(expected) - set(got), key=str)
        extra = sorted(set(got) - set(expected), key=str)
        assert not missing, f"missing rows: {missing[:10]}"
        assert not extra, f"unexpected rows: {extra[:10]}"
    bad = []
    for key, want in expected.items():
        if only is not None and not any(key[3].startswith(p) for p in only):
            continue
        have = got[key]
        if math.isnan(want) and math.isnan(have):
            continue
        if zero_tol is not None and abs(want) < 1e-12 and abs(have) < zero_tol:
            continue  # zero by construction (PWS filter means), rounding noise in float32
        if not math.isclose(have, want, rel_tol=rtol, abs_tol=atol):
            bad.append((key, have, want))
    assert not bad, f"{len(bad)} mismatches, e.g. {bad[:8]}"


def test_every_quantity_matches_float64_reference():
    frame, expected = _run(F64)
    _compare(frame, expected, rtol=1e-9, atol=1e-13)
    # metadata columns
    meta = frame[frame.layer != ""].drop_duplicates(["layer"]).set_index("layer")
    for name, (mtype, depth, *_rest) in LAYERS.items():
        assert meta.loc[name, "module_type"] == mtype
        assert meta.loc[name, "depth"] == depth
    assert meta.loc["block", "module_type"] == "ResidualBlock" and meta.loc["block", "depth"] == 2
    assert set(frame["mode"]) == {"train", "eval"}
    assert (frame[frame["mode"] == "eval"]["step"] == 2).all()
    assert frame.dtypes["step"] == "int64" and frame.dtypes["depth"] == "int64"
    assert frame.dtypes["value"] == "float64"


def test_steps_between_recorded_ones_leave_no_trace():
    """every=3: steps 1 and 2 are not recorded (step 2 holds an eval forward, which is). The
    recorded steps 0 and 3 and the eval rows equal the float64 reference: nothing of the
    unrecorded steps leaks into them, although their buckets are not reset."""
    frame, expected = _run(F64, every=3)
    assert set(frame[frame["mode"] == "train"].step) == {0, 3} and set(frame[frame["mode"] == "eval"].step) == {2}
    _compare(frame, expected, rtol=1e-9, atol=1e-13)


def test_float32_model_matches_float64_reference():
    frame, expected = _run(torch.float32)
    only = ("in.var", "in.sq_mean", "out.var", "out.sq_mean", "out.ch_var", "block.out.var",
            "branch.out.var", "grad_out.sq_mean", "grad_in.var", "w.", "k.", "gw.avg_abs", "gw.rms",
            "bn.var_ratio", "norm.")
    _compare(frame, expected, rtol=2e-4, atol=1e-12, only=only, zero_tol=1e-7)


@pytest.mark.parametrize("every,recorded", [(2, {0, 2}), (3, {0, 3})])
def test_schedule_records_only_scheduled_steps(every, recorded):
    net = make_net(0)
    probe = Probe(net, every=every, modes=("train",))
    with probe:
        for _ in range(4):
            x, y = _batch(3, 0)
            F.cross_entropy(net(x), y).backward()
            probe.step()
            net.zero_grad()
    frame = probe.frame()
    assert set(frame["step"]) == recorded
    # sign persistence compares with the previous *recorded* step
    assert set(frame[frame.quantity == "gw.sign_persistence"]["step"]) == recorded - {0}


def test_large_finite_activations_and_gradients_match_float64_reference():
    """Inputs scaled by 1e20 and a loss scaled by 1e20, float32: activations and gradients whose
    squares (about 1e40) overflow float32 but fit a float64. Every quantity equals the float64
    statistics of the float32 tensors the model computed (rel 1e-6), and nothing is non-finite."""
    net = make_net(0, torch.float32)
    scale = 1e20
    batches = [(x * scale, y) for x, y in (_batch(5, 1, torch.float32), _batch(3, 2, torch.float32))]
    eval_x = _batch(4, 9, torch.float32)[0] * scale
    ref = copy.deepcopy(net)  # the same float32 model, without hooks: the tensors the probe saw
    expected, _ = expected_train(ref, batches, None, loss_scale=scale)
    expected = {(0, "train") + k: v for k, v in expected.items()}
    probe = Probe(net)
    with probe:
        for x, y in batches:
            (F.cross_entropy(net(x), y) * scale).backward()
        probe.step()
        net.eval()
        with torch.no_grad():
            net(eval_x)
        ref_eval = copy.deepcopy(net)
        net.train()
    expected.update({(1, "eval") + k: v for k, v in expected_eval(ref_eval, [eval_x]).items()})
    frame = probe.frame()
    huge = frame[frame.quantity.isin(["in.var", "out.sq_mean", "grad_out.sq_mean", "dec.measured"])
                 & (frame.value > 1e38)]
    assert len(huge) >= 6, "the test must produce second moments beyond float32's range"
    assert (frame[frame.quantity.str.endswith("nonfinite")].value == 0).all()
    assert frame.value.map(lambda v: math.isfinite(v) or math.isnan(v)).all(), "an inf was recorded"
    signed = ("dec.rest",)  # a difference: compared to the scale of the parts it is the rest of
    assert set(frame.set_index(["step", "mode", "layer", "quantity"]).index) == set(expected)
    _compare(frame, {k: v for k, v in expected.items() if k[3] not in signed}, rtol=1e-6, atol=0.0,
             only=("",), zero_tol=1e-7)  # zero_tol: PWS filter sums, 0 up to float32 rounding
    got = frame.set_index(["step", "mode", "layer", "quantity"]).value
    for key, want in expected.items():
        if key[3] == "dec.rest":
            measured = expected[key[:3] + ("dec.measured",)]
            assert abs(got[key] - want) <= 1e-6 * measured, (key, got[key], want)


@pytest.mark.parametrize("frozen", ["all", "bn", "all_but_pws"])
def test_training_in_eval_mode_is_recorded_as_training(frozen):
    """Training with modules in eval mode: the whole model (model.eval(); its PWS conv then uses
    its cached kernel and gets no gradient), only the BatchNorm (frozen at its running
    statistics), or all but the PWS conv. The forwards a backward reaches are the step's training
    forwards, every quantity equal to the float64 reference; an evaluation forward under no_grad
    in the same step stays eval."""
    net = make_net(0)
    if frozen == "bn":
        net.bn.eval()
    else:
        net.eval()
        if frozen == "all_but_pws":
            net.block.branch[2].train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    batches = {s: [(torch.randn(n, 3, 11, 9, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,)))
                   for n in sizes] for s, sizes in {0: (5,), 1: (4, 3)}.items()}
    eval_x = torch.randn(6, 3, 11, 9, generator=g, dtype=torch.float64)
    expected, prev, prev_net = {}, None, None
    probe = Probe(net)
    with probe:
        for step, bs in batches.items():
            if step == 1:  # an evaluation between the steps: eval rows of step 1
                expected.update({(1, "eval") + k: v for k, v in expected_eval(clone(net), [eval_x]).items()})
                with torch.no_grad():
                    net(eval_x)
            ref = clone(net)
            exp, prev = expected_train(ref, bs, prev, prev_net=prev_net)
            prev_net = ref
            expected.update({(step, "train") + k: v for k, v in exp.items()})
            for x, y in bs:
                F.cross_entropy(net(x), y).backward()
            probe.step()
            opt.step()
            opt.zero_grad()
    assert not net.bn.training
    _compare(probe.frame(), expected, rtol=1e-9, atol=1e-13)


class _TwoBranch(torch.nn.Module):
    """Two convs side by side into a Linear head; ``use_b=False`` leaves conv ``b`` out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(3, 4, 3, dtype=F64)
        self.b = torch.nn.Conv2d(3, 6, 1, dtype=F64)
        self.head = torch.nn.Linear(10, 4, dtype=F64)

    def forward(self, x, use_b: bool = True):
        ha = self.a(x).mean((2, 3))
        hb = self.b(x).mean((2, 3)) if use_b else ha.new_zeros(x.shape[0], 6)
        return self.head(torch.cat([ha, hb], 1))


def test_sign_persistence_when_a_layer_sits_out_a_step():
    """gw.sign_persistence compares each layer's per-filter mean gradient with the one of the last
    recorded step *that layer* had a gradient in: with conv ``b`` left out of step 1, its step 2
    compares with step 0, every other layer's with step 1 (the layout of the average gradients
    changes between steps), and step 3 with step 2 for all."""
    net = _TwoBranch()
    gi: dict[tuple[int, str], torch.Tensor] = {}
    probe = Probe(net, quantities=["gw.sign_persistence"])
    with probe, pytest.warns(RuntimeWarning):  # b does not fire in step 1
        for step in range(4):
            x, y = _batch(5, step)
            F.cross_entropy(net(x, use_b=step != 1), y).backward()
            for name in ("a", "b", "head"):
                g = net.get_submodule(name).weight.grad
                if g is not None:
                    gi[(step, name)] = g.detach().flatten(1).to(F64).mean(1)
            probe.step()
            net.zero_grad(set_to_none=True)
    got = probe.frame().set_index(["step", "layer"])["value"]
    last = {"a": 0, "b": 0, "head": 0}
    expected = {}
    for step in (1, 2, 3):
        for name in ("a", "b", "head"):
            if (step, name) not in gi:
                continue
            agree = (torch.sign(gi[(step, name)]) == torch.sign(gi[(last[name], name)])).to(F64).mean()
            expected[(step, name)] = agree.item()
            last[name] = step
    assert (2, "b") in expected and (1, "b") not in expected
    assert sorted(got.index) == sorted(expected)
    for k, v in expected.items():
        assert got[k] == v, k


def test_each_quantity_asked_alone_records_what_it_records_among_all():
    """``quantities=[q]`` gives exactly the rows and values of q in a run that records everything
    (whose values the tests above check against the float64 reference): no quantity depends on
    another being asked for (gw.sign_persistence alone once recorded nothing)."""
    def run(quantities):
        net = make_net(0)
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        probe = Probe(net, quantities=quantities)
        with probe, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # layers with nothing to record never "fire"
            for step in range(3):
                x, y = _batch(5, step)
                loss = F.cross_entropy(net(x), y)
                loss.backward()
                probe.step(loss=loss.detach(), lr=0.05)
                opt.step()
                net.zero_grad()
            with torch.no_grad():
                net(_batch(4, 9)[0])
        return probe.frame().set_index(["step", "mode", "layer", "quantity"])["value"].sort_index()

    every = run(list(QUANTITIES))
    # every quantity but amp.skipped (no GradScaler here) has rows on this net
    assert set(QUANTITIES) - set(every.index.get_level_values("quantity")) == {"amp.skipped"}
    for q in QUANTITIES:
        alone = run([q])
        among = every[every.index.get_level_values("quantity") == q]
        assert alone.index.equals(among.index), q
        assert (((alone - among).abs() <= 1e-12 * (1 + among.abs())) | (alone.isna() & among.isna())).all(), q
