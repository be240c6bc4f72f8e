"""The reproduce pipeline end to end at the smallest scale (the real --quick run is `make demo`)."""
import json
import math

import pytest

from varprobe.analysis import VERDICTS
from varprobe.experiment.attribution import COMPARISONS, CONTROLS
from varprobe.experiment.claims import CLAIMS, PROFILES, reproduce


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    findings = reproduce(PROFILES["tiny"], out, progress=False, log=lambda _: None)
    return out, findings


def test_every_claim_gets_a_row_with_a_verdict(report):
    out, findings = report
    doc = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in doc["claims"]] == [c.id for c in CLAIMS]
    for c in doc["claims"]:
        assert {"id", "claim", "quantity", "expected", "measured", "verdict", "figures"} <= set(c)
        assert c["verdict"] in VERDICTS
        assert c["measured"]["n"] == PROFILES["tiny"].seeds
        for fig in c["figures"]:
            assert (out / fig).stat().st_size > 1000
    table = (out / "claims.md").read_text()
    assert all(f"| {c.id} |" in table for c in CLAIMS)


def test_verdicts_follow_the_fixed_rule(report):
    _, findings = report
    for f in findings:
        lo, hi, t = f.measured.low, f.measured.high, f.claim.threshold
        expected_side = lo > t if f.claim.direction == ">" else hi < t
        other_side = hi <= t if f.claim.direction == ">" else lo >= t
        want = "holds" if expected_side else "does not hold" if other_side else "inconclusive"
        assert f.verdict == want, (f.claim.id, lo, hi, t)


def test_exact_identities_hold_even_at_tiny_scale(report):
    """Claims that are algebra, not statistics, must hold in any run (2a, 5b, 6a, 8a, 10, 12b)."""
    _, findings = report
    by_id = {f.claim.id: f for f in findings}
    for cid in ("2a", "5b", "6a", "8a", "10"):
        assert by_id[cid].verdict == "holds", (cid, by_id[cid].measured)
    assert all(math.isclose(v, 10.0, rel_tol=1e-6) for v in by_id["12b"].per_seed)


def test_rerun_reuses_finished_runs(report, tmp_path):
    out, _ = report
    runs = sorted((out / "runs" / "main").iterdir())
    stamps = [(r / "meta.json").stat().st_mtime_ns for r in runs]
    reproduce(PROFILES["tiny"], out, progress=False, log=lambda _: None)
    assert [(r / "meta.json").stat().st_mtime_ns for r in runs] == stamps


def test_attribution_rows_recomputed_from_the_run_directories(report):
    """Each A* value per seed is treatment minus control train accuracy, read back from meta.json;
    the report states every cause at both learning rates."""
    out, findings = report
    p = PROFILES["tiny"]
    acc = {}
    for meta_path in (out / "runs" / "attribution").glob("*/*/meta.json"):
        meta = json.loads(meta_path.read_text())
        acc[(meta_path.parent.parent.name, meta["config"]["lr"], meta["config"]["seed"])] = \
            meta["result"]["train_accuracy"]
        assert meta["config"]["model"] == p.attribution_model
    assert len(acc) == len(CONTROLS) * 2 * p.seeds
    by_id = {f.claim.id: f for f in findings}
    for c in COMPARISONS:
        for tag, lr in (("large", p.lr_large), ("small", p.lr_small)):
            want = [acc[(c.treatment, lr, s)] - acc[(c.control, lr, s)] for s in range(p.seeds)]
            assert by_id[f"{c.key}-{tag}"].per_seed == pytest.approx(want, abs=1e-12)
    text = (out / "claims.md").read_text()
    assert "## Attribution: which causes the data supports" in text
    for c in COMPARISONS:
        assert text.count(f"- {c.cause}: ") == 2
    assert (out / "attribution.png").stat().st_size > 1000 and (out / "decomposition.png").stat().st_size > 1000
