"""Every shipped config validates; typos fail at once and list the valid names."""
import copy

import pytest
import yaml

from lossbench import config as lbconfig

ROOT = lbconfig.ROOT
PROFILES = sorted((ROOT / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_shipped_profiles_validate(path):
    cfg, tracks = lbconfig.load_profile(path)
    assert tracks and lbconfig.runs(tracks)


@pytest.fixture
def track():
    with open(ROOT / "config/tracks/classification/smoke.yaml") as f:
        return yaml.safe_load(f)


def _check(track):
    lbconfig.validate_schema(track, "track", "fixture")
    lbconfig.check_track(track, "fixture")


def test_method_typo_lists_valid_names(track):
    track["methods"].append("focall")
    with pytest.raises(lbconfig.ConfigError, match=r"unknown method 'focall'.*Did you mean focal.*Valid: .*erm"):
        _check(track)


def test_dataset_typo_lists_valid_names(track):
    track["protocols"]["mlp_adam"]["datasets"].append("mnist1d_lt1000")
    with pytest.raises(lbconfig.ConfigError, match=r"unknown dataset 'mnist1d_lt1000'.*mnist1d_lt100"):
        _check(track)


def test_unknown_key_fails_schema(track):
    track["seedz"] = [0]
    with pytest.raises(lbconfig.ConfigError, match="seedz.*valid keys: .*seeds"):
        _check(track)


def test_unknown_hparam_fails(track):
    track["method_hparams"] = {"focal": {"gama": 1.0}}
    with pytest.raises(lbconfig.ConfigError, match=r"gama.*valid: \['gamma'\]"):
        _check(track)


def test_invalid_hparam_value_fails(track):
    track["method_hparams"] = {"focal": {"gamma": -1.0}}
    with pytest.raises(lbconfig.ConfigError, match="gamma"):
        _check(track)


def test_baseline_must_be_a_method(track):
    track["baseline"] = "nope"
    with pytest.raises(lbconfig.ConfigError, match="baseline"):
        _check(track)


def test_budget_needs_epochs_or_steps(track):
    del track["protocols"]["mlp_adam"]["budget"]["steps"]
    with pytest.raises(lbconfig.ConfigError, match="budget"):
        _check(track)


def test_step_schedule_needs_milestones(track):
    track["protocols"]["mlp_adam"]["schedule"] = {"name": "step"}
    with pytest.raises(lbconfig.ConfigError, match="milestones"):
        _check(track)


def test_dataset_in_two_protocols_fails(track):
    track["protocols"]["other"] = copy.deepcopy(track["protocols"]["mlp_adam"])
    with pytest.raises(lbconfig.ConfigError, match="in protocols"):
        _check(track)


def test_profile_schema_rejects_bad_device(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("profile: x\ndevice: gpu\ntracks: {classification: config/tracks/classification/smoke.yaml}\n")
    with pytest.raises(lbconfig.ConfigError, match="device"):
        lbconfig.load_profile(p)


def test_resolved_runs_are_paired_by_data_seed(track):
    a = lbconfig.resolve_run(track, "mnist1d_lt100", "erm", 1)
    b = lbconfig.resolve_run(track, "mnist1d_lt100", "focal", 1)
    c = lbconfig.resolve_run(track, "mnist1d_lt100", "erm", 2)
    assert a["seeds"]["data"] == b["seeds"]["data"] != c["seeds"]["data"]
    assert a["seeds"]["init"] != b["seeds"]["init"]
    assert a["run_id"] != b["run_id"] and a == lbconfig.resolve_run(track, "mnist1d_lt100", "erm", 1)


def test_method_kind_must_fit_the_task(track):
    track["methods"].append("dpo")
    with pytest.raises(lbconfig.ConfigError, match="'dpo' is a 'pairwise' method"):
        _check(track)
