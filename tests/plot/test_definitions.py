"""Figures use the report's own definitions (issue 25, items 4 and 5): the collapse figure's two
rules, a scheme with nothing to draw saying why in its panel, values zero up to rounding marked the
same way in every figure, legends naming the recorded quantity, and the figures of rows 7, 8 and E.
Each figure is drawn from a small hand-made table; what it shows is read back from its artists and
checked against float64 numbers computed here."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

import varprobe.plot as vp
from varprobe.plot import captions as cap
from varprobe.plot import rounding
from varprobe.vocabulary import TRAINED

EPS32 = float(np.finfo(np.float32).eps)


def _texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts) + "\n" + fig._supxlabel.get_text()


def _long(values: dict, quantity: str, steps=(0, 5, 10), layers=("c0", "c1"), extra: dict | None = None):
    """Long frame: values[(scheme, seed)] -> one value per step (every layer the same), plus
    ``extra[quantity] = same-shaped dict`` of other quantities."""
    rows = []
    for q, vals in {quantity: values, **(extra or {})}.items():
        for (scheme, seed), per_step in vals.items():
            for step, v in zip(steps, per_step):
                for depth, layer in enumerate(layers):
                    rows.append(dict(run=f"{scheme}-{seed}", step=step, layer=layer, depth=depth, mode="train",
                                     module_type="Conv2d", role="conv", quantity=q, value=v, status="finished",
                                     scheme=scheme, seed=seed, lr=0.2, model="resnet8", data="digits", steps=15))
    return pd.DataFrame(rows)


# -- the collapse figure: did not train (the claims' rule) and blew up ------------------------------
def _outcomes():
    acc = {("plain", 0): 0.11, ("plain", 1): 0.3, ("plain", 2): 0.97, ("pws", 0): 0.99, ("pws", 1): 0.98,
           ("pws", 2): TRAINED}
    return pd.DataFrame([{"scheme": s, "lr": 0.5, "seed": k, "train_accuracy": a, "final_loss": 2.3 if a < 0.5 else 0.1,
                          "status": "collapsed" if (s, k) == ("plain", 0) else "finished"}
                         for (s, k), a in acc.items()])


def test_collapse_map_counts_both_rules_and_states_them_in_the_footer():
    """plain: 2 of 3 did not train (0.11, 0.3 < 0.5), 1 of 3 blew up; pws at exactly 0.5 trained.
    Was: "1/3 collapsed" only, and the footer said nothing of the rule."""
    fig = vp.collapse_map(_outcomes())
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "loss 1.57\n2/3 did not train\n1/3 blew up" in texts
    assert "loss 0.1\n0/3 did not train\n0/3 blew up" in texts
    foot = fig._supxlabel.get_text().replace("\n", " ")
    assert f"final train accuracy below {TRAINED:g} (the claims' rule" in foot and "non-finite loss" in foot
    mesh = fig.axes[0].images[0].get_array()
    assert np.allclose(mesh.filled(np.nan)[0], [2 / 3, 0.0])  # colour: the fraction that did not train
    assert fig.axes[1].get_ylabel() == "fraction of seeds that did not train"


def test_collapse_caption_gives_both_counts():
    text = cap.caption_collapse(_outcomes())
    assert text.startswith("lr 0.5 (2 schemes x 3 seeds): did not train plain 2/3, every other scheme 0; "
                           "blew up plain 1/3, every other scheme 0; highest mean final loss plain (1.57)")


# -- a scheme in the legend with nothing to draw says why, in the panel ------------------------------
def test_a_scheme_without_a_line_says_why_in_its_panel():
    values = {("bn", 0): [1.0, 2.0, 3.0], ("bn", 1): [1.5, 2.5, 3.5],
              ("plain", 0): [np.inf, np.nan, np.inf], ("plain", 1): [np.nan, np.inf, np.nan],
              ("pws", 0): [1.0, np.nan, np.nan]}
    fig = vp.curves(_long(values, "out.sq_mean"), "out.sq_mean", log=False)
    for ax in fig.axes[:2]:
        text = "\n".join(t.get_text() for t in ax.texts)
        assert "plain: nothing to draw: all 6 values non-finite (the runs blew up)" in text.replace("\n", " ")
        assert "pws: no line: one point only, at step 0; the rest non-finite (blew up)" in text.replace("\n", " ")
        assert "bn" not in text
        lone = [l for l in ax.lines if l.get_marker() == "o" and len(l.get_xdata()) == 1]
        assert len(lone) == 1 and lone[0].get_xdata()[0] == 0 and lone[0].get_ydata()[0] == 1.0


# -- zero up to rounding: one rule, marked in every figure -------------------------------------------
def test_at_rounding_measures_a_squared_mean_against_its_channels_variance():
    """out.ch_sq_mean below (100 eps)^2 x out.ch_var of the same run, step and layer; float64 here."""
    frame = _long({("bn", 0): [1e-15, 1e-9, 2e-11]}, "out.ch_sq_mean", extra={"out.ch_var": {("bn", 0): [1.0, 1.0, 0.1]}})
    flags, level = rounding.at_rounding(frame, "out.ch_sq_mean")
    rows = frame[frame["quantity"] == "out.ch_sq_mean"]
    var = np.repeat([1.0, 1.0, 0.1], 2)
    assert flags.tolist() == list(rows["value"].to_numpy() < (100 * EPS32) ** 2 * var)  # [T, F, F] per layer
    assert flags.tolist() == [True, True, False, False, False, False]
    assert math.isclose(level, (100 * EPS32) ** 2 * 1.0)


def test_spp_marks_a_bn_squared_mean_at_rounding_instead_of_squashing_the_axis():
    """Was: BN's block output ch_sq_mean at 1e-15 drawn as is, the axis down to 1e-15, unmarked."""
    var = {("bn", k): [1.0, 1.2, 1.1] for k in range(2)}
    sq = {("bn", k): [1e-15, 0.01, 0.02] for k in range(2)}
    frame = _long(sq, "out.ch_sq_mean", extra={"out.ch_var": var})
    fig = vp.spp(frame)
    bottom = [ax for ax in fig.axes if "ch_sq_mean" in ax.get_ylabel()][0]
    level = (100 * EPS32) ** 2 * 1.1  # the median channel variance of the rows
    assert bottom.get_ylim()[0] > level / 10 ** rounding.BAND_DECADES / 10  # not down at 1e-15
    assert any("zero up to float32 rounding" in t.get_text() for t in bottom.texts)
    assert any(p.get_hatch() == "///" for p in bottom.patches)
    assert "4 out.ch_sq_mean values below (100 ε)² × out.ch_var" in fig._supxlabel.get_text().replace("\n", " ")


def test_curves_of_filter_sums_mark_the_zero_sum_kernels():
    sums = {("wn", 0): [0.5, 1.0, 2.0], ("pws", 0): [4e-14, 5e-14, 3e-14]}
    norms = {("wn", 0): [2.0, 2.0, 2.0], ("pws", 0): [2.0, 2.0, 2.0]}
    fig = vp.curves(_long(sums, "k.filter_sum_sq", extra={"k.sq_norm": norms}), "k.filter_sum_sq")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylim()[0] > 3e-13  # 3e-14 lifted into the band, not below it
    assert any("zero up to float32 rounding" in t.get_text() for t in ax.texts)
    assert "6 k.filter_sum_sq values" in fig._supxlabel.get_text().replace("\n", " ")


def test_shift_uses_the_same_band():
    values = {("plain", 0): [5.0, 5.5, 6.0], ("pws", 0): [3e-7, 4e-7, 1e-12]}
    frame = _long(values, "gw.shift_ratio", extra={"w.filter_sum_var": {k: [1.0, 1.1, 1.2] for k in values}})
    fig = vp.shift(frame)
    ax = fig.axes[0]
    assert any(t.get_text().startswith(rounding.LABEL) for t in ax.texts)
    assert ax.get_ylim()[0] > 1e-9  # 1e-12 lifted into the band, not drawn three decades below it
    # the conv means of pws at its 3 steps (the figure draws the mean over conv layers)
    assert "3 gw.shift_ratio values below 100 ε" in fig._supxlabel.get_text().replace("\n", " ")


def test_decomposition_legend_names_the_recorded_padding_aware_terms():
    from varprobe.plot.decomposition import SYMBOLS
    parts = {"dec.measured": 1.0, "dec.iid": 0.6, "dec.shift": 0.3, "dec.rest": 0.1}
    frame = pd.concat([_long({("pws", 0): [v, v, v]}, q) for q, v in parts.items()])
    fig = vp.decomposition(frame)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("padding-aware" in l and "s_iᵀ C s_i" in l for l in labels)
    assert not any(l.startswith("filter sum (shift):\nmean(x)²·(1ᵀK_i)²") for l in labels)
    assert SYMBOLS.split(";")[0] in fig._supxlabel.get_text().replace("\n", " ")


# -- new figures: batch size (7a, 7b), train/eval gap (8a, 8b), predictors (E rows) --------------------
def _batches():
    acc = {("bn", 16): [0.80, 0.84], ("bn", 128): [0.95, 0.97], ("pws", 16): [0.93, 0.95], ("pws", 128): [0.94, 0.96]}
    return pd.DataFrame([{"scheme": s, "batch_size": b, "seed": k, "test_accuracy": a}
                         for (s, b), v in acc.items() for k, a in enumerate(v)])


def test_batch_figure_draws_each_seed_and_the_mean_line_per_scheme():
    runs = _batches()
    fig = vp.per_run(runs, "test_accuracy", "batch_size")
    ax = fig.axes[0]
    means = {tuple(l.get_xdata()): tuple(l.get_ydata()) for l in ax.lines if len(l.get_xdata()) == 2}
    assert np.allclose(means[(16.0, 128.0)], (0.82, 0.96)) or np.allclose(means[(16.0, 128.0)], (0.94, 0.95))
    drawn = sorted(np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if isinstance(c, PathCollection)]))
    assert np.allclose(drawn, sorted(runs["test_accuracy"]))
    assert ax.get_xscale() == "log"
    text = cap.caption_per_run(runs, "test_accuracy", "batch_size")
    assert "bn: batch_size 128 0.96 [0.95, 0.97], batch_size 16 0.82 [0.8, 0.84] (change -0.14)" in text
    assert "pws: batch_size 128 0.95 [0.94, 0.96], batch_size 16 0.94 [0.93, 0.95] (change -0.01)" in text


def test_train_eval_figure_marks_pws_at_rounding_and_draws_the_thresholds():
    gaps = pd.DataFrame({"scheme": ["pws"] * 3 + ["bn"] * 3 + ["gn"] * 2, "seed": [0, 1, 2] * 2 + [0, 1],
                         "train_eval_gap": [2e-8, 1e-7, 3e-7, 0.05, 0.08, 0.03, np.nan, np.nan]})
    fig = vp.per_run(gaps, "train_eval_gap", "scheme", log=True, thresholds={"8a: pws < 1e-05": 1e-5, "8b: bn > 0.001": 1e-3})
    ax = fig.axes[0]
    assert sorted(l.get_ydata()[0] for l in ax.lines if l.get_linestyle() == ":") == [1e-5, 1e-3]
    assert any(t.get_text().startswith(rounding.LABEL) for t in ax.texts)
    assert "gn: nothing to draw: all 2 values non-finite" in "\n".join(t.get_text() for t in ax.texts)
    assert "3 train_eval_gap values below 100 ε" in fig._supxlabel.get_text().replace("\n", " ")
    text = cap.caption_per_run(gaps, "train_eval_gap", "scheme")
    assert "pws 1.4e-7 [2e-8, 3e-7], zero up to float32 rounding" in text and "bn 0.0533 [0.03, 0.08]" in text
    assert "gn: no finite value" in text


def _auc(x, event):
    """P(x of an event run > x of a non-event run) + ties / 2, by every pair (float64)."""
    pos = [a for a, e in zip(x, event) if e]
    neg = [a for a, e in zip(x, event) if not e]
    return sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_predictors_figure_puts_each_run_at_its_values_and_the_caption_gives_the_e_statistics():
    table = pd.DataFrame({"label": ["plain", "plain", "bn", "pws", "wn", "ctl:plain+proj"],
                          "lr": 0.2, "seed": [0, 1, 0, 0, 0, 0],
                          "shift": [6.0, 5.0, 1.5, 1e-7, 4.0, 0.9], "update": [0.01, 0.2, 0.05, 0.03, 0.04, 0.02],
                          "collapse": [True, True, False, False, True, False],
                          "growth": [np.inf, 3.0, 0.2, 0.1, 2.0, 0.5]})
    names = {"shift": "gw.shift_ratio (early value)", "update": "w.update_ratio (early value)"}
    fig = vp.predictors(table, names)
    growth_shift = [ax for ax in fig.axes if ax.get_xlabel().startswith("gw.shift_ratio")][0]
    pts = np.concatenate([c.get_offsets() for c in growth_shift.collections if isinstance(c, PathCollection)])
    assert sorted(pts[:, 0]) == sorted(table["shift"])  # every run, at its own predictor value
    assert "Runs whose growth is infinite (they blew up): 1," in fig._supxlabel.get_text().replace("\n", " ")
    text = cap.caption_predictors(table, {"shift": "shift", "update": "update"})
    auc_shift = _auc(table["shift"], table["collapse"])
    auc_update = _auc(table["update"], table["collapse"])
    assert f"collapse (3 of 6 runs did not train), AUC: shift {cap.num(auc_shift)} [" in text
    assert f"update {cap.num(auc_update)} [" in text
    from scipy.stats import spearmanr
    rs = spearmanr(table["shift"], table["growth"]).statistic
    assert f"variance growth (1 of 6 runs blew up), Spearman r_s: shift {cap.num(rs)} [" in text


@pytest.mark.parametrize("bad", ["nope"])
def test_per_run_names_a_missing_column(bad):
    with pytest.raises(ValueError, match="per_run needs column\\(s\\) nope; columns: scheme, batch_size"):
        vp.per_run(_batches(), bad, "batch_size")
