"""report/compare.py: a published set's claims rows beside the smoke profile's, and the verdicts of record
counted over every claims row (what a study's closing note states)."""
from __future__ import annotations

import json

import pytest

from lossbench.report import build, compare, site
from lossbench.report.claims import NOT_TESTABLE
from tests.report.test_build import write_fixture


def _row(verdict, measured=("d: +1 ± 0.5 (n=3)",)):
    return {"verdict": verdict, "measured": list(measured)}


@pytest.mark.parametrize("smoke, study, expected", [
    ("consistent", "reproduced", ""), ("consistent", "partly", ""), ("inconsistent", "not reproduced", ""),
    ("no signal", "not reproduced", ""), ("no signal", "partly", ""),
    ("consistent", "not reproduced", "changed"), ("inconsistent", "partly", "changed"),
    ("no signal", "reproduced", "changed"), ("consistent", NOT_TESTABLE, "changed"),
])
def test_change_flags_disagreeing_evidence(smoke, study, expected):
    assert compare.change(_row(smoke), _row(study)) == expected


def test_a_row_smoke_did_not_measure_is_new():
    assert compare.change(None, _row("reproduced")) == "new"
    assert compare.change(_row(NOT_TESTABLE, ["d: no runs"]), _row("reproduced")) == "new"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    smoke, published = write_fixture(root / "smoke"), root / "published"
    study = write_fixture(published / "study_set")
    for d, level in ((smoke, "smoke"), (study, "study")):
        prov = json.loads((d / "provenance.json").read_text())
        (d / "provenance.json").write_text(json.dumps({**prov, "evidence": level, "git_dirty": False}))
    return smoke, published, study


def test_compare_lists_every_measured_row_with_both_verdicts(folders):
    smoke, _, study = folders
    rows, counts = compare.compare(study, smoke)
    measured = [r for c in build.analyse(study, set_name=study.name).claims for r in c["rows"] if site._has_runs(r)]
    assert rows and len(rows) == len(measured) == sum(counts.values())
    assert {r["smoke"] for r in rows} <= {"consistent", "inconsistent", "no signal"}  # the same runs: all measured
    assert {r["set"] for r in rows} <= {"reproduced", "partly", "not reproduced", NOT_TESTABLE}
    assert all(r["change"] in ("", "changed") for r in rows) and any("MDE" in r["measured"] for r in rows)


def test_record_counts_cover_every_claims_row_once(folders):
    smoke, published, study = folders
    counts, rest = compare.record_counts(published, smoke)
    total = sum(len(c["rows"]) for c in build.analyse(smoke).claims)
    assert sum(counts.values()) == total
    record = site.of_record({study.name: build.analyse(study, set_name=study.name)})
    assert counts["smoke only"] == 0  # the fixture's smoke ran nothing the study did not
    assert sum(n for v, n in counts.items() if v in ("reproduced", "partly", "not reproduced")) + sum(
        r["verdict"] == NOT_TESTABLE and r["set"] == study.name for r in rest) == sum(len(v) for v in record.values())
    assert all(r["verdict"] == NOT_TESTABLE or r["set"].startswith("smoke") for r in rest)
