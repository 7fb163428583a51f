"""The published leaderboard site (report/site.py): every set listed and linked, per-track boards, and a
claims scoreboard with one row per paper whose verdicts link to the claims row of their set."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lossbench.report.build import build_report
from lossbench.report.claims import load_claims
from lossbench.report.site import build_site
from tests.report.test_build import TRACK, write_fixture

SETS = {"embedded_study": "study", "embedded_full": "full"}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    published = tmp_path_factory.mktemp("published")
    for name, level in SETS.items():
        d = write_fixture(published / name)
        prov = json.loads((d / "provenance.json").read_text())
        (d / "provenance.json").write_text(json.dumps({**prov, "evidence": level, "git_dirty": False}))
        build_report(d, d / "report", title=f"published: {name}")
    return build_site(published)


def test_every_set_is_listed_with_its_level_and_links_to_its_report(site):
    page = site.read_text()
    sets = page[page.index('<section id="sets">'):]
    for name, level in SETS.items():
        assert f'<a href="{name}/report/index.html">{name}</a>' in sets
        assert re.search(rf"{name}</a></td><td>{TRACK}</td><td>{level}</td>", sets)
        assert (site.parent / name / "report" / "index.html").exists()


def test_each_track_has_a_leaderboard_per_set(site):
    page = site.read_text()
    for name in SETS:
        assert f'id="glance-{TRACK}-{name}"' in page
    assert page.index(f'id="track-{TRACK}"') < page.index('id="claims"')


def test_claims_scoreboard_has_one_row_per_paper_linking_to_its_evidence(site):
    page = site.read_text()
    board = page[page.index('<section id="claims">'):page.index('<section id="sets">')]
    body = board[board.index("<tbody>"):board.index("</tbody>")]
    entries = load_claims()
    assert body.count("<tr>") == len(entries)
    for entry in entries:  # each paper links its own page
        assert f'<a href="{entry["url"]}">' in body
    assert "verdict at level “study”" in board and "verdict at level “full”" in board
    links = re.findall(r'<a href="([^"#]+)#(claim-[^"]+)">', body)
    assert links, "the fixture's long-tailed dataset measures some claims"
    for path, anchor in links:  # every verdict links to an existing claims row
        assert f'id="{anchor}"' in (site.parent / path).read_text()
    assert "v-consistent" not in body and "v-no-signal" not in body  # published sets give verdicts of record


def test_a_smoke_report_points_each_claim_to_its_verdict_of_record(site, tmp_path):
    """The site writes verdicts_of_record.json (largest scale first: the full set over the study one);
    attach_records gives a smoke report's claims rows that verdict with a link that resolves."""
    from lossbench.report.build import analyse, attach_records
    from lossbench.report.site import RECORD_FILE

    records = json.loads((site.parent / RECORD_FILE).read_text())
    assert records and all(rec["set"] == "embedded_full" and rec["level"] == "full"
                           for rows in records.values() for rec in rows.values())
    a = analyse(site.parent / "embedded_study")
    out = tmp_path / "smoke_report"
    attach_records(a.claims, out, site.parent)
    linked = [r["of_record"] for c in a.claims for r in c["rows"] if "of_record" in r]
    assert len(linked) == sum(len(rows) for rows in records.values())
    for rec in linked:
        path, anchor = rec["link"].split("#")
        assert f'id="{anchor}"' in (out / path).resolve().read_text()
