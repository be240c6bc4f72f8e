"""Figures readable where they are shown: at 100 dpi or more in a notebook whatever its
``rcParams["figure.dpi"]``, and no label running into another (the heatmap's colour-bar label into
its title, as it did in notebook 01)."""
from __future__ import annotations

import io

import matplotlib
import pytest
from PIL import Image

import varprobe.plot as vp
from varprobe.plot.style import DPI, new_figure

from .test_plot import synthetic_runs


def test_a_figure_is_shown_at_100_dpi_even_where_the_notebook_asks_for_less():
    with matplotlib.rc_context({"figure.dpi": 80}):
        fig, _ = new_figure(1, 1)
    assert DPI >= 100 and fig.dpi == DPI
    png = Image.open(io.BytesIO(fig._repr_png_()))
    assert png.info["dpi"][0] == pytest.approx(DPI, abs=0.01)
    with matplotlib.rc_context({"figure.dpi": 150}):  # asking for more is granted
        assert new_figure(1, 1)[0].dpi == 150


@pytest.mark.parametrize("schemes", [("plain",), ("plain", "bn", "pws")], ids=["one run", "one panel per scheme"])
def test_heatmap_colorbar_label_never_runs_into_the_title(schemes):
    runs = synthetic_runs(schemes=schemes, lrs=(0.05,), seeds=(0,), n_conv=8)
    fig = vp.heatmap(runs, "grad_out.var", log=True)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    label = bar.yaxis.label.get_window_extent(renderer)
    title = fig._suptitle.get_window_extent(renderer)
    assert not label.overlaps(title), (label, title)
    assert label.height <= bar.get_window_extent(renderer).height * 1.05  # as long as its bar, at most
