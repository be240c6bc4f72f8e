"""The committed notebooks show their figures at 100 dpi or more (the resolution matplotlib stamps
in each PNG), and each notebook stays under 1 MB with them."""
from __future__ import annotations

import base64
import io

import nbformat
import pytest
from PIL import Image

from .test_notebooks import IDS, NOTEBOOKS

MIN_DPI = 100


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_figures_are_at_100_dpi_or_more(path):
    nb = nbformat.read(path, as_version=4)
    dpis = [Image.open(io.BytesIO(base64.b64decode(o.data["image/png"]))).info.get("dpi", (0, 0))[0]
            for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if "image/png" in o.get("data", {})]
    assert dpis, f"{path.name}: no figure"
    low = [round(d) for d in dpis if d < MIN_DPI - 0.01]
    assert not low, f"{path.name}: {len(low)} of {len(dpis)} figures below {MIN_DPI} dpi: {low}"
