"""Claims verdicts that carry their evidence (issue 18): the evidence level of a results folder,
the smoke level's direction check (never "reproduced"), Holm over one claims entry, and the
evidence string each row names. Hand-made cells and summaries, so every verdict is checked by hand."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lossbench import config as lbconfig
from lossbench.report import claims, kernels
from lossbench.report.claims import (CONSISTENT, INCONSISTENT, NO_SIGNAL, NOT_REPRODUCED, NOT_TESTABLE, PARTLY,
                                     REPRODUCED)

ROOT = lbconfig.ROOT
STUDY_LABELS = {REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_TESTABLE}


def _cell(name, mean, half, n=3, **extra):
    return {"dataset": name, "track": "t", "n": n, "mean": mean, "low": mean - half, "high": mean + half, **extra}


def _entry(datasets, direction="higher", **test):
    return {"paper": "p", "url": "https://example.org/p", "methods": ["m"], "claim": "c", "tests": [
        {"track": "t", "datasets": list(datasets), "metric": "acc", "baseline": "erm", "direction": direction,
         **test}]}


def _summary(diffs: dict[str, list[float]], track="t") -> pd.DataFrame:
    """Tidy rows: per dataset, erm at 0.5 + a seed shift and m at erm + the given per-seed difference."""
    rows = []
    for dataset, ds in diffs.items():
        for seed, d in enumerate(ds):
            base = 0.5 + 0.03 * seed
            rows += [{"track": track, "dataset": dataset, "method": "erm", "seed": seed, "metric": "acc",
                      "value": base, "status": "ok"},
                     {"track": track, "dataset": dataset, "method": "m", "seed": seed, "metric": "acc",
                      "value": base + d, "status": "ok"}]
    return pd.DataFrame(rows)


SMOKE = {"profile": "smoke", "evidence": "smoke",
         "tracks": {"t": {"seeds": [0, 1, 2], "budget": {"mlp_adam": {
             "budget": {"steps": 400, "batch_size": 128}, "model": {"name": "mlp", "hidden": [128, 128]}}}}}}


# --------------------------------------------------------------------------- smoke: direction check

@pytest.mark.parametrize("cells, direction, expected", [
    # significant in the claimed direction somewhere, opposite nowhere (a mean alone is no signal)
    ([_cell("a", 0.05, 0.01), _cell("b", 0.03, 0.02)], "higher", CONSISTENT),
    ([_cell("a", 0.05, 0.01), _cell("b", -0.002, 0.03)], "higher", CONSISTENT),
    ([_cell("a", -0.05, 0.01)], "lower", CONSISTENT),
    # significantly opposite somewhere, in the claimed direction nowhere
    ([_cell("a", -0.05, 0.01), _cell("b", 0.002, 0.03)], "higher", INCONSISTENT),
    ([_cell("a", 0.05, 0.01)], "lower", INCONSISTENT),
    # nothing significant (whatever the means), significant both ways; nothing to test is no null
    ([_cell("a", 0.01, 0.05), _cell("b", 0.002, 0.03)], "higher", NO_SIGNAL),
    ([_cell("a", -0.01, 0.05), _cell("b", -0.002, 0.03)], "higher", NO_SIGNAL),
    ([_cell("a", 0.05, 0.01), _cell("b", -0.05, 0.01)], "higher", NO_SIGNAL),
    ([_cell("a", 0.0, 0.0, n=0)], "higher", NOT_TESTABLE),
    # an "≈ baseline" claim (margin 0.01)
    ([_cell("a", 0.001, 0.005), _cell("b", -0.002, 0.004)], "equal", CONSISTENT),
    ([_cell("a", 0.05, 0.01)], "equal", INCONSISTENT),
    ([_cell("a", 0.03, 0.05)], "equal", NO_SIGNAL),
])
def test_direction_check_labels(cells, direction, expected):
    label, reason = claims.verdict(cells, direction, margin=0.01, evidence="smoke")
    assert label == expected and reason
    if expected == INCONSISTENT and direction == "higher" and any(c["high"] < 0 for c in cells):
        assert "significantly opposite on a" in reason


@pytest.mark.parametrize("half", [0.0, 0.001, 0.01, 0.1])
@pytest.mark.parametrize("mean", [-0.1, 0.0, 0.1])
@pytest.mark.parametrize("direction", ["higher", "lower", "equal"])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 10])
def test_smoke_never_yields_a_study_verdict(mean, half, direction, n):
    label, _ = claims.verdict([_cell("a", mean, half, n=n), _cell("b", 2 * mean, half, n=n)], direction,
                              margin=0.01, evidence="smoke")
    assert label in {CONSISTENT, INCONSISTENT, NO_SIGNAL} or (label == NOT_TESTABLE and n == 0)


def test_smoke_evaluate_reads_consistent_where_a_study_reads_reproduced():
    summary = _summary({"a": [0.10, 0.11, 0.12], "b": [0.08, 0.09, 0.07]})
    study = claims.evaluate([_entry("ab")], summary, 0.95, {})[0]["rows"][0]
    smoke = claims.evaluate([_entry("ab")], summary, 0.95, {}, provenance=SMOKE)[0]["rows"][0]
    assert study["verdict"] == REPRODUCED and study["evidence_level"] == "study"
    assert smoke["verdict"] == CONSISTENT and smoke["evidence_level"] == "smoke"
    assert smoke["verdict_class"] == "consistent" and study["verdict_class"] == "reproduced"


def test_smoke_rows_without_a_test_or_with_a_reason_read_not_testable():
    """Nothing to test (a reason, a short budget, no test) is "not testable", never a measured "no signal"."""
    summary = _summary({"a": [0.10, 0.11, 0.12]})
    reasoned = _entry("a") | {"not_testable_reason": "needs CIFAR"}
    short = _entry("a", min_steps={"steps": 5000, "why": "slow"})
    no_test = {k: v for k, v in _entry("a").items() if k != "tests"}
    out = claims.evaluate([reasoned, short, no_test], summary, 0.95, {}, provenance=SMOKE)
    labels = [c["rows"][0]["verdict"] for c in out]
    assert labels == [NOT_TESTABLE, NOT_TESTABLE, NOT_TESTABLE]
    assert "needs CIFAR" in out[0]["rows"][0]["reason"]
    assert "400 steps" in out[1]["rows"][0]["reason"] and "consistent" in out[1]["rows"][0]["reason"]


def test_a_time_to_event_metric_no_run_reached_says_so():
    """All-NaN values of a metric that is undefined until an event happens read not testable with the
    metric's own reason (the event lies beyond the budget), not a bare "no finite values"."""
    summary = _summary({"a": [float("nan")] * 3})
    summary["value"] = float("nan")
    meta = {"acc": {"undefined_when": "no run reached the target"}}
    for metrics, expected in ((meta, "no run reached the target: the event lies beyond this scale's budget"),
                              ({}, "no finite values")):
        row = claims.evaluate([_entry("a")], summary, 0.95, metrics, provenance=SMOKE)[0]["rows"][0]
        assert row["verdict"] == NOT_TESTABLE and row["reason"] == expected


def test_every_smoke_row_of_the_claims_file_is_a_direction_check():
    """All of claims.yaml on a made-up smoke summary: no row says reproduced, partly or not reproduced
    (rows with nothing to test say not testable, as at every level)."""
    rng = np.random.default_rng(0)
    entries = claims.load_claims()
    rows = []
    for e in entries:
        for t in e.get("tests") or ([e["test"]] if e.get("test") else []):
            if "bench" in t:
                continue
            for d in t["datasets"]:
                for m in [*e["methods"], t["baseline"]]:
                    for s in range(3):
                        rows.append({"track": t.get("track", "classification"), "dataset": d.replace("*", "x"),
                                     "method": m, "seed": s, "metric": t["metric"],
                                     "value": rng.normal(0.5 if m == t["baseline"] else 0.6, 0.01), "status": "ok"})
    summary = pd.DataFrame(rows).drop_duplicates(["track", "dataset", "method", "seed", "metric"])
    out = claims.evaluate(entries, summary, 0.95, {}, provenance=SMOKE)
    labels = {r["verdict"] for c in out for r in c["rows"]}
    assert labels <= {CONSISTENT, INCONSISTENT, NO_SIGNAL, NOT_TESTABLE} and CONSISTENT in labels
    assert not labels & (STUDY_LABELS - {NOT_TESTABLE})


def test_kernel_claims_follow_the_smoke_mapping():
    def table(*impls):
        rows = []
        for impl, (median, low, high) in impls:
            for metric, x in {"t_fwbw_ms": median, "t_fwbw_ci_low_ms": low, "t_fwbw_ci_high_ms": high}.items():
                rows.append(dict(track="kernels", slice="s", bench="linear_ce", impl=impl, device="cpu",
                                 dtype="bfloat16", n=8192, v=256000, d=2304, reduction="mean", ignore_frac=0.0,
                                 seed=0, unit="", status="ok", note="", metric=metric, value=x))
        return pd.DataFrame(rows)

    test = {"bench": "linear_ce", "where": {"v": 256000}, "metric": "t_fwbw_ms", "baseline": "ce_eager",
            "direction": "lower"}
    base = ("ce_eager", (200, 195, 210))
    fast, close, slow = table(base, ("cce", (135, 130, 140))), table(base, ("cce", (190, 180, 199))), \
        table(base, ("cce", (300, 290, 310)))
    assert kernels.claim_row("cce", test, {}, fast)["verdict"] == REPRODUCED  # the default level: study
    assert kernels.claim_row("cce", test, {}, fast, evidence="smoke")["verdict"] == CONSISTENT
    assert kernels.claim_row("cce", test, {}, close, evidence="smoke")["verdict"] == CONSISTENT
    assert kernels.claim_row("cce", test, {}, slow, evidence="smoke")["verdict"] == INCONSISTENT
    assert kernels.claim_row("cce", test, {}, None, evidence="smoke")["verdict"] == NOT_TESTABLE
    row = claims.evaluate([_entry("a") | {"tests": [test | {"track": "kernels"}], "methods": ["cce"]}],
                          _summary({}), 0.95, {}, fast, SMOKE)[0]["rows"][0]
    assert row["verdict"] == CONSISTENT and row["evidence"].startswith("smoke profile · kernels: linear_ce on cpu")


# ------------------------------------------------------------------------------------ Holm

MARGINAL = [0.10, 0.12, 0.08]  # t = 0.1 / (0.02 / √3) ≈ 8.7 on 2 df: p ≈ 0.013 alone
NULLS = {f"n{i}": [0.02 * (-1) ** i, -0.03, 0.01] for i in range(7)}


def test_holm_turns_a_marginal_single_dataset_into_not_significant():
    alone = claims.evaluate([_entry(["d0"])], _summary({"d0": MARGINAL}), 0.95, {})[0]["rows"][0]
    assert alone["verdict"] == REPRODUCED and alone["measured"][0].endswith("✓")

    summary = _summary({"d0": MARGINAL, **NULLS})
    row = claims.evaluate([_entry(["d0", *NULLS])], summary, 0.95, {})[0]["rows"][0]
    d0 = row["measured"][0]
    assert d0.startswith("d0: +0.100 ± ")  # the uncorrected CI still excludes zero ...
    raw = claims._cells(summary, "m", _entry(["d0"])["tests"][0], 0.95)[0]
    assert raw["low"] > 0 and raw["p"] < 0.05
    assert "p_Holm 0.1" in d0 and not d0.endswith("✓")  # ... but 8 tests: p_Holm = 8 p > 0.05
    assert row["verdict"] == NOT_REPRODUCED and "none significantly opposite" in row["reason"]


def test_the_holm_family_is_the_whole_entry():
    """Two tests (here: two methods) of one entry share the family; separate entries do not."""
    summary = pd.concat([_summary({"d0": MARGINAL}),
                         _summary({"d0": [0.01, -0.02, 0.015]}).replace({"method": {"m": "k"}})])
    summary = summary.drop_duplicates(["track", "dataset", "method", "seed", "metric"])
    two = _entry(["d0"]) | {"methods": ["m", "k"]}
    rows = claims.evaluate([two], summary, 0.95, {})[0]["rows"]
    (cell_m,) = claims.adjust(claims._cells(summary, "m", two["tests"][0], 0.95), 0.95)
    assert rows[0]["measured"][0].endswith("✓") == (cell_m["p"] * 2 < 0.05)
    assert f"p_Holm {min(1.0, 2 * cell_m['p']):.2g}" in rows[0]["measured"][0]
    one = claims.evaluate([_entry(["d0"])], summary, 0.95, {})[0]["rows"][0]
    assert f"p_Holm {cell_m['p']:.2g}" in one["measured"][0]


def test_the_rules_state_holm_and_their_labels():
    for level in ("smoke", "study", "full"):
        text = claims.rule(level)
        assert "Holm" in text and "uncorrected" in text and level in text
    assert all(f"<b>{v}</b>" in claims.rule("smoke") for v in (CONSISTENT, INCONSISTENT, NO_SIGNAL))
    assert "<b>reproduced</b>" not in claims.rule("smoke")
    assert all(f"<b>{v}</b>" in claims.rule("study") for v in STUDY_LABELS)
    assert claims.RULE == claims.rule("study")
    assert claims.VERDICT_CLASS[NOT_TESTABLE] == "not-testable-at-this-scale"
    assert claims.VERDICT_CLASS[NO_SIGNAL] == "no-signal"


# ------------------------------------------------------------------------------- evidence level

def test_evidence_level_fallbacks(tmp_path, monkeypatch):
    assert claims.evidence_level({"profile": "smoke", "evidence": "full"}) == "full"  # provenance first
    # the committed published sets predate the key: their profile's config in this checkout says it
    assert claims.evidence_level({"profile": "full"}) == "full"
    assert claims.evidence_level({"profile": "full_cpu"}) == "study"
    assert claims.evidence_level({"profile": "no_such_profile"}) == "study"
    assert claims.evidence_level(None) == "study" and claims.evidence_level({}) == "study"
    assert claims.evidence_level({"profile": "../../etc/passwd"}) == "study"
    # no config file: smoke by name, study otherwise
    monkeypatch.setattr(lbconfig, "ROOT", tmp_path)
    assert claims.evidence_level({"profile": "smoke"}) == "smoke"
    assert claims.evidence_level({"profile": "full"}) == "study"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "mine.yaml").write_text("profile: mine\nevidence: full\n")
    assert claims.evidence_level({"profile": "mine"}) == "full"


@pytest.mark.parametrize("path", sorted((ROOT / "results" / "published").glob("*/provenance.json")),
                         ids=lambda p: p.parent.name)
def test_published_sets_read_their_profiles_level(path):
    prov = json.loads(path.read_text())
    cfg = yaml.safe_load((ROOT / "config" / f"{prov['profile']}.yaml").read_text())
    assert claims.evidence_level(prov) == cfg["evidence"] != "smoke"


PROFILES = sorted(p for p in [*(ROOT / "config").glob("*.yaml"), *(ROOT / "config" / "tests").glob("*.yaml")]
                  if "profile" in yaml.safe_load(p.read_text()))


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_profile_declares_its_evidence(path):
    cfg = yaml.safe_load(path.read_text())
    lbconfig.validate_schema(cfg, "config", str(path))
    assert cfg["evidence"] in lbconfig.EVIDENCE_LEVELS
    assert lbconfig.evidence_level(cfg) == cfg["evidence"]
    assert (cfg["evidence"] == "smoke") == (cfg["profile"] in ("smoke", "sweep_test", "tuning_test", "tuning_pref_test"))


def test_the_key_is_optional_and_checked():
    cfg = {"profile": "x", "device": "cpu", "tracks": {"classification": "config/tracks/classification/smoke.yaml"}}
    lbconfig.validate_schema(cfg, "config", "x.yaml")
    assert lbconfig.evidence_level(cfg) == "study"
    assert lbconfig.evidence_level(cfg | {"profile": "smoke"}) == "smoke"
    with pytest.raises(lbconfig.ConfigError, match="evidence"):
        lbconfig.validate_schema(cfg | {"evidence": "proof"}, "config", "x.yaml")


def test_provenance_records_the_level():
    from lossbench import runner

    cfg = {"profile": "smoke", "device": "cpu", "evidence": "smoke"}
    assert runner.provenance(cfg, {}, "cmd", [])["evidence"] == "smoke"
    assert runner.provenance(cfg | {"profile": "other", "evidence": None}, {}, "cmd", [])["evidence"] == "study"


# --------------------------------------------------------------------------------- evidence text

def test_evidence_names_profile_budget_and_seeds():
    row = claims.evaluate([_entry("a")], _summary({"a": MARGINAL}), 0.95, {}, provenance=SMOKE)[0]["rows"][0]
    assert row["evidence"] == "smoke profile · t: MLP, 400 steps · 3 seeds"
    published = claims.evaluate([_entry("a")], _summary({"a": MARGINAL}), 0.95, {},
                                provenance=SMOKE | {"profile": "full_cpu", "evidence": "study"},
                                set_name="classification_embedded_cpu")[0]["rows"][0]
    assert published["evidence"].startswith("published set classification_embedded_cpu (study) · t: MLP")
    bare = claims.evaluate([_entry("a")], _summary({"a": MARGINAL}), 0.95, {})[0]["rows"][0]
    assert bare["evidence"] == "study evidence · t · 3 paired seeds"  # no provenance: the paired n
    none = claims.evaluate([_entry("a")], _summary({"b": MARGINAL}), 0.95, {}, provenance=SMOKE | {"tracks": {}},
                           set_name="x")[0]["rows"][0]
    assert none["evidence"] == "published set x (smoke) · t: no runs in this set"


@pytest.mark.parametrize("folder, set_name, expected", [
    ("results/smoke", None, "smoke profile · classification: MLP, 400 steps · 3 seeds"),
    ("results/published/classification_embedded_cpu", "classification_embedded_cpu",
     "published set classification_embedded_cpu (study) · classification: MLP, 40 epochs · 5 seeds"),
    ("results/published/grokking_sc_cpu", "grokking_sc_cpu",
     "published set grokking_sc_cpu (study) · grokking: MLP, 5,000 steps · 3 seeds"),
])
def test_evidence_of_the_committed_results(folder, set_name, expected):
    path = ROOT / folder / "provenance.json"
    if not path.exists():
        pytest.skip(f"no {folder}")
    prov = json.loads(path.read_text())
    track = expected.split(" · ")[1].split(":")[0]
    assert claims.evidence_text(prov, [track], set_name) == expected


def test_no_nan_leaks_into_measured_text():
    cells = claims.adjust([_cell("a", 0.1, math.nan, n=1, p=math.nan), _cell("b", 0.1, 0.01, p=0.001)], 0.95)
    text = claims.measured_text(cells, {}, "higher")
    assert "nan" not in " ".join(text).lower() and text[1].endswith("✓") and "p_Holm" not in text[0]


def test_min_detectable_effect_has_the_stated_power():
    """stats.min_detectable_effect: the paired t-test's power at the MDE is 80% (checked with statsmodels'
    power function), it shrinks with more seeds and grows with a stricter level."""
    from statsmodels.stats.power import TTestPower

    from lossbench.stats import min_detectable_effect

    for n in (2, 3, 5, 10):
        for alpha in (0.05, 0.01, 0.05 / 8):
            d = min_detectable_effect(1.0, n, alpha, 0.8)
            assert TTestPower().power(effect_size=d, nobs=n, alpha=alpha) == pytest.approx(0.8, abs=1e-4)
    assert min_detectable_effect(2.0, 5) == pytest.approx(2 * min_detectable_effect(1.0, 5))
    assert min_detectable_effect(1.0, 10) < min_detectable_effect(1.0, 5) < min_detectable_effect(1.0, 3)
    assert min_detectable_effect(1.0, 5, 0.01) > min_detectable_effect(1.0, 5, 0.05)
    assert math.isnan(min_detectable_effect(1.0, 1)) and min_detectable_effect(0.0, 3) == 0.0


def test_a_not_reproduced_row_says_whether_it_could_see_the_papers_effect():
    """Three seeds with a tight paired spread detect a 5 pp effect; a wide one cannot (power_note)."""
    meta = {"scale": 100, "digits": 1}
    tight = claims.adjust([_cell("a", 0.001, 0.004)], 0.95)
    wide = claims.adjust([_cell("a", 0.001, 0.2)], 0.95)
    assert tight[0]["mde"] < 0.05 < wide[0]["mde"]
    assert "powered for the paper's effect (5.0 pp" in claims.power_note(tight, 0.05, meta, " pp")
    assert "underpowered for the paper's effect (5.0 pp < a MDE" in claims.power_note(wide, 0.05, meta, " pp")
