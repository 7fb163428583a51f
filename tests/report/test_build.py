"""Report build on a small synthetic results folder, with a golden leaderboard table.

Fixture: one track, 2 datasets × 3 methods × 3 seeds; gce diverges on digits_lt10 seed 2 and
logit_adjust has no run on digits_sym40 seed 1. Values are arithmetic (no RNG), so the golden
table is stable. Regenerate it on purpose with LOSSBENCH_REGEN_GOLDEN=1 and review the diff.
"""
import json
import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from lossbench.report import claims, screenshot
from lossbench.report.build import build_report, main

GOLDEN = Path(__file__).with_name("golden") / "leaderboard_fixture.md"
TRACK = "clf_fixture"
DATASETS = {"digits_lt10": "digits, long-tailed ρ=10",
            "digits_sym40": "digits, 40% symmetric noise"}
METHODS = {"erm": {}, "logit_adjust": {"tau": 1.0}, "gce": {"q": 0.7}}
EFFECT = {("digits_lt10", "logit_adjust"): 0.05, ("digits_lt10", "gce"): -0.04,
          ("digits_sym40", "logit_adjust"): 0.005, ("digits_sym40", "gce"): 0.06}
SEED_SHIFT = [0.0, 0.03, -0.02]  # shared by all methods of a seed: the paired part
JITTER = {"erm": [0.0, 0.004, -0.003], "logit_adjust": [0.003, -0.002, 0.001],
          "gce": [-0.004, 0.009, 0.005]}  # per-run noise: the unpaired part
DIVERGED = ("digits_lt10", "gce", 2)
MISSING = ("digits_sym40", "logit_adjust", 1)
COUNTS = {"digits_lt10": [120, 60, 25, 12], "digits_sym40": [90, 90, 90, 90]}


def _score(dataset, method, seed):
    jitter = JITTER[method][seed if dataset == "digits_lt10" else 2 - seed]
    return 0.6 + EFFECT.get((dataset, method), 0.0) + SEED_SHIFT[seed] + jitter


def _metrics(dataset, method, seed):
    v = _score(dataset, method, seed)
    few = v - 0.2 if dataset == "digits_lt10" else math.nan  # no "few" classes without a tail
    return {"test/accuracy": v + 0.02, "test/balanced_accuracy": v,
            "test/worst_class_accuracy": v - 0.3, "test/macro_f1": v - 0.01,
            "test/acc_many": v + 0.1, "test/acc_medium": v, "test/acc_few": few,
            "test/ece": 0.1 - (v - 0.6) / 2, "test/nll": 1.5 - v, "val/balanced_accuracy": v + 0.01,
            "train/wall_seconds": 10.0 + seed, "train/samples_per_second": 1000.0 - 10 * seed}


def _runs():
    for dataset in DATASETS:
        for method in METHODS:
            for seed in range(3):
                if (dataset, method, seed) != MISSING:
                    yield dataset, method, seed, (dataset, method, seed) == DIVERGED


def write_fixture(d: Path) -> Path:
    summary, curves, per_class, runs = [], [], [], []
    for dataset, method, seed, diverged in _runs():
        key = {"track": TRACK, "dataset": dataset, "method": method, "seed": seed}
        for metric, value in _metrics(dataset, method, seed).items():
            summary.append({**key, "track_version": 1, "method_version": 1, "metric": metric,
                            "value": math.nan if diverged else value, "run_id": f"r{len(runs)}",
                            "status": "diverged" if diverged else "ok"})
        for step in range(0, 60, 10):
            loss = 1e6 * step if diverged else 2.0 / (1 + step / 10) + 0.01 * seed
            curves.append({**key, "step": step, "epoch": step // 20, "metric": "train/loss",
                           "value": loss})
            curves.append({**key, "step": step, "epoch": step // 20,
                           "metric": "val/balanced_accuracy",
                           "value": _score(dataset, method, seed) * (1 - 0.5 / (1 + step / 10))})
        for cls, count in enumerate(COUNTS[dataset]):
            per_class.append({**key, "class": cls, "train_count": count,
                              "test_recall": min(1.0, _score(dataset, method, seed) + count / 400)})
        runs.append({**key, "status": "diverged" if diverged else "ok", "hparams": METHODS[method],
                     "method_version": 1, "track_version": 1, "run_id": f"r{len(runs)}",
                     "wall_seconds": 10.0 + seed, "device": "cpu"})
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(summary).to_csv(d / "summary.csv", index=False)
    pd.DataFrame(curves).to_csv(d / "curves.csv", index=False)
    pd.DataFrame(per_class).to_csv(d / "per_class.csv", index=False)
    (d / "runs.json").write_text(json.dumps(runs))
    (d / "provenance.json").write_text(json.dumps({
        "profile": "fixture", "command": "snakemake --profile profiles/fixture",
        "git_commit": "0123456789abcdef0123456789abcdef01234567", "git_dirty": True,
        "versions": {"python": "3.11", "torch": "2.x"}, "hardware": "test CPU",
        "created": "2025-01-01T00:00:00",
        "tracks": {TRACK: {"version": 1, "baseline": "erm", "seeds": [0, 1, 2],
                           "datasets": DATASETS, "budget": {"steps": 50, "batch_size": 32}}}}))
    (d / "methods.json").write_text(json.dumps({
        m: {"kind": "loss", "paper": f"{m} paper", "url": f"https://example.org/{m}",
            "docs": "docs/methods/erm.md", "summary": f"{m} summary", "version": 1, "defaults": hp}
        for m, hp in METHODS.items()}))
    return d


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    out = root / "site"
    index = build_report(write_fixture(root / "results"), out, title="Fixture report",
                         note="synthetic numbers")
    return out, index.read_text()


def test_html_has_leaderboard_rows_missing_and_diverged(built):
    out, html = built
    for method in METHODS:
        assert f'href="https://example.org/{method}">{method}</a>' in html
    assert "q=0.7" in html and "tau=1.0" in html  # hyperparameters from runs.json
    assert "—" in html  # acc_few is undefined on the noisy dataset
    assert html.count(">diverged</th>") == 1  # only digits_lt10 has a diverged run
    assert '<td class="num warn">1</td>' in html
    assert "▲" in html and "▼" in html
    assert "digits, long-tailed ρ=10" in html and "steps=50, batch_size=32" in html


def test_claims_are_the_last_section(built):
    _, html = built
    assert html.rfind("<section") == html.find('<section id="claims">')
    claims = html[html.find('<section id="claims">'):]
    assert "Menon et al." in claims and "logit_adjust" in claims
    assert "reproduced" in claims and "no runs" in claims  # e.g. mnist1d_lt100 is absent
    assert "git commit" in html[html.find("</main>"):]  # provenance footer after the sections


def test_figures_exist_and_are_linked(built):
    out, html = built
    for dataset in DATASETS:
        for kind in ("bar", "per_class", "curves"):
            rel = f"figures/{TRACK}__{dataset}__{kind}.png"
            assert (out / rel).stat().st_size > 1000
            assert f'src="{rel}"' in html
    assert (out / "tables" / f"{TRACK}.csv").exists()


def test_golden_leaderboard_table(built):
    out, _ = built
    got = (out / "tables" / f"{TRACK}.md").read_text()
    if os.environ.get("LOSSBENCH_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text(), "leaderboard changed; rerun with LOSSBENCH_REGEN_GOLDEN=1"


def test_cli_builds(tmp_path):
    results = write_fixture(tmp_path / "results")
    main([str(results), str(tmp_path / "site"), "--title", "CLI"])
    assert "<title>CLI</title>" in (tmp_path / "site" / "index.html").read_text()


@pytest.mark.skipif(screenshot.find_browser() is None, reason="no Chromium installed")
def test_screenshot(built, tmp_path):
    out, _ = built
    png = screenshot.screenshot(out / "index.html", tmp_path / "shot.png", height=1200)
    assert png.stat().st_size > 10_000


def _cell(name, mean, half, n=3):
    return {"dataset": name, "track": "t", "n": n, "mean": mean, "low": mean - half,
            "high": mean + half}


@pytest.mark.parametrize("cells, direction, expected", [
    ([_cell("a", 0.05, 0.01), _cell("b", 0.03, 0.02)], "higher", "reproduced"),
    ([_cell("a", 0.05, 0.01), _cell("b", 0.01, 0.02)], "higher", "partly"),
    ([_cell("a", 0.01, 0.02), _cell("b", 0.01, 0.03)], "higher", "partly"),
    ([_cell("a", -0.05, 0.01), _cell("b", 0.01, 0.03)], "higher", "not reproduced"),
    ([_cell("a", -0.05, 0.01)], "lower", "reproduced"),
    ([_cell("a", 0.0, 0.0, n=0)], "higher", "not testable at this scale"),
    ([_cell("a", 0.001, 0.005), _cell("b", -0.002, 0.004)], "equal", "reproduced"),
    ([_cell("a", 0.001, 0.05)], "equal", "partly"),
    ([_cell("a", 0.05, 0.01)], "equal", "not reproduced"),
    # two paired seeds: a null result says nothing, a significant one still counts
    ([_cell("a", -0.01, 0.5, n=2)], "higher", "not testable at this scale"),
    ([_cell("a", 0.01, 0.5, n=2)], "higher", "not testable at this scale"),
    ([_cell("a", 0.05, 0.01, n=2)], "higher", "reproduced"),
    ([_cell("a", -0.05, 0.01, n=2)], "higher", "not reproduced"),
])
def test_verdict_rule(cells, direction, expected):
    label, reason = claims.verdict(cells, direction, margin=0.01)
    assert label == expected and reason
    if expected == "not reproduced" and direction == "higher":
        assert "significantly opposite on a" in reason


def test_preference_views_select_on_validation_and_respect_the_kl_budget():
    from lossbench.report import preference as pv

    rows = []
    for seed in (0, 1):
        for method, variant, val_win, val_kl, val_gold, test_win in [
                ("dpo", "b0.1", 0.8, 9.0, 0.9, 0.6), ("dpo", "b1.0", 0.7, 2.0, 0.5, 0.9),
                ("kto", "b0.1", 0.6, 5.0, 0.4, 0.5), ("kto", "b1.0", 0.65, 4.0, 0.3, 0.5)]:
            for metric, value in {"val/win_rate": val_win, "val/kl": val_kl, "val/gold_reward": val_gold,
                                  "test/win_rate": test_win}.items():
                rows.append({"method": method, "variant": variant, "seed": seed, "metric": metric, "value": value})
    df = pd.DataFrame(rows)
    kinds = {"dpo": "pairwise", "kto": "unpaired"}
    # chosen on validation, whatever the test numbers say
    assert pv.select(df, "best", 3.0, kinds) == {"dpo": "b0.1", "kto": "b1.0"}
    # within budget only; kto has no variant with val KL <= 3
    assert pv.select(df, "matched-kl", 3.0, kinds) == {"dpo": "b1.0"}
    assert pv.select(df, "unlearning", 3.0, kinds) == {}


def _grok_summary(gain: float) -> pd.DataFrame:
    rows = [{"track": "grokking", "dataset": "d", "method": m, "seed": s, "metric": "test/max_accuracy",
             "value": 0.01 + (gain + 0.001 * s if m == "stablemax" else 0.0), "status": "ok"}
            for m in ("erm", "stablemax") for s in range(3)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("steps, gain, expected", [
    (5000, -0.002, "not testable at this scale"),  # too short to show the effect: no verdict
    (5000, 0.5, "reproduced"),                  # a short run that shows it still counts
    (20000, -0.002, "not reproduced"),             # long enough: a null result is a null result
])
def test_claim_needing_a_longer_budget(steps, gain, expected):
    entry = {"paper": "p", "url": "https://example.org/p", "methods": ["stablemax"], "claim": "c", "tests": [
        {"track": "grokking", "datasets": ["d"], "metric": "test/max_accuracy", "baseline": "erm",
         "direction": "higher", "min_steps": {"steps": 20000, "why": "slow"}}]}
    prov = {"tracks": {"grokking": {"budget": {"short": {"budget": {"steps": steps}}}}}}
    row = claims.evaluate([entry], _grok_summary(gain), 0.95, {}, provenance=prov)[0]["rows"][0]
    assert row["verdict"] == expected
    if expected.startswith("not testable"):
        assert "5,000 steps" in row["reason"] and "20,000" in row["reason"] and "slow" in row["reason"]


def test_claim_reads_only_its_track_and_pairs_where_both_ran():
    rows = [{"track": t, "dataset": d, "method": m, "seed": s, "metric": "test/accuracy",
             "value": 0.5 + (0.1 + 0.01 * s if m == "kd" else 0.0), "status": "ok"}
            for t, d, ms in (("classification", "a_lt", ("erm", "kd")), ("classification", "b_sym", ("erm",)),
                             ("lm", "corpus", ("erm", "kd")))
            for m in ms for s in range(3)]
    entry = {"paper": "p", "url": "https://example.org/p", "methods": ["kd"], "claim": "c", "tests": [
        {"track": "classification", "datasets": ["*"], "metric": "test/accuracy", "baseline": "erm",
         "direction": "higher"}]}
    row = claims.evaluate([entry], pd.DataFrame(rows), 0.95, {})[0]["rows"][0]
    assert row["verdict"] == "reproduced"
    assert "corpus" not in row["reason"] + " ".join(row["measured"])  # another track's dataset
    assert "b_sym: no runs" in row["measured"]  # kd did not run there: not "no finite values"


def test_claims_table_links_each_paper_to_its_own_url(built):
    """Every claims-table row group links the entry's own url (never a method's: the fixture's
    methods.json points every method at example.org), in claims.yaml order."""
    import html as html_mod
    import re

    _, html = built
    section = html[html.find('<section id="claims">'):html.find("</section>", html.find('<section id="claims">'))]
    linked = [(html_mod.unescape(url), html_mod.unescape(paper)) for url, paper in
              re.findall(r'<td colspan="\d+"><a href="([^"]*)">([^<]*)</a>', section)]
    entries = claims.load_claims()
    assert linked == [(e["url"], e["paper"]) for e in entries]
    assert "example.org" not in section and "wikipedia" not in section


def test_smoke_report_opens_with_banner_and_glance_and_gives_no_verdict_of_record(tmp_path):
    """A smoke-level results folder: banner first, each track opens with its at-a-glance leaderboard and
    critical-difference diagram (2 datasets), and the claims read as direction checks only."""
    results = write_fixture(tmp_path / "results")
    prov = json.loads((results / "provenance.json").read_text())
    (results / "provenance.json").write_text(json.dumps({**prov, "profile": "smoke", "evidence": "smoke"}))
    page = build_report(results, tmp_path / "out").read_text()
    assert 'id="smoke-banner"' in page
    track = page[page.index(f'<section id="track-{TRACK}">'):]
    assert track.index(f'id="glance-{TRACK}"') < track.index("<details") < track.index(f'id="{TRACK}--')
    assert (tmp_path / "out" / "figures" / f"{TRACK}__critical_difference.png").exists()
    glance = track[track.index(f'id="glance-{TRACK}"'):track.index("</table>")]
    assert [m for m in re.findall(r'<td class="method" data-v="([^"]+)"', glance)][0] == "logit_adjust"
    claims = page[page.index('<section id="claims">'):]
    verdicts = set(re.findall(r'class="verdict v-([a-z-]+)"', claims))
    # direction checks only; a claim with nothing run here is not testable at this scale, as at every level
    assert verdicts & {"consistent", "inconsistent", "no-signal"}
    assert verdicts <= {"consistent", "inconsistent", "no-signal", "not-testable-at-this-scale"}


def test_validation_selected_column_follows_the_main_metric(tmp_path):
    """Runs with test_valsel/* (issue 19): the default layout shows "Bal. acc. @ best val (%)" right after
    the main metric, which stays the last step's balanced accuracy (it still sorts the table)."""
    from lossbench.report import tables
    from lossbench.tasks.classification import VALSEL_METRICS

    layout = tables.load_layout()
    default = tables.track_layout(layout, TRACK)  # a track not listed: the default (classification) layout
    assert default["main_metric"] == "test/balanced_accuracy" == default["columns"][0]
    assert default["columns"][1] == "test_valsel/balanced_accuracy"
    assert set(VALSEL_METRICS) <= set(layout["metrics"])  # every metric evaluation writes has its metadata
    results = write_fixture(tmp_path / "results")
    summary = pd.read_csv(results / "summary.csv")
    sel = summary[summary.metric == "test/balanced_accuracy"].assign(
        metric="test_valsel/balanced_accuracy", value=lambda d: d.value - 0.01)
    pd.concat([summary, sel], ignore_index=True).to_csv(results / "summary.csv", index=False)
    build_report(results, tmp_path / "out")
    table = (tmp_path / "out" / "tables" / f"{TRACK}.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| method |"))
    assert header.startswith("| method | Bal. acc. (%) | Bal. acc. @ best val (%) | Acc. (%) |")
    first = table[table.index("| --- |"):].splitlines()[1]
    assert first.startswith("| logit_adjust | **65.4 ± 5.8 (3) ▲** | **64.4 ± 5.8 (3) ▲** |")
