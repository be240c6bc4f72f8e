"""The reproduce pipeline end to end at the smallest scale (the real --quick run is `make demo`)."""
import json
import math
import os

import numpy as np

import pytest

from varprobe.analysis import VERDICTS, verdict
from varprobe.claims import COMPARISONS, CONTROLS, PROFILES, plan, reproduce, rows
from varprobe.claims.pipeline import run_plan
from varprobe.experiment.runner import run_name
from varprobe.claims.measures import TRAINED
from varprobe.claims.summary import ACROSS_RUNS

TINY = PROFILES["tiny"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    findings = reproduce(TINY, out, progress=False, log=lambda _: None)
    return out, findings


def test_every_row_gets_a_verdict_n_and_its_figures(report):
    out, findings = report
    doc = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in doc["claims"]] == [r[1] for r in rows(TINY)]
    for c in doc["claims"]:
        assert {"id", "claim", "quantity", "kind", "expected", "measured", "verdict", "figures",
                "planning_seeds"} <= set(c)
        assert c["verdict"] in VERDICTS
        assert len(c["measured"]["per_seed"]) == TINY.seeds
        if c["kind"] not in ACROSS_RUNS:
            assert c["measured"]["n"] == TINY.seeds
        for fig in c["figures"]:
            assert (out / fig).stat().st_size > 1000
        if c["verdict"] != "inconclusive":
            assert c["planning_seeds"] is None
    table = (out / "claims.md").read_text()
    assert all(f"| {f.id} |" in table for f in findings)
    assert "seeds to settle (planning, not a rerun rule)" in table


def test_every_settled_row_carries_its_fragility_and_the_counts_split_by_it(report):
    """Each settled row of claims.json and claims.md has its measure (the fragility index for the
    outcome kinds, the verdict with each seed left out for the others), checked here against the
    per-seed values; a row is marked fragile exactly when one seed changes its verdict; the counts
    line is robust holds / robust does not hold / fragile / inconclusive, the verdict counts kept."""
    from tests.claims.test_fragility import _ref_index, _ref_loo
    from varprobe.claims.fragility import OUTCOME_KINDS, STANDINGS
    out, findings = report
    doc = json.loads((out / "claims.json").read_text())
    table = (out / "claims.md").read_text()
    settled = 0
    for c in doc["claims"]:
        frag, v = c["fragility"], c["verdict"]
        line = next(x for x in table.splitlines() if x.startswith(f"| {c['id']} |"))
        if v == "inconclusive":
            assert frag is None and c["standing"] == "inconclusive"
            continue
        settled += 1
        per_seed = c["measured"]["per_seed"]
        if c["kind"] in OUTCOME_KINDS:
            assert frag["measure"] == "fragility index" and frag["left_out"] == []
            assert frag["fragile"] == (frag["index"] == 1)
            if c["kind"] == "outcome":
                assert frag["index"] == _ref_index("outcome", [x == 1.0 for x in per_seed], c["direction"],
                                                   c["threshold"])
        else:
            assert frag["measure"] == "leave-one-out" and frag["index"] is None
            assert len(frag["left_out"]) == TINY.seeds
            assert frag["fragile"] == any(x != v for x in frag["left_out"])
            if c["kind"] in ("mean", "ratio", "identity", "paired"):  # paired: the t interval of the differences
                kind = "mean" if c["kind"] == "paired" else c["kind"]
                assert tuple(frag["left_out"]) == _ref_loo(kind, per_seed, c["direction"], c["threshold"])
        assert c["standing"] == ("fragile" if frag["fragile"] else f"robust {v}")
        assert (f"**{frag['shown']}**" if frag["fragile"] else f"| {frag['shown']} |") in line
    assert settled > 0
    standings = {s: sum(c["standing"] == s for c in doc["claims"]) for s in STANDINGS}
    assert doc["standings"] == standings and sum(standings.values()) == len(findings)
    assert doc["counts"] == {w: sum(c["verdict"] == w for c in doc["claims"])
                             for w in ("holds", "does not hold", "inconclusive")}
    counts_line = ", ".join(f"{n} {s}" for s, n in standings.items()) + f" (of {len(findings)}; fragile: "
    assert counts_line in table
    assert ("Verdicts alone: " + ", ".join(f"{n} {w}" for w, n in doc["counts"].items()) + ".") in table


def test_verdicts_follow_the_fixed_rule_on_the_interval_of_each_kind(report):
    _, findings = report
    for f in findings:
        assert f.verdict == verdict(f.measured, f.claim.direction, f.claim.threshold), f.id


def test_exact_identities_hold_even_at_tiny_scale(report):
    """Claims that are algebra, not statistics, must hold in any run (2a, 5b, 6a, 8a, 10, 12a, 12b)."""
    _, findings = report
    by_id = {f.id: f for f in findings}
    for cid in ("2a", "5b", "6a", "8a", "10", "12a", "12b"):
        assert by_id[cid].claim.kind == "identity"
        assert by_id[cid].verdict == "holds", (cid, by_id[cid].summary.shown)
    assert all(math.isclose(v, 10.0, rel_tol=1e-6) for v in by_id["12b"].per_seed)


def test_outcome_rows_count_the_runs_from_meta_json(report):
    """4a: the proportion of plain runs at the large lr whose final train accuracy is below TRAINED,
    read back from each run's meta.json, with its exact interval."""
    out, findings = report
    f = {x.id: x for x in findings}["4a"]
    failed = []
    for meta_path in (out / "runs").glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        c = meta["config"]
        if (c["scheme"], c["lr"], c["every"], c["quantities"], c["project_shift"]) == ("plain", 0.2, 3, "all", False):
            failed.append(meta["result"]["train_accuracy"] < TRAINED)
    assert len(failed) == TINY.seeds
    assert f.summary.interval.estimate == sum(failed) / len(failed)
    assert f.summary.shown.startswith(f"{sum(failed)}/{TINY.seeds} ")


def test_rerun_reuses_finished_runs(report):
    """Running the plan again (reproduce's first stage, ``run_plan``) trains nothing: every run
    directory is reused as it is, and every one of them is returned."""
    out, _ = report
    runs = sorted((out / "runs").iterdir())
    stamps = [(r / "meta.json").stat().st_mtime_ns for r in runs]
    again = run_plan(plan(TINY), out / "runs", progress=False)
    assert [(r / "meta.json").stat().st_mtime_ns for r in sorted((out / "runs").iterdir())] == stamps
    assert {r.path.resolve() for r in again.values()} == {r.resolve() for r in runs}


def test_attribution_rows_recomputed_from_the_run_directories(report):
    """Each A* value per seed is treatment minus control train accuracy, read back from meta.json;
    the report states every cause at both learning rates."""
    out, findings = report
    acc = {}
    for e in plan(TINY):
        if e.label.startswith("ctl:"):
            for lr in e.lrs:
                for s in e.seeds:
                    meta = json.loads((out / "runs" / run_name(e.base.replace(lr=lr, seed=s)) / "meta.json").read_text())
                    assert meta["config"]["model"] == TINY.attribution_model
                    acc[(e.label[4:], lr, s)] = meta["result"]["train_accuracy"]
    assert len(acc) == len(CONTROLS) * 2 * TINY.seeds
    by_id = {f.id: f for f in findings}
    for c in COMPARISONS:
        for tag, lr in (("large", TINY.lrs[1]), ("small", TINY.lr_small)):
            want = [acc[(c.treatment, lr, s)] - acc[(c.control, lr, s)] for s in range(TINY.seeds)]
            assert by_id[f"{c.key}-{tag}"].per_seed == pytest.approx(want, abs=1e-12)
            assert by_id[f"{c.key}-{tag}"].claim.kind == "paired"
    text = (out / "claims.md").read_text()
    assert "## Attribution: which causes the data supports" in text
    for c in COMPARISONS:
        assert text.count(f"- {c.cause}: ") == 2
    assert (out / "attribution.png").stat().st_size > 1000 and (out / "decomposition.png").stat().st_size > 1000


def test_cause_rows_recomputed_from_the_run_directories(report):
    """E1* / E2*: every distinct run at the large lr (main schemes and controls) records
    w.update_ratio; each row's statistic equals scikit-learn's AUC or scipy's Spearman of the
    early values and outcomes recomputed here from the run directories; the report names both causes."""
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    from varprobe.claims.causes import EARLY_STEPS, ROWS
    from varprobe.record import load_run

    out, findings = report
    lr = TINY.lrs[1]
    dirs = {}
    for e in plan(TINY):
        if e.label == "{scheme}" or e.label.startswith("ctl:"):
            for s in e.schemes or (e.base.scheme,):
                for seed in e.seeds:
                    if lr in e.lrs:
                        dirs[run_name(e.base.replace(scheme=s, lr=lr, seed=seed))] = seed
    assert len(dirs) == 11 * TINY.seeds  # 6 main schemes + 5 controls that are not main runs

    def early(f, q):
        f = f[(f.quantity == q) & (f["mode"] == "train") & f.module_type.str.contains("Conv") & (f.depth >= 1)]
        steps = sorted(s for s in f.step.unique() if s > 0)[:EARLY_STEPS]
        return f[f.step.isin(steps)].groupby("layer").value.mean().median()

    runs = []
    for name, seed in sorted(dirs.items()):
        run = load_run(out / "runs" / name)
        f = run.frame
        upd = f[(f.quantity == "w.update_ratio") & (f.step > 0)]
        assert len(upd) and np.isfinite(upd.value).all(), name  # every run records it
        conv = f[(f.quantity == "out.sq_mean") & (f["mode"] == "train") & f.module_type.str.contains("Conv")
                 & (f.depth >= 1)].pivot(index="step", columns="layer", values="value")
        share = f[f.quantity.isin(["dec.shift", "dec.measured"]) & (f.step > 0) & (f.depth >= 1)
                  & f.module_type.str.contains("Conv")]
        share = share.pivot_table(index=["step", "layer"], columns="quantity", values="value")
        share = (share["dec.shift"] / share["dec.measured"]).rename("value").reset_index()
        steps = sorted(share.step.unique())[:EARLY_STEPS]
        runs.append({"seed": seed, "shift": early(f, "gw.shift_ratio"), "update": early(f, "w.update_ratio"),
                     "share": share[share.step.isin(steps)].groupby("layer").value.mean().median(),
                     "collapse": run.meta["result"]["train_accuracy"] < TRAINED,
                     "growth": float(np.mean(np.log(conv.iloc[-1] / conv.iloc[0])))})
    by_id = {f.id: f for f in findings}
    for row in ROWS:
        got = by_id[row.id]
        assert got.summary.interval.n == len(runs)
        y = [r[row.outcome] for r in runs]
        score = {p: (roc_auc_score(y, [r[p] for r in runs]) if row.outcome == "collapse"
                     else stats.spearmanr([r[p] for r in runs], y).statistic) for p in row.predictors}
        want = score[row.predictors[0]] - (score[row.predictors[1]] if len(row.predictors) == 2 else 0.0)
        assert got.summary.interval.estimate == pytest.approx(want, abs=1e-12), row.id
        assert got.verdict == verdict(got.measured, ">", row.threshold)
    text = (out / "claims.md").read_text()
    for words in ("- the shift of the average gradient, as a predictor", "- the relative update size, i.e.",
                  "van Laarhoven 2017; Hoffer et al. 2018; Arora et al. 2019"):
        assert text.count(words) == 1  # at the one large learning rate
    assert "| E1d | " in text and "over 22 runs" in text


def test_figures_get_captions_computed_from_their_runs(report, tmp_path):
    """write_figures writes captions.json (one computed caption per figure), figures.md and the
    report's figure notes; publish copies them and rewrites only the gallery page's figure block."""
    from varprobe.claims.publish import BEGIN, END, publish
    from varprobe.claims.report import FIGURE_TITLES
    out, _ = report
    captions = json.loads((out / "captions.json").read_text())
    assert list(captions) == list(FIGURE_TITLES)
    for name, text in captions.items():
        assert (out / name).stat().st_size > 1000 and text.startswith(FIGURE_TITLES[name])
        assert any(ch.isdigit() for ch in text[len(FIGURE_TITLES[name]):])  # numbers read off the data
        assert f"- [{name}]({name}): {text}" in (out / "claims.md").read_text()
    assert f"seeds (peaks" in captions["amplification.png"]
    page = tmp_path / "gallery.md"
    page.write_text(f"intro\n{BEGIN}\nold\n{END}\noutro\n")
    publish(out, tmp_path / "figures", page)
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old" not in text
    assert all(f"(figures/{name})\n\n{v}" in text for name, v in captions.items())
    assert (tmp_path / "figures" / "amplification.png").read_bytes() == (out / "amplification.png").read_bytes()


# -- the report never writes over what varprobe did not write (issue 22, bug 1) --------------------
def test_reproduce_refuses_a_directory_holding_the_users_files_of_its_names(tmp_path, capsys):
    """Was: claims.md and shift.png replaced, every other report file written beside them. Now one
    line naming both, before anything runs; the directory is byte-identical, no runs/ started."""
    from varprobe.cli import main
    from varprobe.record.files import WriteRefused
    d = tmp_path / "d"
    d.mkdir()
    (d / "claims.md").write_text("notes")
    (d / "shift.png").write_text("fig")
    (d / "notes.txt").write_text("keep")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(WriteRefused, match=r"claims.md was not written by varprobe; shift.png was not written"):
        reproduce("tiny", d, progress=False, log=lambda _: None)
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "--out", str(d)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and "claims.md was not written by varprobe" in err[-1]
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_a_rerun_replaces_the_reports_own_files_and_nothing_else(report):
    from varprobe.record.files import MARK_NAME, OutputDir, WriteRefused
    from varprobe.claims.report import report_files
    out, _ = report
    mark = json.loads((out / MARK_NAME).read_text())
    assert mark["kind"] == "report" and set(mark["files"]) == set(report_files(TINY))
    assert "width-sweep.png" not in report_files(TINY) and "width-sweep.png" in report_files(PROFILES["quick"])
    OutputDir(out, "report").check(report_files())  # a rerun may replace every one of them
    claims = (out / "claims.md").read_bytes()
    try:
        (out / "claims.md").write_bytes(claims + b"\nmy annotation\n")
        with pytest.raises(WriteRefused, match="claims.md was changed since varprobe wrote it"):
            reproduce(TINY, out, progress=False, log=lambda _: None)
    finally:
        (out / "claims.md").write_bytes(claims)


# -- publish: names read off disk, and every mistake one line (issue 22, bugs 2 and 11) ---------------
def _publish_in(tmp_path, captions, page: str | None = "intro\n<!-- figures: written by python -m "
                "varprobe.claims.publish from captions.json; do not edit -->\nold\n<!-- /figures -->\n"):
    from varprobe.claims.publish import main
    out = tmp_path / "repo" / "out"
    out.mkdir(parents=True)
    (out / "captions.json").write_text(captions if isinstance(captions, str) else json.dumps(captions))
    (out / "a.png").write_bytes(b"png")
    (tmp_path / "repo" / "setup.py").write_text("setup()")
    if page is not None:
        (tmp_path / "repo" / "docs").mkdir(exist_ok=True)
        (tmp_path / "repo" / "docs" / "gallery.md").write_text(page)
    before = {str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    cwd = os.getcwd()
    os.chdir(tmp_path / "repo")
    try:
        code = main([str(out)])
    finally:
        os.chdir(cwd)
    after = {str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    return code, before, after


@pytest.mark.parametrize("captions,named", [
    ({"../../setup.py": "x"}, "'../../setup.py' leads outside"),
    ({"../setup.py": "x"}, "leads outside"),
    ({"/etc/passwd.png": "x"}, "leads outside"),
    ({"a.png": "x", "sub/../../../setup.png": "y"}, "leads outside"),
    (["a.png"], "must be a JSON object"),
    ({"a.png": 3}, "every caption must be a string"),
    ({"a.png": None}, "every caption must be a string"),
    ("{not json", "is not JSON"),
    ({"a.txt": "x"}, "is not a .png, .svg or .pdf file"),
])
def test_publish_refuses_what_captions_json_cannot_mean_and_writes_nothing(tmp_path, capsys, captions, named):
    code, before, after = _publish_in(tmp_path, captions)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and named in err[0], err
    assert after == before and not (tmp_path / "repo" / "docs" / "figures").exists()


def test_publish_without_the_gallery_page_is_one_line(tmp_path, capsys):
    code, before, after = _publish_in(tmp_path, {"a.png": "x"}, page=None)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "docs/gallery.md does not exist" in err[0]
    assert after == before


def test_publish_never_replaces_a_figure_it_did_not_write(tmp_path, capsys):
    docs = tmp_path / "repo" / "docs" / "figures"
    docs.mkdir(parents=True)
    (docs / "a.png").write_bytes(b"drawn by hand")
    code, before, after = _publish_in(tmp_path, {"a.png": "x"})
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "a.png was not written by varprobe" in err[0]
    assert after == before


# -- the floating-point path of the runs, in the report (issue 25) --------------------------------
def test_the_report_states_the_runs_floating_point_path(report):
    """Every run's meta.json records the path torch reports in this process at the profile's
    threads; the report prints it once (they agree) in the setting and in claims.json."""
    import torch
    out, _ = report
    metas = [json.loads(p.read_text()) for p in (out / "runs").glob("*/meta.json")]
    paths = [m["numeric_path"] for m in metas]
    assert all(p["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and p["torch"] == torch.__version__
               and p["threads"] == TINY.threads == m["threads"] for p, m in zip(paths, metas))
    doc = json.loads((out / "claims.json").read_text())["numeric_path"]
    assert doc["agree"] and doc["paths"] == [{"path": paths[0], "runs": len(metas)}]
    text = (out / "claims.md").read_text()
    setting = text.split("Statistics, fixed in code")[0]
    assert "Floating-point path (the same in every run's meta.json): CPU capability " \
           f"{paths[0]['cpu_capability']} on " in setting and f"torch {torch.__version__}" in setting
    assert f"{TINY.threads} thread(s)" in setting


def test_runs_that_took_different_paths_are_named_with_their_counts(tmp_path):
    from types import SimpleNamespace

    from varprobe.claims.report import numeric_paths, write_report
    from varprobe.record.files import OutputDir
    avx2 = {"cpu_capability": "AVX2", "threads": 1, "env": {}}
    avx512 = {"cpu_capability": "AVX512", "threads": 1, "env": {"ATEN_CPU_CAPABILITY": "avx512"}}
    runs = {i: SimpleNamespace(path=tmp_path / f"r{i % 4}", meta={"numeric_path": p})
            for i, p in enumerate([avx2, avx2, avx512, None, avx2])}  # r0 twice: counted once
    assert numeric_paths(runs) == [{"path": avx2, "runs": 2}, {"path": avx512, "runs": 1}, {"path": None, "runs": 1}]
    from varprobe.analysis import Interval
    from varprobe.claims import Finding
    from varprobe.claims.summary import Summary
    blank = Summary(Interval(math.nan, math.nan, math.nan, 2), "inconclusive", "-", [0.0, 0.0], None)
    out = OutputDir(tmp_path / "rep", "report")
    out.ensure()
    write_report([Finding(c, i, lr, blank) for c, i, lr in rows(TINY)], TINY, out, 1.0, runs)
    text = (tmp_path / "rep" / "claims.md").read_text()
    assert "**the runs differ**, 3 paths" in text and "(1) 2 runs: CPU capability AVX2" in text
    assert "(2) 1 runs: CPU capability AVX512" in text and "ATEN_CPU_CAPABILITY=avx512" in text
    assert "(3) 1 runs: not recorded" in text
    assert json.loads((tmp_path / "rep" / "claims.json").read_text())["numeric_path"]["agree"] is False


def test_publish_puts_a_standard_report_beside_the_quick_one_with_its_own_captions(tmp_path):
    """A report whose claims.json names the standard profile goes to figures/standard; the gallery
    keeps the quick figure and caption and adds the standard figure's own caption (was: a bare link,
    so the standard figures had no caption on the page, and publish wrote them over the quick ones)."""
    from varprobe.claims.publish import BEGIN, END, publish
    figures, page = tmp_path / "figures", tmp_path / "gallery.md"
    page.write_text(f"intro\n{BEGIN}\nold\n{END}\n")
    for profile, lr in (("quick", "0.02"), ("standard", "0.01")):
        out = tmp_path / profile
        out.mkdir()
        (out / "a.png").write_bytes(f"png {profile}".encode())
        (out / "captions.json").write_text(json.dumps({"a.png": f"A figure at lr {lr}."}))
        (out / "claims.json").write_text(json.dumps({"profile": {"name": profile}}))
        publish(out, figures, page)
    assert (figures / "a.png").read_bytes() == b"png quick" and (figures / "standard" / "a.png").read_bytes() == b"png standard"
    text = page.read_text()
    assert ("(figures/a.png)\n\nA figure at lr 0.02.\n\n[Standard profile](figures/standard/a.png): A figure at lr 0.01.\n"
            in text)
