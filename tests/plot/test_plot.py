"""Tests of varprobe.plot.

Most tests use SYNTHETIC long-format frames built below (made-up numbers with the shape of a
probe table from ``varprobe.load_runs``), so they are fast and cover edge cases; one fixture
trains a real tiny run (``RunConfig(steps=6, every=2)``) and draws every figure from it.
"""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib import colors as mcolors
from matplotlib.collections import PolyCollection, QuadMesh
from matplotlib.figure import Figure

import varprobe.plot as vp
from varprobe.cli.figure import cli_plot
from varprobe.record.figure import save_figure
from varprobe.plot import _derive

SCHEMES = ("plain", "bn", "wn", "pws")


# ----------------------------------------------------------------------------- synthetic frames

def synthetic_runs(schemes=SCHEMES, lrs=(0.05, 0.5), seeds=(0, 1), steps=range(0, 25, 5), n_conv=4,
                   residual=False) -> pd.DataFrame:
    """SYNTHETIC probe table shaped like ``varprobe.load_runs`` output (not real training data):
    per run, ``n_conv`` conv layers and a linear head (plus a BatchNorm per conv for scheme bn),
    layer/step-level quantities, and config columns. Unnormalized schemes grow with depth and
    step; plain at the largest lr "collapses" (stops after the second recorded step) for seed 0."""
    rows = []
    steps = list(steps)
    for scheme in schemes:
        for lr in lrs:
            for seed in seeds:
                rng = np.random.default_rng([SCHEMES.index(scheme) if scheme in SCHEMES else 9,
                                             int(lr * 1000), seed])
                out = []
                run = f"scheme={scheme}-lr={lr}-seed={seed}"
                collapsed = scheme == "plain" and lr == max(lrs) and seed == 0
                run_steps = steps[:2] if collapsed else steps
                grow = 1.0 if scheme in ("bn", "pws") else 1.6
                layers = []
                for i in range(n_conv):
                    layers.append((f"features.{i}.conv", i, "Conv2d" if scheme != "pws" else "PWSConv2d", "conv"))
                    if scheme == "bn":
                        layers.append((f"features.{i}.norm", i, "BatchNorm2d", "norm"))
                layers.append(("head", n_conv, "Linear", "linear"))
                for step in run_steps:
                    t = 1 + step / 10 * lr * 10 * (grow - 1)
                    for layer, depth, mtype, role in layers:
                        noise = float(np.exp(rng.normal(0, 0.1)))
                        v = grow ** depth * t * noise
                        q = {"out.var": v, "in.var": v / grow * (1.0 if depth else 1.0 / t),
                             "out.ch_var": 0.9 * v, "out.ch_sq_mean": 0.1 * v * t,
                             "out.mean": rng.normal(0, 0.5),
                             "grad_out.var": 1e-4 / grow ** depth, "grad_in.var": 1e-4 / grow ** (depth - 1)}
                        if role == "conv":
                            q.update({"gw.shift_ratio": 0.8 + (grow - 1) * 5 * noise,
                                      "w.filter_sum_var": 2.0 * t * noise})
                        if depth == 0:
                            del q["grad_in.var"]
                        for name, value in q.items():
                            out.append((run, step, layer, depth, "train", mtype, role, name, float(value)))
                    if residual:
                        for b in range(n_conv // 2):
                            for name, value in (("block.out.ch_var", grow ** b * t),
                                                ("block.out.ch_sq_mean", 0.1 * grow ** b * t)):
                                out.append((run, step, f"layer{b}", 2 * b + 1, "train", "ResidualBlock", "block",
                                            name, value))
                    loss = 2.3 / (1 + step / 5) if not collapsed else float("inf") if step else 2.3
                    out.append((run, step, "", -1, "train", "", "", "loss", loss))
                    out.append((run, step, "", -1, "train", "", "", "lr", lr))
                if scheme == "bn":  # a few eval-mode rows, which must never mix with train rows
                    out.append((run, 0, "features.0.conv", 0, "eval", "Conv2d", "conv", "out.ch_var", 123.0))
                status = "collapsed" if collapsed else "finished"
                rows.extend(r + (status, scheme, lr, seed, 64) for r in out)
    return pd.DataFrame(rows, columns=["run", "step", "layer", "depth", "mode", "module_type", "role", "quantity",
                                       "value", "status", "scheme", "lr", "seed", "batch_size"])


@pytest.fixture(scope="module")
def runs():
    return synthetic_runs()


@pytest.fixture(scope="module")
def one_run(runs):
    return runs[runs["run"] == "scheme=bn-lr=0.05-seed=0"]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A REAL tiny training run (simple_cnn on digits, 6 steps, probed every 2), loaded back."""
    from varprobe.experiment import RunConfig, run
    import varprobe
    root = tmp_path_factory.mktemp("real")
    run(RunConfig(steps=6, every=2, threads=1), root / "tiny")
    return varprobe.load_runs(root / "tiny"), root / "tiny"


# ----------------------------------------------------------------------------- helpers

def panels(fig: Figure):
    """Axes that hold data (not colorbars, not switched off)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison and ax.get_label() != "<colorbar>"]


def has_data(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.images)


def assert_labelled(fig: Figure, n_panels: int) -> list:
    axes = panels(fig)
    assert len(axes) == n_panels, [a.get_title() for a in axes]
    assert all(has_data(ax) for ax in axes)
    assert any(ax.get_xlabel() for ax in axes) and any(ax.get_ylabel() for ax in axes)
    assert fig.get_suptitle() or any(ax.get_title() for ax in axes)
    return axes


def close(fig):  # figures are not registered with pyplot; dropping them frees them
    fig.clear()


# ----------------------------------------------------------------------------- import hygiene

def test_import_does_not_pull_torch_or_matplotlib_into_the_root():
    code = ("import sys, varprobe; assert 'matplotlib' not in sys.modules, 'root imports matplotlib'\n"
            "import pandas; by_pandas = 'pyarrow' in sys.modules\n"
            "import varprobe.plot; assert 'torch' not in sys.modules, 'varprobe.plot imports torch'\n"
            "heavy = [m for m in ('varprobe.record', 'scipy', 'seaborn') if m in sys.modules]\n"
            "assert not heavy, f'varprobe.plot imports {heavy}'\n"
            "assert by_pandas or 'pyarrow' not in sys.modules, 'varprobe.plot imports pyarrow'\n"
            "import matplotlib; print(matplotlib.get_backend())")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().lower() == "agg"


def test_every_recorded_quantity_has_a_short_label():
    from varprobe.probe.quantities import QUANTITIES
    from varprobe.vocabulary import SHORT
    assert set(QUANTITIES) <= set(SHORT), sorted(set(QUANTITIES) - set(SHORT))


# ----------------------------------------------------------------------------- derivations

def test_hue_style_merges_seeds_and_styles_other_settings(runs):
    f, hue, style = _derive.hue_style(runs)
    assert (hue, style) == ("scheme", "setting")
    assert set(f["setting"]) == {"lr=0.05", "lr=0.5"}
    one_lr = runs[runs["lr"] == 0.05]
    assert _derive.hue_style(one_lr)[1:] == ("scheme", None)
    single = runs[runs["run"] == runs["run"].iloc[0]].drop(columns=["scheme"])
    assert _derive.hue_style(single)[1:] == (None, None)


def test_ratios_are_out_over_in_and_grad_in_over_grad_out(runs):
    r = _derive.ratios(runs)
    f = runs[(runs["run"] == "scheme=wn-lr=0.05-seed=1") & (runs["step"] == 10) & (runs["layer"] == "features.2.conv")]
    v = f.set_index("quantity")["value"]
    got = r[(r["run"] == "scheme=wn-lr=0.05-seed=1") & (r["step"] == 10) & (r["layer"] == "features.2.conv")]
    got = got.set_index("quantity")["value"]
    assert got["fwd.var_ratio"] == pytest.approx(v["out.var"] / v["in.var"])
    assert got["bwd.var_ratio"] == pytest.approx(v["grad_in.var"] / v["grad_out.var"])
    first = r[(r["layer"] == "features.0.conv")]
    assert set(first["quantity"]) == {"fwd.var_ratio"}  # no grad_in.var for the first layer
    assert {"scheme", "lr", "seed", "depth"} <= set(r.columns)


def test_pick_steps_default_and_snapping(runs):
    assert _derive.pick_steps(runs) == [0, 10, 20]
    assert _derive.pick_steps(runs, [1, 19]) == [0, 20]
    assert _derive.pick_steps(runs, 2) == [0, 20]


# ----------------------------------------------------------------------------- figures, synthetic

def test_spp(runs):
    fig = vp.spp(runs)
    axes = assert_labelled(fig, 6)
    assert axes[0].get_yscale() == "log"
    assert "out.ch_var" in axes[0].get_ylabel() and "out.ch_sq_mean" in axes[3].get_ylabel()
    assert [a.get_title().split("\n")[0] for a in axes[:3]] == ["step 0", "step 10", "step 20"]
    assert "1 of 16 runs had stopped" in axes[2].get_title()  # the collapsed synthetic run
    assert any(isinstance(c, PolyCollection) for c in axes[0].collections), "no CI band over seeds"
    assert fig.legends and "plain" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert "conv/linear" in fig.get_suptitle()
    close(fig)


def test_spp_steps_and_residual_blocks():
    frame = synthetic_runs(schemes=("plain", "bn"), lrs=(0.1,), seeds=(0,), residual=True)
    fig = vp.spp(frame, steps=[0, 20])
    axes = assert_labelled(fig, 4)
    assert "block" in axes[-1].get_xlabel() and "block.out.ch_var" in axes[0].get_ylabel()
    assert "residual stream" in fig.get_suptitle()
    close(fig)
    fig = vp.spp(frame, blocks=False)
    assert "depth" in panels(fig)[-1].get_xlabel()
    close(fig)


def test_spp_eval_mode_uses_only_eval_rows(runs):
    fig = vp.spp(runs[runs["scheme"] == "bn"], mode="eval")
    ys = np.concatenate([l.get_ydata() for l in panels(fig)[0].lines])
    assert np.allclose(ys, 123.0)
    close(fig)
    with pytest.raises(ValueError, match="mode 'nope'"):
        vp.spp(runs, mode="nope")


def test_heatmap_one_run_and_per_scheme(runs, one_run):
    fig = vp.heatmap(one_run, "out.var")
    (ax,) = assert_labelled(fig, 1)
    mesh = [c for c in ax.collections if isinstance(c, QuadMesh)][0]
    assert mesh.get_array().shape == (9, 5)  # 4 conv + 4 bn + head, 5 steps
    assert isinstance(mesh.norm, mcolors.LogNorm) or isinstance(mesh.norm, mcolors.Normalize)
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == ["features.0.conv", "features.0.norm"]
    close(fig)
    fig = vp.heatmap(runs, "out.var")
    axes = assert_labelled(fig, 8)  # 4 schemes x 2 learning rates, seeds averaged
    assert axes[0].get_title() == "plain, lr=0.05\n(mean of 2 seeds)"
    assert axes[4].get_title() == "plain, lr=0.5\n(mean of 2 seeds; 1 stopped by step 5)"
    assert any("colorbar" in a.get_label() for a in fig.axes)
    close(fig)


def test_heatmap_color_scales(runs):
    fig = vp.heatmap(runs, "w.filter_sum_var", run="scheme=plain-lr=0.5-seed=1")
    mesh = [c for c in panels(fig)[0].collections if isinstance(c, QuadMesh)][0]
    assert isinstance(mesh.norm, mcolors.Normalize)
    close(fig)
    fig = vp.heatmap(runs, "out.mean")  # signed: linear, centred on 0
    mesh = [c for c in panels(fig)[0].collections if isinstance(c, QuadMesh)][0]
    assert not isinstance(mesh.norm, mcolors.LogNorm) and mesh.norm.vmin == -mesh.norm.vmax
    close(fig)
    fig = vp.heatmap(runs, "out.var", run="scheme=plain-lr=0.5-seed=1", log=True)
    mesh = [c for c in panels(fig)[0].collections if isinstance(c, QuadMesh)][0]
    assert isinstance(mesh.norm, mcolors.LogNorm)
    close(fig)


def test_heatmap_errors(runs):
    with pytest.raises(ValueError, match="'no.such'.*out.var"):
        vp.heatmap(runs, "no.such")
    with pytest.raises(ValueError, match="step-level"):
        vp.heatmap(runs, "loss")
    with pytest.raises(ValueError, match="run 'nope' not in the frame"):
        vp.heatmap(runs, "out.var", run="nope")


def test_curves(runs):
    fig = vp.curves(runs, "out.var")
    axes = assert_labelled(fig, 5)  # 4 convs and the head (norm layers left out across schemes)
    assert axes[0].get_title() == "features.0.conv (depth 0)"
    assert any(isinstance(c, PolyCollection) for c in axes[-1].collections)
    close(fig)
    fig = vp.curves(runs, "out.var", layers=[0, "features.3.c*"])
    assert [a.get_title() for a in assert_labelled(fig, 2)] == ["features.0.conv (depth 0)",
                                                               "features.3.conv (depth 3)"]
    close(fig)
    fig = vp.curves(runs, "loss")
    assert_labelled(fig, 1)
    close(fig)
    with pytest.raises(ValueError, match="layer 'nope' matches no layer"):
        vp.curves(runs, "out.var", layers=["nope"])
    with pytest.raises(ValueError, match="'nope'"):
        vp.curves(runs, "nope")


def test_curves_single_scheme_colours_layers(one_run):
    fig = vp.curves(one_run, "out.var")
    (ax,) = assert_labelled(fig, 1)
    assert len(ax.lines) == 9  # every layer of the bn run, coloured by depth
    close(fig)
    fig = vp.curves(one_run, "out.var", max_layers=2)
    assert len(panels(fig)[0].lines) == 4 and "4 of 9 layers" in fig.get_suptitle()
    close(fig)


def test_shift(runs):
    fig = vp.shift(runs)
    axes = assert_labelled(fig, 2)
    assert "gw.shift_ratio" in axes[0].get_ylabel() and "w.filter_sum_var" in axes[1].get_ylabel()
    assert any(isinstance(c, PolyCollection) for c in axes[0].collections)
    close(fig)


def test_transmission(runs):
    fig = vp.transmission(runs)
    axes = assert_labelled(fig, 6)
    assert "fwd.var_ratio" in axes[0].get_ylabel() and "bwd.var_ratio" in axes[3].get_ylabel()
    assert all(a.get_yscale() == "log" for a in axes)
    close(fig)


def decomposition_runs() -> pd.DataFrame:
    """SYNTHETIC dec.* rows: two schemes x two seeds, three conv layers (depth 0..2), three steps."""
    rng = np.random.default_rng(5)
    rows = []
    for scheme in ("plain", "pws"):
        for seed in (0, 1):
            run = f"scheme={scheme}-seed={seed}"
            for step in (0, 10, 20):
                for depth in range(3):
                    iid, shift, rest = rng.uniform(0.5, 2.0), rng.uniform(0, 1) * (scheme == "plain"), \
                        rng.uniform(-0.2, 0.5)
                    for q, v in (("dec.iid", iid), ("dec.shift", shift), ("dec.rest", rest),
                                 ("dec.measured", iid + shift + rest)):
                        rows.append((run, step, f"c{depth}", depth, "train", "Conv2d", q, v, "finished",
                                     scheme, seed))
    return pd.DataFrame(rows, columns=["run", "step", "layer", "depth", "mode", "module_type", "quantity",
                                       "value", "status", "scheme", "seed"])


def test_decomposition_table_is_the_share_pooled_over_layers():
    frame = decomposition_runs()
    table = vp.decomposition_table(frame, min_depth=1)
    assert set(table["part"]) == {"dec.iid", "dec.shift", "dec.rest"} and len(table) == 4 * 3 * 3
    f = frame[frame["depth"] >= 1]
    for (run, step), g in f.groupby(["run", "step"]):
        by = g.pivot(index="layer", columns="quantity", values="value")
        got = table[(table["run"] == run) & (table["step"] == step)].set_index("part")
        for part in ("dec.iid", "dec.shift", "dec.rest"):  # pooled: sum over layers / sum over layers
            assert got.loc[part, "share"] == pytest.approx(float(by[part].sum() / by["dec.measured"].sum()), rel=1e-12)
        assert got["share"].sum() == pytest.approx(1.0, rel=1e-12)
        assert got["measured"].iloc[0] == pytest.approx(float(by["dec.measured"].mean()), rel=1e-12)
    assert (table.loc[table["scheme"] == "pws"].query("part == 'dec.shift'")["share"] == 0).all()
    assert len(vp.decomposition_table(frame, min_depth=0)) == len(table)  # same keys, other layers


def test_decomposition_figure_and_errors():
    fig = vp.decomposition(decomposition_runs())
    axes = assert_labelled(fig, 2)
    assert [a.get_title().split("\n")[0] for a in axes] == ["plain", "pws"]
    assert all(len(a.lines) >= 3 for a in axes)  # three parts (and the zero line)
    close(fig)
    with pytest.raises(ValueError, match="no dec.\\* rows of conv layers at depth >= 1"):
        vp.decomposition(synthetic_runs())
    partial = decomposition_runs().query("quantity != 'dec.rest'")
    with pytest.raises(ValueError, match="lacks dec.rest"):
        vp.decomposition_table(partial)


def test_result_map_cells_are_means_over_runs():
    runs = pd.DataFrame({"control": ["plain", "plain", "pws", "pws", "plain"], "lr": [0.2, 0.2, 0.2, 0.2, 0.02],
                         "seed": [0, 1, 0, 1, 0], "train_accuracy": [0.1, 0.3, 0.9, 1.0, 0.8]})
    fig = vp.result_map(runs)
    (ax,) = assert_labelled(fig, 1)
    grid = ax.images[0].get_array()
    assert grid[0, 0] == pytest.approx(0.2) and grid[0, 1] == pytest.approx(0.95)  # lr 0.2 on top
    assert grid[1, 0] == pytest.approx(0.8) and np.ma.is_masked(grid[1, 1])  # pws not run at 0.02
    texts = [t.get_text() for t in ax.texts]
    assert "0.2\n[0.1, 0.3]\nn=2" in texts and "not run" in texts
    close(fig)
    with pytest.raises(ValueError, match="needs column\\(s\\) control"):
        vp.result_map(runs.drop(columns="control"))


def test_theory_vs_measured():
    rng = np.random.default_rng(0)
    pred = np.geomspace(0.1, 100, 40)
    frame = pd.DataFrame({"predicted": pred, "measured": pred * np.exp(rng.normal(0, 0.15, 40)),
                          "scheme": np.repeat(SCHEMES, 10), "layer": "x", "step": 0})
    fig = vp.theory_vs_measured(frame, band=0.2, quantity="out.var")
    (ax,) = assert_labelled(fig, 1)
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.get_title() == "out.var"
    assert [t.get_text() for t in fig.legends[0].get_texts()][:4] == list(SCHEMES)
    close(fig)
    with pytest.raises(ValueError, match="predicted"):
        vp.theory_vs_measured(frame.drop(columns="predicted"))


def _theory_table():
    """A compare()-shaped table: 8 schemes x 60 layers x 2 quantities, the squared-mean prediction
    of two zero-sum-kernel schemes at float rounding (below the floor)."""
    from varprobe.analysis.compare import CHANNEL
    rng = np.random.default_rng(1)
    rows = []
    for scheme in ("plain", "plain+gn", "bn", "gn", "wn", "ws", "centered", "pws"):
        for depth in range(60):
            for q in ("out.ch_var", "out.ch_sq_mean"):
                pred = float(np.exp(rng.normal(0, 1)))
                meas = pred * float(np.exp(rng.normal(0, 0.2)))
                if q == "out.ch_sq_mean" and scheme in ("ws", "pws") and depth % 2:
                    pred = meas * 1e-15  # zero-sum kernel: rounding
                rows.append({"scheme": scheme, "layer": f"l{depth}", "depth": depth, "step": 0, "quantity": q,
                             "prediction": CHANNEL, "predicted": pred, "measured": meas})
    t = pd.DataFrame(rows)
    t["rel_error"] = t["measured"] / t["predicted"] - 1
    return t


def test_theory_figure_prints_the_share_table_of_compare_summary():
    import re

    from varprobe.analysis import compare_summary
    from varprobe.analysis.compare import FLOOR
    t = _theory_table()
    fig = vp.theory_vs_measured(t)
    axes = assert_labelled(fig, 2)
    assert [a.get_title() for a in axes] == ["channel variance (out.ch_var)", "squared channel mean (out.ch_sq_mean)"]
    assert "per-channel, padding-aware" in fig.get_suptitle()
    summary = compare_summary(t).set_index(["quantity", "scheme"])
    tables = [ax for ax in fig.axes if not ax.axison and ax.texts]
    assert len(tables) == 2
    for q, text_ax in zip(("out.ch_var", "out.ch_sq_mean"), tables):
        printed = {}
        for line in text_ax.texts[0].get_text().splitlines()[1:]:
            name, within, n, share, err, floor = re.fullmatch(
                r"(\S+)\s+(\d+)/(\d+) \((\d+)%\)\s+(\S+)\s+(\d+)", line).groups()
            printed[name] = (int(within), int(n), int(share), err, int(floor))
        assert set(printed) == set(t["scheme"])
        for scheme, (within, n, share, err, floor) in printed.items():
            r = summary.loc[(q, scheme)]
            assert (within, n, floor) == (r["within"], r["n"], r["below_floor"])
            assert share == round(100 * r["share"]) and err == f"{r['median_abs_error']:.1%}"
    # independent count: the ws squared-mean panel has 30 predictions below the floor, 30 points
    r = summary.loc[("out.ch_sq_mean", "ws")]
    assert r["below_floor"] == 30 and r["n"] == 60
    low = t[(t.quantity == "out.ch_sq_mean") & (t.predicted < FLOOR * t.measured)]
    assert len(low) == 60  # ws and pws
    # below-floor predictions are not drawn at their value: nothing is plotted left of the panel's x limit
    ax = axes[1]
    xmin = ax.get_xlim()[0]
    from matplotlib.collections import PathCollection
    drawn = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections
                            if isinstance(c, PathCollection) and len(c.get_offsets())])
    assert drawn.min() >= xmin and np.isclose(drawn, xmin * 1.5).sum() == 60
    close(fig)


def test_collapse_map(runs):
    fig = vp.collapse_map(runs)
    (ax,) = assert_labelled(fig, 1)
    texts = [t.get_text() for t in ax.texts]
    assert "loss inf\n?/2 did not train\n1/2 blew up" in texts  # plain at the large lr: one seed blew up
    assert sum("0/2 blew up" in t for t in texts) == 7  # load_runs keeps no accuracy: "did not train" unknown
    assert [t.get_text() for t in ax.get_xticklabels()] == list(SCHEMES)
    close(fig)
    summary = pd.DataFrame({"scheme": ["plain", "pws"], "lr": [1.0, 1.0],
                            "status": ["collapsed", "finished"], "final_loss": [np.nan, 0.5]})
    fig = vp.collapse_map(summary)
    assert "loss 0.5\n?/1 did not train\n0/1 blew up" in [t.get_text() for t in panels(fig)[0].texts]
    close(fig)


def test_collapse_map_facets_other_settings(runs):
    more = pd.concat([runs, runs.assign(batch_size=128, run=runs["run"] + "-b128")])
    fig = vp.collapse_map(more)
    assert [a.get_title() for a in assert_labelled(fig, 2)] == ["batch_size=128", "batch_size=64"]
    close(fig)


@pytest.mark.parametrize("ext", ["png", "svg", "pdf"])
def test_save_formats(one_run, tmp_path, ext):
    fig = vp.curves(one_run, "loss")
    path = save_figure(fig, tmp_path / f"sub/fig.{ext}")
    head = path.read_bytes()[:8]
    assert {"png": head.startswith(b"\x89PNG"), "svg": b"<?xml" in head,
            "pdf": head.startswith(b"%PDF")}[ext]
    close(fig)
    with pytest.raises(ValueError, match="'jpg'.*png, .svg, .pdf"):
        save_figure(vp.curves(one_run, "loss"), tmp_path / "fig.jpg")


def test_legends_sit_outside_the_panels():
    runs = synthetic_runs(lrs=(0.05, 0.5), seeds=(0, 1), steps=(0, 10), n_conv=2)
    frame = pd.DataFrame({"predicted": [1.0, 2.0], "measured": [1.1, 1.9], "scheme": ["bn", "pws"]})
    # curves and transmission place their legend with the same code as spp and shift
    for fig in (vp.spp(runs), vp.shift(runs), vp.theory_vs_measured(frame)):
        fig.canvas.draw()
        (legend,) = fig.legends
        box = legend.get_window_extent()
        for ax in panels(fig):
            assert not box.overlaps(ax.get_window_extent()), (fig.get_suptitle(), ax.get_title())
        close(fig)


def test_a_bare_probe_frame_works(one_run):
    bare = one_run[["step", "layer", "depth", "mode", "module_type", "role", "quantity", "value"]]  # Probe.frame()
    for fig, n in [(vp.spp(bare), 6), (vp.curves(bare, "out.var"), 1), (vp.shift(bare), 2),
                   (vp.heatmap(bare, "out.var"), 1), (vp.transmission(bare), 6)]:
        assert_labelled(fig, n)
        close(fig)
    with pytest.raises(ValueError, match="needs the runs. scheme, lr"):
        vp.collapse_map(bare)


def test_figures_show_in_notebooks_without_pyplot(one_run):
    fig = vp.curves(one_run, "loss")
    assert fig._repr_png_().startswith(b"\x89PNG")
    close(fig)


def test_layer_order_puts_blocks_after_their_convs():
    frame = pd.DataFrame({"layer": ["s.0", "s.0.branch.0.conv", "s.0.branch.0.norm", "s.0.branch.2.conv", "head"],
                          "depth": [1, 0, 0, 1, 2],
                          "module_type": ["ResidualBlock", "Conv2d", "BatchNorm2d", "Conv2d", "Linear"]})
    assert _derive.layer_order(frame) == ["s.0.branch.0.conv", "s.0.branch.0.norm", "s.0.branch.2.conv",
                                          "s.0", "head"]


# ----------------------------------------------------------------------------- a real tiny run

def test_real_run_every_figure(real):
    frame, _ = real
    assert frame["step"].max() == 4
    for fig, n in [(vp.spp(frame), 6), (vp.heatmap(frame, "out.ch_var"), 1),
                   (vp.curves(frame, "gw.shift_ratio"), 1), (vp.curves(frame, "loss"), 1),
                   (vp.shift(frame), 2), (vp.transmission(frame), 6), (vp.collapse_map(frame), 1),
                   (vp.decomposition(frame), 1)]:
        assert_labelled(fig, n)
        close(fig)


def test_cli_plot_writes_the_file(real, tmp_path, capsys):
    _, path = real
    out = tmp_path / "spp.png"
    got = cli_plot(SimpleNamespace(run_dirs=[str(path)], kind="spp", quantity=None, out=str(out)))
    assert got == out and out.read_bytes().startswith(b"\x89PNG")
    assert capsys.readouterr().out.strip() == str(out)
    out = tmp_path / "h.svg"
    cli_plot(SimpleNamespace(run_dirs=[str(path)], kind="heatmap", quantity="out.var", out=str(out)))
    assert out.stat().st_size > 1000


def test_plot_never_writes_over_a_file_varprobe_did_not_write(real, tmp_path, capsys):
    """Issue 22, bug 1 for ``varprobe plot``: a user's file at --out is refused in one line (exit 2)
    before any run is loaded; varprobe's own figure there is replaced by the next plot."""
    from varprobe.cli import main
    _, path = real
    mine = tmp_path / "fig.png"
    mine.write_bytes(b"my figure")
    with pytest.raises(SystemExit) as exit_:
        main(["plot", str(path), "--kind", "spp", "--out", str(mine)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and "fig.png was not written by varprobe" in err[-1] and "Traceback" not in err[-1]
    assert mine.read_bytes() == b"my figure"
    ours = tmp_path / "spp.png"
    assert main(["plot", str(path), "--kind", "spp", "--out", str(ours)]) == 0
    assert main(["plot", str(path), "--kind", "heatmap", "--quantity", "out.var", "--out", str(ours)]) == 0
    assert ours.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("kind, quantity, out, match", [
    ("nope", None, "f.png", r"unknown plot kind 'nope'; valid kinds: spp, heatmap, curves"),
    ("heatmap", None, "f.png", r"'heatmap' needs a quantity"),
    ("spp", "out.var", "f.png", r"'spp' takes no quantity"),
    ("spp", None, "f.gif", r"unknown figure format 'gif'"),
])
def test_cli_plot_errors(tmp_path, kind, quantity, out, match):
    args = SimpleNamespace(run_dirs=[str(tmp_path / "missing")], kind=kind, quantity=quantity,
                           out=str(tmp_path / out))
    with pytest.raises(ValueError, match=match):
        cli_plot(args)


def test_cli_plot_unknown_quantity_names_it(real, tmp_path):
    _, path = real
    with pytest.raises(ValueError, match="quantity 'out.nope' is not in the frame"):
        cli_plot(SimpleNamespace(run_dirs=[str(path)], kind="curves", quantity="out.nope",
                                    out=str(tmp_path / "c.png")))
