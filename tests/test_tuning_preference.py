"""Equal-budget tuning of the preference track (issue 19): each method's grid points are its trials
on tuning seeds disjoint from the final ones, one choice per report view on the trials' validation
means (@best: val win rate; @matched-kl: val gold reward with val KL within kl_budget, else the
smallest-KL trial, flagged; @unlearning: forget-set log-likelihood for NPO), one final variant per
choice on the final seeds; TGDPO's guide is DPO's trial of the same name on a tuning seed and DPO's
`guide.variant` (a final variant) on a final seed; the report's views read the final variants only."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal
import yaml

from lossbench import config as lbconfig
from lossbench import io, methods, runner, tuning
from lossbench.tasks import preference as pref

ROOT = lbconfig.ROOT
TRACKS = ROOT / "config" / "tracks" / "preference"
TEST_TRACK = TRACKS / "tuning_test.yaml"
PROFILE = ROOT / "config" / "tests" / "tuning_preference.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--workflow-profile", "none"]
SHIPPED = ["full.yaml", "tier_core_claims.yaml", "tier_embedded_gpu.yaml", "study_cpu.yaml", "tuning_test.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_method_gets_the_same_trials_on_disjoint_seeds(name):
    track = lbconfig.load_track(TRACKS / name)
    assert "sweep" not in track
    runs = lbconfig.runs({"preference": track})
    for pname, proto in track["protocols"].items():
        view = lbconfig.protocol_track(track, pname)
        tune = view["tuning"]
        assert not set(tune["seeds"]) & set(view["seeds"]), pname
        for d in proto["datasets"]:
            for m in lbconfig.methods_on(track, d):
                points = tuning.trials(track, m, d)
                assert len(points) == tune["trials"] and points == {
                    tuning.trial_slug(i): p for i, p in enumerate(lbconfig.grid_points(tune["grid"][m]))}
                mine = [(v, s) for _, dd, mm, v, s in runs if (dd, mm) == (d, m)]
                assert sorted((v, s) for v, s in mine if tuning.is_trial(v)) == sorted(
                    (v, s) for v in points for s in tune["seeds"])
                finals = ["tuned_best", "tuned_kl"] + (["tuned_forget"] if methods.get(m).kind == "unlearning" else [])
                assert tuning.tuned_variants(track, m, d) == finals
                assert sorted((v, s) for v, s in mine if not tuning.is_trial(v)) == sorted(
                    (v, s) for v in finals for s in view["seeds"])


def _rows(win: dict, gold: dict, kl: dict) -> pd.DataFrame:
    rows = [{"variant": v, "seed": 10 + i, "metric": metric, "value": x}
            for metric, table in (("val/win_rate", win), ("val/gold_reward", gold), ("val/kl", kl))
            for v, xs in table.items() for i, x in enumerate(xs)]
    rows.append({"variant": "tuned_best", "seed": 0, "metric": "val/win_rate", "value": 9.0})  # never a candidate
    return pd.DataFrame(rows)


POINTS = {"trial00": {"beta": 0.03}, "trial01": {"beta": 0.1}, "trial02": {"beta": 0.3}}
RULES = pref.tuning_rules({"eval": {"kl_budget": 3.0}}, "dpo")


def test_both_choices_on_hand_made_rows():
    rows = _rows(win={"trial00": [0.9, 0.8], "trial01": [0.7, 0.7], "trial02": [0.6, 0.5]},
                 gold={"trial00": [2.0, 2.2], "trial01": [1.5, 1.7], "trial02": [1.0, 1.2]},
                 kl={"trial00": [5.0, 6.0], "trial01": [2.0, 3.5], "trial02": [0.5, 0.7]})
    best = tuning.choose_rule(rows, RULES["tuned_best"], POINTS)
    assert best["trial"] == "trial00" and best["point"] == {"beta": 0.03} and not best["no_admissible"]
    kl = tuning.choose_rule(rows, RULES["tuned_kl"], POINTS)  # trial00 is over budget; trial01 (KL 2.75) wins
    assert kl["trial"] == "trial01" and kl["score"] == pytest.approx(1.6) and kl["admissible"] == ["trial01", "trial02"]
    assert not kl["no_admissible"] and kl["n_trials"] == 3 and set(kl["scores"]) == set(POINTS)
    assert "tuned_forget" not in RULES and "tuned_forget" in pref.tuning_rules({"eval": {"kl_budget": 3.0}}, "npo")


def test_no_trial_within_the_kl_budget_falls_back_to_the_smallest_kl_flagged():
    rows = _rows(win={"trial00": [0.9], "trial01": [0.7], "trial02": [0.6]},
                 gold={"trial00": [2.0], "trial01": [1.5], "trial02": [1.0]},
                 kl={"trial00": [9.0], "trial01": [4.0], "trial02": [np.nan]})
    kl = tuning.choose_rule(rows, RULES["tuned_kl"], POINTS)
    assert kl["trial"] == "trial01" and kl["point"] == {"beta": 0.1} and kl["no_admissible"] and kl["admissible"] == []
    assert kl["score"] == pytest.approx(1.5)


def test_the_guide_is_dpos_trial_on_a_tuning_seed_and_its_final_variant_on_a_final_seed():
    track = lbconfig.load_track(TEST_TRACK)
    files = lambda v, s: pref.train_inputs(lbconfig.resolve_run(track, "synthpref", "tgdpo", s, v), "st", "p")["guide"]  # noqa: E731
    assert files("trial01", 10) == "results/p/runs/preference/synthpref/dpo/trial01/seed10/train.json"
    for v in ("tuned_best", "tuned_kl"):
        assert files(v, 1) == "results/p/runs/preference/synthpref/dpo/tuned_best/seed1/train.json"
    runs = set(lbconfig.runs({"preference": track}))
    for v in tuning.trials(track, "tgdpo", "synthpref"):  # every trial's guide is a run
        assert ("preference", "synthpref", "dpo", v, 10) in runs


def test_a_guide_that_is_no_final_variant_is_one_config_error(tmp_path):
    doc = yaml.safe_load(TEST_TRACK.read_text())
    doc["protocols"]["synthpref_tiny"]["guide"] = {"method": "dpo", "variant": "beta0.1"}
    path = tmp_path / "track.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(lbconfig.ConfigError, match="guide variant.*beta0.1.*tuned_best") as e:
        lbconfig.load_track(path)
    assert "\n" not in str(e.value)
    doc["protocols"]["synthpref_tiny"]["guide"]["variant"] = "tuned_best"
    doc["tuning"]["grid"]["npo"] = {"beta": [0.1, 0.3, 1.0]}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(lbconfig.ConfigError, match=r"tuning/grid/npo: 3 point\(s\).*trials: 2"):
        lbconfig.load_track(path)


@pytest.mark.slow
def test_tuned_preference_profile_end_to_end(tmp_path, monkeypatch):
    """trials -> choose_trial (one choice per view) -> final variants -> report: each view reads its
    own final variant on the final seeds, trials never reach the leaderboard, and a tuning table per view."""
    out = subprocess.run(SNAKEMAKE + ["--configfile", str(PROFILE), "--directory", str(tmp_path), "--cores", "2",
                                      "--force-use-threads"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stderr.count("rule train_run:") == 3 * 2 + 2 * 2 * 3 + 2 and out.stderr.count("rule choose_trial:") == 3
    results = tmp_path / "results" / "tuning_pref_test"
    summary = pd.read_csv(results / "summary.csv")
    board = pd.read_csv(results / "report" / "tables" / "preference.csv")
    md = (results / "report" / "tables" / "preference.md").read_text()
    assert "trial0" not in board.to_csv()  # trials never reach the leaderboard
    track = lbconfig.load_track(TEST_TRACK)
    for m in track["methods"]:
        choice = io.read_json(results / "tuning" / "preference" / "synthpref" / f"{m}.json")
        trials = summary[(summary.method == m) & summary.variant.map(tuning.is_trial)]
        assert set(trials.seed) == {10}
        for variant, rule in tuning.rules(track, m, "synthpref").items():
            expected = tuning.choose_rule(trials, rule, tuning.trials(track, m, "synthpref"))
            assert choice["choices"][variant]["trial"] == expected["trial"], (m, variant)
            for seed in (0, 1):
                info = io.read_json(tmp_path / f"results/tuning_pref_test/runs/preference/synthpref/{m}/{variant}/seed{seed}/train.json")
                assert info["hparams"]["beta"] == expected["point"]["beta"]
                if m == "tgdpo":
                    assert info["inputs"]["guide"].endswith(f"/dpo/tuned_best/seed{seed}/train.json")
        for view, variant in pref.VIEW_VARIANTS.items():
            if variant not in choice["choices"]:
                continue
            final = summary[(summary.method == m) & (summary.variant == variant) & (summary.metric == "test/win_rate")]
            shown = board[(board.dataset == f"synthpref @{view}") & (board.method == m) & (board.metric == "test/win_rate")]
            assert shown["mean"].iloc[0] == pytest.approx(final["value"].mean(), rel=1e-4), (m, view)
    copies = 0
    for m in track["methods"]:  # a final variant whose choice is an earlier one's copies that run, exactly
        choice = io.read_json(results / "tuning" / "preference" / "synthpref" / f"{m}.json")["choices"]
        for seed in (0, 1):
            info = io.read_json(results / f"runs/preference/synthpref/{m}/tuned_kl/seed{seed}/train.json")
            same = choice["tuned_kl"]["trial"] == choice["tuned_best"]["trial"]
            assert ("copied_from" in info) == same, (m, seed)
            if same:
                copies, copied = copies + 1, (m, seed, info)
                best = io.read_json(results / f"runs/preference/synthpref/{m}/tuned_best/seed{seed}/train.json")
                assert info["copied_from"]["run_id"] == best["run_id"] != info["run_id"]
                assert info["outputs_sha256"]["policy.pt"] == best["outputs_sha256"]["policy.pt"]
                kl_curves, best_curves = (pd.read_csv(results / f"runs/preference/synthpref/{m}/{v}/seed{seed}/"
                                                      "curves.csv") for v in ("tuned_kl", "tuned_best"))
                assert set(kl_curves.variant) == {"tuned_kl"}  # its own name on the copied rows
                assert_frame_equal(kl_curves.drop(columns="variant"), best_curves.drop(columns="variant"))
                rows = summary[(summary.method == m) & (summary.seed == seed)].set_index(["variant", "metric"])["value"]
                assert rows["tuned_kl"].to_dict() == rows["tuned_best"].to_dict()  # its evaluation too
    assert copies, "the tiny grid gives some method the same choice in both views"
    # and the copy is what training it would give: retrain the last copied run from scratch, no twins
    monkeypatch.chdir(tmp_path)
    m, seed, info = copied
    torch.set_num_threads(info["torch_threads"])  # the DAG's job threads: the same float reduction order
    again = runner.train_run(tuning.tuned_run(track, "synthpref", m, seed, results / "tuning/preference/synthpref"
                                              f"/{m}.json", "tuned_kl"), info["inputs"], tmp_path / "again")
    assert "copied_from" not in again
    assert again["outputs_sha256"] == info["outputs_sha256"]  # byte for byte: curves and weights
    tgdpo_trial = io.read_json(tmp_path / "results/tuning_pref_test/runs/preference/synthpref/tgdpo/trial01/seed10/train.json")
    assert tgdpo_trial["inputs"]["guide"].endswith("/dpo/trial01/seed10/train.json")
    assert md.count("### Tuning (equal budget: 2 trials per method on seeds 10)") == 3  # @best, @matched-kl, @unlearning
    assert "`tuned_kl` variant" in md and "`tuned_forget` variant" in md
