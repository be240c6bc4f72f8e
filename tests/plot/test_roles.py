"""Figures select layers by their ``role``, never by a substring of the type name, and never average
two layers of one depth without saying so. SYNTHETIC frames (made-up numbers) shaped like a probe
table; float64 references written out here."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import QuadMesh

import varprobe.plot as vp
from varprobe.plot import _derive
from varprobe.plot.captions import caption_spp

COLUMNS = ["run", "step", "layer", "depth", "mode", "module_type", "role", "quantity", "value", "scheme", "seed"]


def frame_of(layers, seeds=(0,), steps=(0,), quantities=("out.ch_var", "out.ch_sq_mean")) -> pd.DataFrame:
    """SYNTHETIC probe table: ``layers`` = [(name, depth, module_type, role, value per seed)], each
    quantity of ``quantities`` at ``value * (1 + step)``, plus the loss; one scheme, so runs that
    differ only by seed are one line (their geometric mean) or one heat-map panel."""
    rows = []
    for i, seed in enumerate(seeds):
        run = f"seed={seed}"
        for step in steps:
            for name, depth, mtype, role, values in layers:
                for q in quantities:
                    rows.append((run, step, name, depth, "train", mtype, role, q, values[i] * (1 + step), "plain", seed))
            rows.append((run, step, "", -1, "train", "", "", "loss", 1.0, "plain", seed))
    return pd.DataFrame(rows, columns=COLUMNS)


def data_lines(ax):
    """The drawn data lines of a panel (not the dotted reference line at 1)."""
    return [l for l in ax.lines if len(l.get_xdata()) and l.get_linestyle() != ":"]


def legend_texts(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def close(fig):
    fig.clf()


# A Hugging Face ConvNeXt stage: a depthwise conv and a LayerNorm whose type name holds "Conv",
# at one depth; the conv's channel variance 1.1e-5, the norm's 0.998 (their geometric mean 3.3e-3
# is a value no layer has).
CONVNEXT = [("stem", 0, "Conv2d", "conv", [2.0]),
            ("stage.0.dwconv", 1, "Conv2d", "conv", [1.1e-5]),
            ("stage.0.layernorm", 1, "ConvNextLayerNorm", "norm", [0.998]),
            ("head", 2, "Linear", "linear", [0.5])]


def test_spp_draws_the_conv_not_its_mean_with_a_norm_named_conv():
    fig = vp.spp(frame_of(CONVNEXT))
    (line,) = data_lines(_panels(fig)[0])
    np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(line.get_ydata(), [2.0, 1.1e-5, 0.5], rtol=1e-12)
    assert not any("sharing a depth" in t for t in legend_texts(fig))  # nothing pooled
    close(fig)


def test_spp_pools_layers_of_one_depth_per_run_and_names_them_in_the_legend():
    branches = [("stem", 0, "Conv2d", "conv", [1.0, 1.0]),
                ("mix.branch1", 1, "Conv2d", "conv", [4.0, 9.0]),
                ("mix.branch2", 1, "Conv2d", "conv", [0.25, 1.0]),
                ("mix.norm", 1, "BatchNorm2d", "norm", [1e3, 1e3]),
                ("head", 2, "Linear", "linear", [0.5, 2.0])]
    frame = frame_of(branches, seeds=(0, 1))
    rows, kind = _derive.spp_table(frame, [0])
    at1 = rows[(rows["x"] == 1) & (rows["stat"] == "ch_var")].set_index("run")
    # one row per run: the float64 geometric mean of that run's two branches (not the norm)
    assert at1.loc["seed=0", "value"] == pytest.approx(math.exp((math.log(4.0) + math.log(0.25)) / 2), rel=1e-14)
    assert at1.loc["seed=1", "value"] == pytest.approx(math.sqrt(9.0 * 1.0), rel=1e-14)
    assert set(at1["pooled"]) == {2} and set(at1["layer"]) == {"mix.branch1, mix.branch2"}
    assert set(rows.loc[rows["x"] != 1, "pooled"]) == {1}
    fig = vp.spp(frame)
    (line,) = data_lines(_panels(fig)[0])
    # the line is the geometric mean over seeds of the per-run pooled values
    np.testing.assert_allclose(line.get_ydata()[1], math.sqrt(1.0 * 3.0), rtol=1e-12)
    texts = legend_texts(fig)
    assert any("sharing a depth" in t for t in texts) and "depth 1: mix.branch1, mix.branch2" in texts
    close(fig)
    assert "depth 1: mix.branch1, mix.branch2" in caption_spp(frame)


def test_spp_of_a_model_with_blocks_is_drawn_over_the_block_index():
    # a transformer: embedding, attention and MLP linears, and the blocks found in it (role "block",
    # a type name no table knows); the residual stream is drawn over the block index
    layers = [("embeddings", 0, "Embedding", "embedding", [1.0]),
              ("encoder.layer.0.attention", 1, "BertAttention", "other", [7.0]),
              ("encoder.layer.0.output.dense", 2, "Linear", "linear", [3.0]),
              ("encoder.layer.1.output.dense", 4, "Linear", "linear", [5.0])]
    frame = frame_of(layers)
    blocks = frame_of([("encoder.layer.0", 2, "BertLayer", "block", [1.5]),
                       ("encoder.layer.1", 4, "BertLayer", "block", [2.5])],
                      quantities=("block.out.ch_var", "block.out.ch_sq_mean"))
    frame = pd.concat([frame, blocks[blocks["layer"] != ""]], ignore_index=True)
    rows, kind = _derive.spp_table(frame, [0])
    assert kind == "block"
    got = rows[rows["stat"] == "ch_var"].set_index("x")["value"]
    assert got.to_dict() == {0: 1.5, 1: 2.5}
    fig = vp.spp(frame)
    assert "residual block" in _panels(fig)[-1].get_xlabel()
    (line,) = data_lines(_panels(fig)[0])
    np.testing.assert_array_equal(line.get_xdata(), [0, 1])
    close(fig)
    # a block.out.* row of a layer that is not a block (role says so) is not drawn as one; the one
    # block left would be a single point, so the layers are drawn over depth instead
    wrong = frame.assign(role=np.where(frame["layer"] == "encoder.layer.1", "other", frame["role"]))
    rows, kind = _derive.spp_table(wrong, [0])
    assert kind == "layer"
    assert set(rows["layer"]) == {"embeddings", "encoder.layer.0.output.dense", "encoder.layer.1.output.dense"}


def test_layer_order_puts_the_conv_first_whatever_the_norm_is_called():
    frame = frame_of([("stage.0.layernorm", 1, "ConvNextLayerNorm", "norm", [1.0]),
                      ("stage.0.dwconv", 1, "Conv2d", "conv", [1.0])])
    assert _derive.layer_order(frame)[:2] == ["stage.0.dwconv", "stage.0.layernorm"]
    assert _derive.select_layers(frame[frame["layer"] != ""], [1])[0] == ["stage.0.dwconv"]


def test_heatmap_of_several_runs_gives_each_layer_of_a_shared_depth_its_own_row():
    layers = [("stem", 0, "Conv2d", "conv", [1.0, 1.0]),
              ("mix.branch1", 1, "Conv2d", "conv", [4.0, 8.0]),
              ("mix.branch2", 1, "Conv2d", "conv", [100.0, 300.0]),
              ("mix.layernorm", 1, "ConvNextLayerNorm", "norm", [1e6, 1e6])]
    frame = frame_of(layers, seeds=(0, 1), steps=(0, 1), quantities=("out.var",))
    fig = vp.heatmap(frame, "out.var")
    (ax,) = _panels(fig)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["0  stem", "1  mix.branch1", "1  mix.branch2"]
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    values = np.asarray(mesh.get_array()).reshape(3, 2)
    # mean over the two seeds of each layer at steps 0 and 1 (value x (1 + step))
    np.testing.assert_allclose(values, [[1.0, 2.0], [6.0, 12.0], [200.0, 400.0]], rtol=1e-12)
    close(fig)


def test_transmission_names_the_layers_it_pools_at_a_depth():
    layers = [("stem", 0, "Conv2d", "conv", [1.0]),
              ("mix.branch1", 1, "Conv2d", "conv", [4.0]),
              ("mix.branch2", 1, "Conv2d", "conv", [0.25])]
    frame = frame_of(layers, quantities=("out.var", "in.var", "grad_out.var", "grad_in.var"))
    frame.loc[(frame["layer"] == "mix.branch1") & (frame["quantity"] == "in.var"), "value"] = 1.0
    frame.loc[(frame["layer"] == "mix.branch2") & (frame["quantity"] == "in.var"), "value"] = 4.0
    fig = vp.transmission(frame)
    (line,) = data_lines(_panels(fig)[0])
    # forward ratios 4 / 1 and 0.25 / 4: one point, their geometric mean
    np.testing.assert_allclose(line.get_ydata(), [1.0, math.sqrt(4.0 * 0.0625)], rtol=1e-12)
    assert "depth 1: mix.branch1, mix.branch2" in legend_texts(fig)
    close(fig)


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison and ax.get_label() != "<colorbar>"]


def test_spp_legend_breaks_long_pooled_names_so_the_panels_keep_their_width():
    # a Hugging Face ResNet's downsampling block: its conv and its shortcut conv share a depth
    main = "resnet.encoder.stages.1.layers.0.layer.0.convolution"
    short = "resnet.encoder.stages.1.layers.0.shortcut.convolution"
    frame = frame_of([("stem", 0, "Conv2d", "conv", [1.0]), (main, 1, "Conv2d", "conv", [2.0]),
                      (short, 1, "Conv2d", "conv", [8.0]), ("head", 2, "Linear", "linear", [0.5])])
    fig = vp.spp(frame)
    (note,) = [t for t in legend_texts(fig) if t.startswith("depth 1:")]
    lines = note.split("\n")
    assert [line.strip(" ,") for line in lines] == [f"depth 1: {main}", short]  # names whole, one a line
    close(fig)
