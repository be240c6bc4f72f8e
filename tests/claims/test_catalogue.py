"""The catalogue and the profiles: stable ids, a statistic per claim fixed in code, thresholds from
the theory, ID@LR rows, and the runs each profile plans (checked without running them)."""
import math
import types

import pytest
import torch

from varprobe import theory
from varprobe.claims import CLAIMS, KINDS, MAIN_SCHEMES, PROFILES, Profile, plan, rows
from varprobe.claims.measures import Evidence, grad_ratio, grad_scale_growth
from varprobe.claims.profiles import ACCURACY_SCHEMES, configs, estimate_minutes
from varprobe.claims.report import _setting
from varprobe.experiment import RunConfig
from varprobe.models.resnet import PWS_LAYOUT

OLD_IDS = ["1a", "1b", "1c", "1d", "2a", "2b", "3a", "3b", "4a", "4b", "4c", "4d", "5a", "5b", "5c", "6a", "6b",
           "7a", "7b", "8a", "8b", "9a", "9b", "10", "11a", "11b", "11c", "12a", "12b",
           *[f"A{k}-{t}" for t in ("large", "small") for k in range(1, 7)], "D1", "D2"]


def test_every_existing_claim_id_is_kept_and_new_ones_are_new():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    assert [i for i in ids if i in OLD_IDS] == OLD_IDS
    assert [i for i in ids if i not in OLD_IDS] == ["4e", *[f"T-{s}" for s in MAIN_SCHEMES],
                                                    *[f"E{o}{x}" for o in (1, 2) for x in "abcde"],
                                                    "W1", "W2", "W3", "W4"]


def test_each_claim_has_a_known_kind_a_direction_and_a_finite_threshold():
    for c in CLAIMS:
        assert c.kind in KINDS and c.direction in (">", "<") and math.isfinite(c.threshold), c.id
        assert c.at in ("small", "large", "none", "sweep")
        assert (c.at == "sweep") == (c.kind == "slopes"), c.id
        if c.kind == "ratio":
            assert c.threshold > 0, c.id
        if c.kind == "outcome":
            assert 0 < c.threshold < 1, c.id
        if c.kind == "outcome2":
            assert c.threshold == 1.0, c.id
    kinds = {c.id: c.kind for c in CLAIMS}
    assert kinds["5a"] == kinds["3a"] == kinds["1d"] == "ratio"
    assert kinds["4a"] == kinds["4c"] == "outcome" and kinds["5c"] == kinds["4e"] == "outcome2"
    assert kinds["11a"] == kinds["A1-large"] == kinds["6b"] == "paired"


def test_12a_reads_the_theory_bound_and_12b_the_theory_growth():
    by = {c.id: c for c in CLAIMS}
    growth = theory.pws_grad_scale(1.0, 0.01, 0.0, 576) / theory.pws_grad_scale(1.0, 1.0, 0.0, 576)
    assert by["12b"].threshold == pytest.approx(0.5 * growth) and growth == pytest.approx(10.0)
    assert 0.99 < grad_ratio(1e-3, 0.01, 0) <= 1.0  # approaches the cap from below as V shrinks
    assert grad_ratio(1e-3, 1.0, 0) < 0.5
    assert grad_scale_growth(0.1, 0) == pytest.approx(10.0, rel=1e-6)


def test_a_claim_at_several_large_rates_gets_one_row_per_rate():
    ids = [r[1] for r in rows(PROFILES["standard"])]
    assert "4a@0.1" in ids and "4a@0.5" in ids and "4a" not in ids and "A1-large@0.5" in ids
    assert not any(i.endswith("-small") for i in ids)  # standard runs controls at the large rates only
    assert "1a" in ids and "12b" in ids
    quick = [r[1] for r in rows(PROFILES["quick"])]
    assert "4a" in quick and "A1-small" in quick and not any("@" in i for i in quick)


def test_quick_measures_pws_on_a_resnet_that_keeps_groupnorm_at_stem_and_neck():
    for name in ("quick", "tiny"):
        p = PROFILES[name]
        assert p.model.startswith("resnet") and "pws" in PWS_LAYOUT
        assert all(c.model.startswith("resnet") for c in configs(plan(p)) if c.scheme == "pws")


def test_standard_is_the_papers_setting_at_laptop_scale():
    p = PROFILES["standard"]
    assert (p.model, p.data, p.size, p.channels, p.batch_size, p.steps, p.seeds, p.lrs) == \
        ("resnet20", "digits", 8, 3, 64, 300, 6, (0.01, 0.1, 0.5))
    cfgs = configs(plan(p))
    main = {(c.scheme, c.lr) for c in cfgs if c.steps == 300 and not c.project_shift}
    assert {(s, lr) for s in ("plain", "bn", "gn", "wn", "centered", "pws") for lr in p.lrs} <= main
    controls = [c for c in cfgs if c.project_shift or c.scheme == "plain+gn"]
    assert {c.lr for c in controls} == {0.1, 0.5}
    assert all(c.model == "resnet20" and c.channels == 3 for c in cfgs)
    every_step = [c for c in cfgs if c.every == 1]
    assert {(c.scheme, c.lr) for c in every_step} == {("plain", 0.01)}  # only 1c reads consecutive steps


def test_a_config_two_experiments_share_is_planned_once():
    p = PROFILES["quick"]
    experiments = plan(p)
    total = sum(len(e.schemes or (1,)) * len(e.lrs) * len(e.seeds) for e in experiments)
    assert len(configs(experiments)) < total  # e.g. the pws control is the main pws run


@pytest.mark.parametrize("kwargs, match", [({"lrs": (0.1,)}, "lrs must be"), ({"lrs": (0.2, 0.1)}, "lrs must be"),
                                           ({"control_lrs": "some"}, "control_lrs must be"),
                                           ({"accuracy_size": 0}, "accuracy_size must be None or a positive"),
                                           ({"accuracy_size": True}, "accuracy_size must be None or a positive"),
                                           ({"accuracy_size": "16"}, "accuracy_size must be None or a positive"),
                                           ({"accuracy_size": 12}, "accuracy_size 12: digits size must be 8, 16 or")])
def test_bad_profiles_are_named(kwargs, match):
    base = dict(name="x", model="resnet8", data="digits", size=8, width=None, steps=2, seeds=1, lrs=(0.1, 0.2),
                batch_size=8, every=1, batch_sizes=(4,), samples=8, speed_model="resnet8", speed_size=8,
                speed_batch=8, speed_rounds=1)
    with pytest.raises(ValueError, match=match):
        Profile(**{**base, **kwargs})


def test_estimate_is_steps_times_step_time_times_the_probe_factor_over_jobs():
    p = PROFILES["quick"]
    cfgs = configs(plan(p))
    by_hand = sum(c.steps * 0.02 * (1.6 if c.every == 1 else 1.1) for c in cfgs) / 60
    assert estimate_minutes(p, plan(p), 1, lambda c: 0.02) == pytest.approx(by_hand, rel=1e-12)
    assert estimate_minutes(p, plan(p), 2, lambda c: 0.02) == pytest.approx(by_hand / 2, rel=1e-12)


def test_measured_step_time_is_a_real_timing():
    from varprobe.claims.profiles import measured_step_seconds
    c = RunConfig(model="resnet8", size=8, batch_size=8, threads=1)
    assert 1e-5 < measured_step_seconds(c) < 5.0


class _Recording(dict):
    """Evidence.runs that answers every key with a finished run and records which keys were read."""

    def __missing__(self, key):
        self.setdefault("read", []).append(key)
        return types.SimpleNamespace(meta={"result": {"test_accuracy": 0.5, "train_accuracy": 0.5}})


def _labels_read(p, row_id: str) -> set[str]:
    (claim, _, lr), = [r for r in rows(p) if r[1] == row_id]
    runs = _Recording()
    claim.measure(Evidence(p, runs, torch.zeros(1)), 0, lr)
    return {label for label, _, _ in runs["read"]}


def test_standard_accuracy_rows_read_their_own_16px_cells():
    p = PROFILES["standard"]
    assert p.accuracy_size == 16  # fixed before these rows' verdicts were read (profiles.py, docs/claims.md)
    acc = [c for e in plan(p) if e.label.startswith("acc:") for c in configs([e])]
    main = p.base()
    assert {(c.scheme, c.project_shift, c.lr) for c in acc} == (
        {(s, False, p.lr_small) for s in ACCURACY_SCHEMES}
        | {(s, proj, lr) for s, proj in (("plain+gn", False), ("plain+gn", True)) for lr in p.lrs_large})
    assert len(acc) == 6 * (len(ACCURACY_SCHEMES) + 2 * len(p.lrs_large))
    for c in acc:  # only the image side differs from the main runs; nothing is recorded
        assert (c.size, c.model, c.data, c.channels, c.steps, c.batch_size) == \
            (16, "resnet20", main.data, main.channels, main.steps, main.batch_size)
        assert c.every > c.steps and c.eval_steps == ()
    assert _labels_read(p, "11a") == {"acc:pws", "acc:bn"}
    assert _labels_read(p, "11b") == {"acc:bn", "acc:gn"}
    assert _labels_read(p, "11c") == {"acc:pws", "acc:plain"}
    for lr in p.lrs_large:
        assert _labels_read(p, f"A3-large@{lr:g}") == {"acc:ctl:plain+gn+proj", "acc:ctl:plain+gn"}
        assert _labels_read(p, f"A2-large@{lr:g}") == {"ctl:plain+gn", "ctl:plain"}  # the other A rows: as before
    assert "Accuracy rows (11a-11c" in _setting(p, 1.0) and "at 16px" in _setting(p, 1.0)


def test_a_profile_without_accuracy_size_reads_the_main_runs():
    p = PROFILES["quick"]
    assert p.accuracy_size is None and not [e for e in plan(p) if e.label.startswith("acc:")]
    assert _labels_read(p, "11c") == {"pws", "plain"}
    assert _labels_read(p, "A3-large") == {"ctl:plain+gn+proj", "ctl:plain+gn"}
    assert "Accuracy rows" not in _setting(p, 1.0)
