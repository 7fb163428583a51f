"""The preference task's stages end to end on a micro SynthPref protocol (no Snakemake): each stage's
file, label noise only on train pairs, every method kind trains and evaluates, TGDPO reads its
guide, runs are deterministic, a diverged run records NaN metrics instead of failing."""
import copy
import json
import math

import numpy as np
import pytest
import yaml

from lossbench import data
from lossbench import config as lbconfig
from lossbench import io
from lossbench.tasks import preference as task
from tests.preference_runs import run_through

TRACK = "preference"


@pytest.fixture(scope="module")
def track():
    t = yaml.safe_load((lbconfig.ROOT / "config/tracks/preference/smoke.yaml").read_text())
    t["methods"].append("remax_wco")  # full profile only; here on the micro protocol's ensemble
    t["sweep"]["remax_wco"] = {"beta": [0.1, 1.0]}
    proto = t["protocols"]["synthpref_tiny"]
    proto.update(model={"arch": "gpt2", "d_model": 16, "layers": 1, "heads": 2, "context": 48},
                 sft={"prompts": 300, "secrets": 6, "forget": 2, "repeats": 5, "steps": 30, "batch_size": 32,
                      "lr": 3e-3, "revision_steps": 8},
                 pairs={"train": 40, "val": 16, "test": 16, "list_size": 3, "tau_bt": 0.25},
                 reward_model={"steps": 5, "batch_size": 8, "lr": 1e-3},
                 train={"steps": 4, "batch_size": 4, "probe_every": 2, "probe_pairs": 4},
                 eval={"samples_per_prompt": 1, "ideal_beta": 0.1, "kl_budget": 3.0, "revisions": 2},
                 overoptimization={"datasets": ["synthpref", "synthpref_eps20"], "members": 2, "prompts": 8,
                                   "samples": 8, "lambda": 0.5})
    lbconfig.check_track(t, "micro")
    return t


@pytest.fixture(scope="module")
def stage(track, tmp_path_factory):
    """sft -> sample -> label (clean and ε = 0.2) -> reward model, for seed 0."""
    d = tmp_path_factory.mktemp("stage")
    proto = track["protocols"]["synthpref_tiny"]
    task.build_sft(TRACK, "synthpref_tiny", proto, 0, d)
    task.build_samples(TRACK, "synthpref_tiny", proto, 0, d / "sft.pt", d / "samples.npz")
    for ds in ("synthpref", "synthpref_eps20"):
        task.build_labels(TRACK, "synthpref_tiny", proto, 0, ds, d / "samples.npz", d / f"labels_{ds}.npz")
    task.build_reward_model(TRACK, "synthpref_tiny", proto, 0, "synthpref", d / "sft.pt", d / "samples.npz",
                            d / "labels_synthpref.npz", d / "reward_model_synthpref.pt")
    task.build_overopt(TRACK, "synthpref_tiny", proto, 0, "synthpref", d / "sft.pt", d / "samples.npz",
                       d / "labels_synthpref.npz", d / "overopt_synthpref.csv")  # and the ensemble the remax_* read
    return d


def _run(track, stage, tmp, method, variant, dataset="synthpref"):
    return run_through(track, stage, tmp, method, variant, dataset)


def test_stage_files_and_label_noise(stage):
    s = data.load_prepared(stage / "samples.npz")
    assert s["train_responses"].shape[:2] == (40, 3) and s["test_responses"].shape[:2] == (16, 2)
    assert s["test_sft_samples"].shape[0] == 16 and np.isfinite(s["test_ref_logps"]).all()
    clean, noisy = (data.load_prepared(stage / f"labels_{d}.npz") for d in ("synthpref", "synthpref_eps20"))
    assert not clean["train_flipped"].any() and noisy["train_flipped"].any()
    # flips touch train labels only; clean labels are shared (nested flip sets, same seed per dataset differ)
    assert not noisy["val_flipped"].any() and not noisy["test_flipped"].any()
    np.testing.assert_array_equal(clean["test_p"], noisy["test_p"])
    f = data.load_prepared(stage / "forget.npz")
    assert f["forget"].sum() == 2 and f["retain_only_logps"].shape == (6,)
    assert (stage / "reward_model_synthpref.pt").exists()


def test_the_retain_only_twin_is_trained_only_for_unlearning_methods(track, stage, tmp_path):
    """Without an unlearning method the SFT stage skips the twin (half its cost): π_ref is byte for
    byte the model the full stage saves, and forget.npz has no retain-only yardstick."""
    assert task.retain_twin(track, "synthpref_tiny")  # the smoke track runs NPO
    offline = {**track, "methods": ["dpo", "ipo"]}
    assert not task.retain_twin(offline, "synthpref_tiny")
    task.build_sft(TRACK, "synthpref_tiny", track["protocols"]["synthpref_tiny"], 0, tmp_path, twin=False)
    assert io.sha256_file(tmp_path / "sft.pt") == io.sha256_file(stage / "sft.pt")
    lone, full = (data.load_prepared(d / "forget.npz") for d in (tmp_path, stage))
    assert "retain_only_logps" not in lone
    np.testing.assert_array_equal(lone["sft_logps"], full["sft_logps"])


@pytest.mark.parametrize("method,variant", [("dpo", "beta0.1"), ("lipo", "beta0.05"), ("kto", "beta0.1"),
                                            ("npo", "beta0.1"), ("madpo", "beta0.1"), ("spo", "beta0.1"),
                                            ("remax", "beta0.1"), ("rloo", "beta0.1"), ("best_of_n", "n4"),
                                            ("flat", "divergencetv"), ("remax_wco", "beta0.1"), ("srpo", "beta0.1")])
def test_every_kind_trains_and_evaluates(track, stage, tmp_path, method, variant, one_torch_thread):
    values, out = _run(track, stage, tmp_path, method, variant)
    assert 0 <= values["test/win_rate"] <= 1 and 0 <= values["test/ranking_accuracy"] <= 1
    assert values["test/kl"] >= -1e-6 and math.isfinite(values["test/gold_reward"])
    assert values["test/sft_gold_reward"] == pytest.approx(
        data.load_prepared(stage / "samples.npz")["test_sft_rewards"].mean())
    assert ("forget/extraction_rate" in values) == (method in ("npo", "flat"))
    # every policy that answers prompts revises its test answers twice (SRPO's evaluation)
    revised = method not in ("npo", "flat", "best_of_n")
    assert ("test/gold_reward_rev2" in values) == revised
    if revised:
        assert 0 <= values["test/win_rate_rev1"] <= 1
        assert values["test/revision_gain"] == pytest.approx(values["test/gold_reward_rev2"] - values["test/gold_reward"])
    curves = io.read_json(out / "run.json")
    assert curves["variant"] == variant and curves["status"] == "ok"


def test_tgdpo_reads_its_guide_and_runs_are_deterministic(track, stage, tmp_path, one_torch_thread):
    _run(track, stage, tmp_path, "dpo", "beta0.1")
    first, out = _run(track, stage, tmp_path, "tgdpo", "beta0.1")
    again, _ = _run(track, stage, tmp_path / "again", "dpo", "beta0.1")
    second, _ = _run(track, stage, tmp_path / "again", "tgdpo", "beta0.1")
    keep = [k for k in first if not k.startswith("train/")]
    assert {k: first[k] for k in keep} == {k: second[k] for k in keep}
    info = json.loads((out / "train.json").read_text())
    assert set(info["inputs_sha256"]) == {"sft", "samples", "labels", "guide"}


def test_diverged_run_records_nan_metrics(track, stage, tmp_path, one_torch_thread):
    t = copy.deepcopy(track)
    t["protocols"]["synthpref_tiny"]["optimizer"]["lr"] = 1e30  # blows up within the first steps
    values, out = _run(t, stage, tmp_path, "dpo", "beta0.1")
    assert json.loads((out / "train.json").read_text())["status"] == "diverged"
    assert all(math.isnan(v) for k, v in values.items() if not k.startswith("train/"))
    assert "test/win_rate" in values


def test_overoptimisation_curves_of_a_seed_are_complete_and_deterministic(track, stage, tmp_path, one_torch_thread):
    import pandas as pd

    from lossbench.overopt import OBJECTIVES
    from lossbench.report import overopt as report_overopt

    proto = track["protocols"]["synthpref_tiny"]
    args = (TRACK, "synthpref_tiny", proto, 0, "synthpref_eps20", stage / "sft.pt", stage / "samples.npz",
            stage / "labels_synthpref_eps20.npz")
    task.build_overopt(*args, tmp_path / "a.csv")
    task.build_overopt(*args, tmp_path / "b.csv")
    assert io.sha256_file(tmp_path / "a.csv") == io.sha256_file(tmp_path / "b.csv")
    df = pd.read_csv(tmp_path / "a.csv")
    assert set(df["objective"]) == set(OBJECTIVES) and sorted(set(df["n"])) == [1, 2, 4, 8]
    assert (df["members"] == 2).all() and df[["gold", "proxy", "kl"]].notna().all().all()
    first = df[df["n"] == 1].set_index("objective")["gold"]
    assert np.allclose(first, first.iloc[0])  # best-of-1 is π_ref whatever the objective
    rows = report_overopt.summary_rows(df)
    assert set(rows["method"]) == {f"bon_{o}" for o in OBJECTIVES} and set(rows["seed"]) == {0}
    drop = rows[rows["metric"] == "bon/gold_drop"]["value"]
    assert (drop >= 0).all()
    assert report_overopt.figure(df, TRACK, 0.95, tmp_path / "fig.png").exists()


def test_overoptimisation_block_is_checked(track):
    bad = copy.deepcopy(track)
    bad["protocols"]["synthpref_tiny"]["overoptimization"]["prompts"] = 17  # 16 test prompts
    with pytest.raises(lbconfig.ConfigError, match="exceeds pairs/test"):
        lbconfig.check_track(bad, "micro")
    bad = copy.deepcopy(track)
    bad["protocols"]["synthpref_tiny"]["overoptimization"]["datasets"] = ["synthpref_eps99"]
    with pytest.raises(lbconfig.ConfigError, match="synthpref_eps25"):  # the valid names listed
        lbconfig.check_track(bad, "micro")
    bad = copy.deepcopy(track)
    bad["protocols"]["synthpref_tiny"]["overoptimization"]["members"] = 1  # an ensemble needs two
    with pytest.raises(lbconfig.ConfigError):
        lbconfig.check_track(bad, "micro")
    bad = copy.deepcopy(track)  # ReMax on the ensemble runs on synthpref, whose members the block must fit
    bad["protocols"]["synthpref_tiny"]["overoptimization"]["datasets"] = ["synthpref_eps20"]
    with pytest.raises(lbconfig.ConfigError, match="reward-model ensemble.*'synthpref'"):
        lbconfig.check_track(bad, "micro")
