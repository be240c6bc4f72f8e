"""varprobe.plot.captions and the figure footer: every number in a caption is checked against a
float64 computation written here independently, on tiny hand-made frames whose answers are known."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

import varprobe.plot as vp
from varprobe.plot import captions as cap
from varprobe.plot.footer import describe
from varprobe.plot.style import _wrap

ROOT = Path(__file__).resolve().parents[2]


def _runs(values: dict, quantity: str, layers=("c0", "c1"), lr: float = 0.2, statuses=None) -> pd.DataFrame:
    """Long frame: values[(scheme, seed)] = array (steps x layers) of ``quantity`` at steps 0, 5, ..."""
    rows = []
    for (scheme, seed), arr in values.items():
        arr = np.asarray(arr, dtype=float)
        run = f"{scheme}-{lr}-{seed}"
        status = (statuses or {}).get((scheme, seed), "finished")
        for i in range(arr.shape[0]):
            for j, layer in enumerate(layers):
                rows.append(dict(run=run, step=5 * i, layer=layer, depth=j, mode="train", module_type="Conv2d",
                                 quantity=quantity, value=arr[i, j], status=status, model="resnet8", data="digits",
                                 size=8, batch_size=64, scheme=scheme, lr=lr, seed=seed, steps=5 * arr.shape[0]))
            rows.append(dict(run=run, step=5 * i, layer="", depth=-1, mode="train", module_type="", quantity="loss",
                             value=float(arr[i].sum()), status=status, model="resnet8", data="digits", size=8,
                             batch_size=64, scheme=scheme, lr=lr, seed=seed, steps=5 * arr.shape[0]))
    return pd.DataFrame(rows)


def test_amplification_counts_seeds_within_the_bound_and_lists_each_peak():
    v = {("plain", 0): [[1, 2], [150, 3]], ("plain", 1): [[1, 1], [2, 99]],
         ("pws", 0): [[1, 1], [1e6, 1]], ("pws", 1): [[1, 1], [1, float("inf")]]}
    text = cap.caption_amplification(_runs(v, "out.sq_mean"), bound=100)
    assert "plain 1 of 2 seeds (peaks 150, 99)" in text
    assert "pws 0 of 2 seeds (peaks 1e6, inf)" in text  # a non-finite value is never within the bound
    assert "all 2 conv/linear layers" in text and "lr 0.2" in text


def test_curves_caption_is_the_mean_growth_of_the_conv_mean_over_seeds():
    v = {("wn", 0): [[1, 3], [4, 6]], ("wn", 1): [[2, 2], [2, 4]]}
    ref = [np.mean([4, 6]) / np.mean([1, 3]), np.mean([2, 4]) / np.mean([2, 2])]  # 2.5, 1.5
    text = cap.caption_curves(_runs(v, "k.filter_sum_sq"), "k.filter_sum_sq")
    assert f"wn x{cap.num(np.mean(ref))} [{cap.num(min(ref))}, {cap.num(max(ref))}]" in text
    assert "wn x2 [1.5, 2.5]" in text


def test_curves_caption_names_a_scheme_at_float_rounding_instead_of_its_growth():
    v = {("wn", 0): [[1, 3], [4, 6]], ("pws", 0): [[1e-14, 2e-14], [3e-14, 5e-14]]}
    text = cap.caption_curves(_runs(v, "k.filter_sum_sq"), "k.filter_sum_sq")
    assert "wn x2.5" in text
    assert "pws at most 4e-14, zero up to float rounding" in text and "pws x" not in text, text


def test_collapse_caption_names_collapsed_cells_per_lr():
    v = {(s, k): [[1, 1], [1, 1]] for s in ("plain", "pws") for k in range(3)}
    frame = _runs(v, "out.var", statuses={("pws", 0): "collapsed", ("pws", 2): "collapsed"})
    text = cap.caption_collapse(frame)
    assert text.startswith("lr 0.2 (2 schemes x 3 seeds): did not train: unknown (no train accuracy); "
                           "blew up pws 2/3, every other scheme 0")
    ok = _runs({(s, k): [[1, 1]] for s in ("plain", "pws") for k in range(3)}, "out.var", lr=0.02)
    both = cap.caption_collapse(pd.concat([frame, ok]))
    assert "lr 0.02 (2 schemes x 3 seeds): did not train: unknown (no train accuracy); no run blew up" in both
    assert both.index("lr 0.2") < both.index("lr 0.02")  # largest lr first


def test_shift_caption_averages_steps_then_seeds_and_names_rounding():
    v = {("plain", 0): [[5, 7], [5, 7]], ("plain", 1): [[4, 4], [4, 4]], ("pws", 0): [[1e-7, 3e-7], [2e-7, 2e-7]]}
    f = _runs(v, "gw.shift_ratio")
    text = cap.caption_shift(f)
    assert "plain 5 [4, 6]" in text  # per run: mean over layers then steps (6 and 4), then over seeds
    assert "pws 2e-7" in text and "pws: below" in text and "zero up to float32 rounding" in text
    assert "plain:" not in text


def test_theory_caption_counts_points_within_the_band_per_quantity_and_scheme():
    t = pd.DataFrame({"quantity": ["out.ch_var"] * 4 + ["out.ch_sq_mean"] * 2,
                      "scheme": ["plain", "plain", "pws", "pws", "plain", "plain"],
                      "predicted": [1.0, 1.0, 1.0, 1e-20, 1.0, 0.0],
                      "measured": [1.19, 1.21, 0.81, 1.0, 0.5, 1.0]})
    text = cap.caption_theory(t)
    assert text.startswith("2 of 5 points within ±20%")  # the predicted 0 is left out, as in the figure
    assert "out.ch_var plain 1 of 2" in text and "out.ch_var pws 1 of 2" in text and "out.ch_sq_mean plain 0 of 1" in text


def test_attribution_caption_orders_controls_by_mean_and_gives_the_range():
    runs = pd.DataFrame({"control": ["plain", "plain", "pws", "pws"], "lr": [0.2] * 4, "seed": [0, 1, 0, 1],
                         "train_accuracy": [0.1, 0.5, 0.9, 1.0]})
    text = cap.caption_attribution(runs)
    assert "lr 0.2: pws 0.95 [0.9, 1], plain 0.3 [0.1, 0.5]" in text


def test_decomposition_caption_matches_the_table_the_figure_draws():
    rows = []
    for step, (iid, shift) in enumerate([(3.0, 1.0), (2.0, 4.0)]):
        for q, v in (("dec.measured", 4.0 * (step + 1) * 2 / 2), ("dec.iid", iid), ("dec.shift", shift),
                     ("dec.rest", 4.0 * (step + 1) - iid - shift)):
            rows.append(dict(run="r", step=step * 5, layer="c1", depth=1, mode="train", module_type="Conv2d",
                             quantity=q, value=v, scheme="plain", lr=0.2, seed=0))
    text = cap.caption_decomposition(pd.DataFrame(rows))
    # step 0: measured 4, shift 1 -> 0.25, rest 0; step 5: measured 8, shift 4 -> 0.5, rest 2/8
    assert "plain: shift 0.25 -> 0.5, rest 0 -> 0.25, E[(y-b)^2] x2" in text


def test_num_prints_three_significant_digits_without_plus_signs():
    assert [cap.num(x) for x in (6412.0, 74900.0, 3.73e-7, 0.5, 1.0, math.inf)] == \
        ["6410", "7.49e4", "3.73e-7", "0.5", "1", "inf"]


def test_describe_reads_model_data_schemes_lrs_seeds_and_steps():
    v = {(s, k): [[1, 1], [1, 1], [1, 1]] for s in ("pws", "plain") for k in (0, 1, 2)}
    text = describe(_runs(v, "out.var"), mode="train")
    assert text == ("resnet8 on digits 8 px, batch 64 · schemes plain, pws · lr 0.2 · 3 seeds (0–2) · "
                    "steps 0–10 recorded (of 15) · 6 runs · train mode")
    assert describe(pd.DataFrame({"step": [0, 3], "value": [1.0, 2.0]})) == "steps 0–3 recorded"


def test_every_figure_carries_the_footer_of_its_runs():
    v = {(s, k): [[1, 2], [2, 3], [3, 5]] for s in ("plain", "bn") for k in (0, 1)}
    f = _runs(v, "out.sq_mean")
    fig = vp.curves(f, "out.sq_mean")
    footer = fig._supxlabel.get_text()
    assert "resnet8 on digits 8 px" in footer and "schemes plain, bn" in footer and "2 seeds (0–1)" in footer


def test_wrap_never_breaks_inside_parentheses():
    lines = _wrap("Var(dL/d in) / Var(dL/d out), backward", 20).split("\n")
    assert "Var(dL/d in) /" in lines and any("Var(dL/d out)," in ln for ln in lines)
    assert _wrap("a b c", 3) == "a b\nc"


def test_gallery_figure_captions_are_the_ones_the_pipeline_wrote():
    """The gallery's figure section is not written by hand: it is ``gallery_block`` of the captions
    that ``reproduce`` computed from the runs that drew docs/figures (docs/figures/captions.json,
    copied by ``python -m varprobe.claims.publish``, which writes that section)."""
    from varprobe.claims.publish import BEGIN, END, GALLERY, gallery_block
    page = (ROOT / GALLERY).read_text()
    block = page[page.index(BEGIN):page.index(END) + len(END)]
    captions = json.loads((ROOT / "docs" / "figures" / "captions.json").read_text())
    assert block == gallery_block(captions, ROOT / "docs" / "figures")
    for name in captions:
        assert (ROOT / "docs" / "figures" / name).stat().st_size > 1000
        assert f"[![{Path(name).stem}](figures/{name})](figures/{name})\n\n{captions[name]}" in block
    # and the numbers in the amplification caption are those caption_amplification prints
    assert re.search(r"plain \d of \d seeds \(peaks [^)]+\)", captions["amplification.png"])


def test_publish_refuses_a_gallery_without_the_markers_and_leaves_it_untouched(tmp_path):
    from varprobe.claims.publish import main
    out = tmp_path / "out"
    out.mkdir()
    (out / "captions.json").write_text(json.dumps({"a.png": "caption 1"}))
    (out / "a.png").write_bytes(b"x" * 10)
    page = tmp_path / "docs" / "gallery.md"
    page.parent.mkdir()
    page.write_text("no markers here\n")
    import os
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main([str(out)]) == 2
        assert main([str(tmp_path / "missing")]) == 2
    finally:
        os.chdir(cwd)
    assert page.read_text() == "no markers here\n" and sorted(p.name for p in page.parent.iterdir()) == ["gallery.md"]
