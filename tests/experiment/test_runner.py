"""run() and grid(): bitwise determinism, collapse detection, eval probing, frozen alpha, resume."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from varprobe.experiment import RunConfig, grid, run, runner
from varprobe.experiment.runner import run_name
from varprobe.record import load_run
from varprobe.record.meta import read_meta, write_json_atomic

# Tiny and fast: the 8x8 digits CNN, a few steps, one thread (bitwise determinism needs a fixed count).
BASE = RunConfig(model="simple_cnn", scheme="pws", data="digits", batch_size=32, steps=5, threads=1,
                 eval_steps=(0, 3), eval_batch=64)


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def pair(root):
    """The same config run twice into two directories."""
    return run(BASE, root / "a"), run(BASE, root / "b")


@pytest.fixture(scope="module")
def collapsed(root):
    """Plain convs at a huge learning rate: the logits explode within a few steps."""
    return run(BASE.replace(scheme="plain", lr=50.0, steps=30, eval_steps=()), root / "collapse")


def _final_state(r) -> dict[str, torch.Tensor]:
    """The run's final parameters and buffers, where the runner saves them (``load_model``)."""
    load_model = getattr(runner, "load_model", None)
    if load_model is None:
        pytest.skip("the runner does not save the final model")
    return load_model(r).state_dict()


def _loss(frame: pd.DataFrame) -> pd.Series:
    rows = frame[frame.quantity == "loss"]
    return rows.set_index("step")["value"].sort_index()


# -- determinism -----------------------------------------------------------------------------------
def test_same_config_gives_bit_identical_records(pair):
    a, b = pair
    assert a.status == b.status == "finished"
    assert len(a.frame) > 0
    pd.testing.assert_frame_equal(a.frame, b.frame, check_exact=True)
    assert a.meta["result"] == b.meta["result"]  # final loss and accuracies: functions of the final weights
    assert a.meta["config"] == b.meta["config"]
    assert RunConfig.from_dict(a.meta["config"]) == BASE  # the config is stored (plus the probe's settings)


def test_same_config_gives_bit_identical_final_parameters(pair):
    first, second = (_final_state(r) for r in pair)
    assert list(first) == list(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_different_seeds_differ(root, pair):
    other = run(BASE.replace(seed=1), root / "seed1")
    a = pair[0]
    assert other.status == "finished"
    assert list(other.frame.columns) == list(a.frame.columns)
    assert not other.frame["value"].equals(a.frame["value"])
    assert not np.array_equal(_loss(other.frame).to_numpy(), _loss(a.frame).to_numpy())
    if hasattr(runner, "load_model"):
        state, other_state = _final_state(a), _final_state(other)
        assert any(not torch.equal(state[k], other_state[k]) for k in state)


# -- what a finished run records -----------------------------------------------------------------------
def test_finished_run_records_every_step_and_result(pair):
    a = pair[0]
    loss = _loss(a.frame[a.frame["mode"] == "train"])
    assert list(loss.index) == list(range(BASE.steps))
    assert np.isfinite(loss.to_numpy()).all()
    result = a.meta["result"]
    assert result["collapsed_at"] is None
    assert result["final_loss"] == pytest.approx(loss.iloc[-1])
    for key in ("train_accuracy", "test_accuracy"):
        assert 0.0 <= result[key] <= 1.0


def test_eval_rows_only_at_eval_steps(pair):
    frame = pair[0].frame
    assert set(frame["mode"].unique()) == {"train", "eval"}
    assert sorted(frame.loc[frame["mode"] == "eval", "step"].unique()) == list(BASE.eval_steps)
    assert sorted(frame.loc[frame["mode"] == "train", "step"].unique()) == list(range(BASE.steps))
    eval_rows = frame[frame["mode"] == "eval"]
    assert eval_rows["quantity"].str.startswith("out.").any()  # activations of the held-out batch
    assert not eval_rows["quantity"].isin(["loss", "lr"]).any()  # no update, no loss in eval mode


def test_no_eval_rows_without_eval_steps(collapsed):
    assert set(collapsed.frame["mode"].unique()) == {"train"}


# -- collapse detection ------------------------------------------------------------------------------
def test_collapse_on_divergent_run(collapsed):
    steps = collapsed.config["steps"]
    assert collapsed.status == "collapsed"
    assert collapsed.meta["status"] == "collapsed"
    at = collapsed.meta["result"]["collapsed_at"]
    assert isinstance(at, int) and 0 <= at < steps - 1  # stopped early
    frame = collapsed.frame
    assert frame["step"].max() == at  # nothing recorded after the collapse step
    assert list(_loss(frame).index) == list(range(at + 1))  # everything up to it is kept
    last = frame[frame["step"] == at]
    assert (last["quantity"] == "out.var").any()  # the collapsing step's layer statistics too
    # Why it stopped: a non-finite loss, or the logits (the last layer's output) beyond the bound.
    loss_at = _loss(frame).iloc[-1]
    out_var = last[last["quantity"] == "out.var"]
    logit_var = out_var.loc[out_var["depth"].idxmax(), "value"]
    bound = collapsed.config["collapse_var"]
    assert not math.isfinite(loss_at) or not logit_var <= 0.9 * bound, (loss_at, logit_var)
    before = frame[(frame["step"] < at) & (frame["quantity"] == "out.var")]
    assert (before.groupby("step")["value"].max() < bound).all()  # not earlier
    assert load_run(collapsed.path).status == "collapsed"


def test_collapse_on_logit_variance_bound(root):
    """A bound below any real logit variance stops the run at step 0, keeping step 0."""
    r = run(BASE.replace(collapse_var=1e-12, eval_steps=()), root / "bound")
    assert r.status == "collapsed"
    assert r.meta["result"]["collapsed_at"] == 0
    assert sorted(r.frame["step"].unique()) == [0]
    assert math.isfinite(r.meta["result"]["final_loss"])  # the loss was fine: the variance stopped it


# -- frozen alpha ----------------------------------------------------------------------------------
def _alpha(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame[(frame.quantity == "k.alpha_mean") & (frame["mode"] == "train")]
    return rows.pivot(index="step", columns="layer", values="value")


def test_freeze_alpha_keeps_alpha_constant(root, pair):
    frozen = run(BASE.replace(freeze_alpha=True, lr=0.2, eval_steps=()), root / "frozen")
    alpha = _alpha(frozen.frame)
    assert alpha.shape == (BASE.steps, alpha.shape[1]) and alpha.shape[1] >= 1
    assert (alpha.nunique() == 1).all(), alpha
    assert (alpha.iloc[0] == 1.0).all()  # PWS alpha starts at 1
    # Control: without freezing, alpha is trained (so the check above is not vacuous).
    trained = _alpha(pair[0].frame)
    assert (trained.nunique() > 1).any(), trained


# -- grid and resume -------------------------------------------------------------------------------
def test_run_name_lists_the_changed_fields():
    assert run_name(RunConfig()) == "default"
    name = run_name(RunConfig(scheme="bn", seed=2))
    assert "scheme=bn" in name and "seed=2" in name
    assert run_name(RunConfig(seed=1)) != run_name(RunConfig(seed=2))


def test_grid_skips_finished_and_restarts_unfinished(tmp_path):
    base = BASE.replace(steps=3, eval_steps=())
    first = grid(base, tmp_path, seeds=[0, 1], progress=False)
    assert [r.status for r in first] == ["finished", "finished"]
    assert [r.config["seed"] for r in first] == [0, 1]
    done, unfinished = first[0].path, first[1].path
    assert done != unfinished and done.parent == unfinished.parent == tmp_path
    done_meta = read_meta(done)

    # Make the second run look like one whose process was killed mid-way: meta.json still says
    # "running" (written atomically, as a RunWriter leaves it), no end time and no result.
    meta = read_meta(unfinished)
    meta.update(status="running", end_time=None, duration_s=None)
    meta.pop("result", None)
    write_json_atomic(unfinished / "meta.json", meta)
    assert load_run(unfinished).status == "interrupted"  # the reader's view of a killed run

    second = grid(base, tmp_path, seeds=[0, 1], progress=False)
    assert [r.path for r in second] == [done, unfinished]
    assert read_meta(done) == done_meta  # skipped: untouched, same start_time
    assert second[0].meta["start_time"] == done_meta["start_time"]
    redone = load_run(unfinished)
    assert redone.status == "finished"
    assert redone.meta["start_time"] != meta["start_time"]  # restarted from scratch
    assert redone.meta["result"]["collapsed_at"] is None
    # Redone from scratch with the same config: bit-identical to the original record.
    pd.testing.assert_frame_equal(redone.frame, first[1].frame, check_exact=True)
