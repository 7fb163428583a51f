"""Every shipped config validates; typos fail at once and list the valid names."""
import copy

import pytest
import yaml

from lossbench import config as lbconfig

ROOT = lbconfig.ROOT
PROFILES = sorted(p for p in (ROOT / "config").glob("*.yaml") if p.name != "throughput.yaml")  # the cost table


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_shipped_profiles_validate(path):
    cfg, tracks = lbconfig.load_profile(path)
    benches = lbconfig.load_benchmarks(cfg)
    assert (tracks and lbconfig.runs(tracks)) or benches  # something to run: training runs or a benchmark


def test_a_profile_needs_tracks_or_benchmarks(tmp_path):
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("profile: empty\ndevice: cpu\n")
    with pytest.raises(lbconfig.ConfigError, match="tracks"):
        lbconfig.load_profile(cfg)
    cfg.write_text("profile: k\ndevice: cpu\nbenchmarks: {kernels: config/tracks/grokking/smoke.yaml}\n")
    with pytest.raises(lbconfig.ConfigError, match="task"):  # a training track is no benchmark config
        lbconfig.load_profile(cfg)


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


# ---- sweeps (fair tuning), dataset subsets, the preference track


@pytest.fixture
def pref_track():
    with open(ROOT / "config/tracks/preference/smoke.yaml") as f:
        return yaml.safe_load(f)


def test_variants_are_the_grid_product_or_explicit_points(pref_track):
    pref_track["sweep"]["dpo"] = {"beta": [0.1, 1.0], "lr": [1e-3, 3e-4]}
    assert sorted(lbconfig.variants(pref_track, "dpo")) == [
        "beta0.1-lr0.0003", "beta0.1-lr0.001", "beta1.0-lr0.0003", "beta1.0-lr0.001"]
    assert list(lbconfig.variants(pref_track, "flex_dpo")) == [
        "beta_chosen0.1-beta_rejected0.08", "beta_chosen1.0-beta_rejected0.8"]
    run = lbconfig.resolve_run(pref_track, "synthpref", "dpo", 0, "beta1.0-lr0.0003")
    assert run["hparams"]["beta"] == 1.0 and run["protocol"]["optimizer"]["lr"] == 3e-4
    assert pref_track["protocols"]["synthpref_tiny"]["optimizer"]["lr"] == 1e-3  # the track is not mutated
    with pytest.raises(lbconfig.ConfigError, match="unknown variant of dpo 'beta0.3'"):
        lbconfig.resolve_run(pref_track, "synthpref", "dpo", 0, "beta0.3")


def test_sweep_grids_must_have_equal_sizes(pref_track):
    pref_track["sweep"]["dpo"] = {"beta": [0.03, 0.1, 1.0]}
    with pytest.raises(lbconfig.ConfigError, match="same size for every method"):
        _check(pref_track)


def test_sweep_needs_a_grid_for_every_method_and_valid_values(pref_track):
    del pref_track["sweep"]["ipo"]
    with pytest.raises(lbconfig.ConfigError, match=r"missing \['ipo'\]"):
        _check(pref_track)
    pref_track["sweep"]["ipo"] = {"beta": [0.1, 1.0]}  # IPO's strength is tau
    with pytest.raises(lbconfig.ConfigError, match="no hyperparameter.*beta.*valid: \\['tau'\\]"):
        _check(pref_track)


def test_dataset_methods_restrict_runs(pref_track):
    runs = lbconfig.runs({"preference": pref_track})
    noisy = {m for _, d, m, _, _ in runs if d == "synthpref_eps20"}
    assert noisy == set(pref_track["dataset_methods"]["synthpref_eps20"])
    assert len(runs) == (len(pref_track["methods"]) + len(noisy)) * 2 * len(pref_track["seeds"])
    pref_track["dataset_methods"]["synthpref_eps20"].append("dpoo")
    with pytest.raises(lbconfig.ConfigError, match="unknown method in dataset_methods.*'dpoo'"):
        _check(pref_track)


def test_a_protocol_may_replace_the_sweep_and_seeds_for_its_datasets(pref_track):
    noisy = copy.deepcopy(pref_track["protocols"]["synthpref_tiny"])
    pref_track["protocols"]["synthpref_tiny"]["datasets"] = ["synthpref"]
    del noisy["guide"]  # TGDPO does not run on it
    noisy.update(datasets=["synthpref_eps20"], seeds=[7],
                 sweep={m: {"beta": [0.1], "lr": [1e-5, 3e-5]} for m in ("dpo", "cdpo", "rdpo")})
    pref_track["protocols"]["noisy"] = noisy
    _check(pref_track)
    runs = lbconfig.runs({"preference": pref_track})
    assert {(m, v, s) for _, d, m, v, s in runs if d == "synthpref_eps20"} == {
        (m, v, 7) for m in ("dpo", "cdpo", "rdpo") for v in ("beta0.1-lr1e-05", "beta0.1-lr3e-05")}
    assert {s for _, d, _, _, s in runs if d == "synthpref"} == set(pref_track["seeds"])
    run = lbconfig.resolve_run(pref_track, "synthpref_eps20", "dpo", 7, "beta0.1-lr3e-05")
    assert run["protocol"]["optimizer"]["lr"] == 3e-5 and not {"sweep", "seeds"} & set(run["protocol"])
    noisy["sweep"]["rdpo"] = {"beta": [0.1]}  # fair tuning within the protocol's methods
    with pytest.raises(lbconfig.ConfigError, match="protocols/noisy: sweep: grids must have the same size"):
        _check(pref_track)


def test_guide_must_be_a_run_variant(pref_track):
    pref_track["protocols"]["synthpref_tiny"]["guide"]["variant"] = "beta0.2"
    with pytest.raises(lbconfig.ConfigError, match="unknown guide variant 'beta0.2'"):
        _check(pref_track)
    del pref_track["protocols"]["synthpref_tiny"]["guide"]
    with pytest.raises(lbconfig.ConfigError, match=r"\['tgdpo'\] need a guidance policy"):
        _check(pref_track)


def test_datasets_must_fit_the_task(pref_track, track):
    pref_track["protocols"]["synthpref_tiny"]["datasets"].append("mnist1d_lt100")
    with pytest.raises(lbconfig.ConfigError, match="'mnist1d_lt100' is not a preference dataset"):
        _check(pref_track)
    track["protocols"]["mlp_adam"]["datasets"].append("synthpref")
    with pytest.raises(lbconfig.ConfigError, match="'synthpref' is a preference dataset"):
        _check(track)


# ---- what the schema says of models, the registry and resolved runs (issue 16; the broken-config
# corpus is tests/configs/test_broken_configs.py)


def test_classification_model_schema_matches_the_model_functions():
    """Each model's keys in the protocol schema are exactly its builder's keyword arguments, and its
    norm choices are models.NORMS: a new model or argument needs its schema entry."""
    import inspect

    from lossbench import models

    blocks = lbconfig.schema("protocol_classification")["$defs"]["model"]["allOf"]
    by_name = {b["if"]["properties"]["name"]["const"]: b["then"]["properties"] for b in blocks}
    assert set(by_name) == set(models.MODELS)
    for name, fn in models.MODELS.items():
        kwargs = [p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY]
        assert set(by_name[name]) == {"name", *kwargs}, name
    assert by_name["mlp"]["norm"]["enum"] == list(models.NORMS)


def test_the_shipped_registry_validates_and_its_noise_keys_are_the_transforms():
    from lossbench import data

    data.check_registry()
    reg = copy.deepcopy(data.registry())
    reg["datasets"]["mnist1d_sym40"]["noise"]["rate"] = 1.0  # every label flipped
    with pytest.raises(data.RegistryError, match=r"noise/rate: .*\[0, 1\).*got 1.0"):
        data.check_registry(reg, "reg")
    reg = copy.deepcopy(data.registry())
    reg["datasets"]["digits_lt10"]["long_tail"] = 1  # balanced is fine
    data.check_registry(reg, "reg")


def test_every_variant_resolves_to_a_valid_protocol(pref_track):
    """The resolved protocol of each variant is checked: a sweep's lr replaces the optimizer's."""
    pref_track["sweep"]["ipo"] = [{"tau": 0.1, "lr": 1e-3}, {"tau": 1.0, "lr": 0.0}]
    with pytest.raises(lbconfig.ConfigError, match=r"as run by ipo, variant lr0.0-tau1.0\).*optimizer/lr: 0.0 is less"):
        _check(pref_track)


def test_integers_are_ints_and_names_are_path_safe(track):
    track["protocols"]["mlp_adam"]["budget"]["steps"] = 400.0
    with pytest.raises(lbconfig.ConfigError, match=r"budget/steps: expected an integer, got 400.0 \(a float; write 400\)"):
        _check(track)
    track["protocols"]["mlp_adam"]["budget"]["steps"] = 400
    track["protocols"]["MLP"] = track["protocols"].pop("mlp_adam")
    with pytest.raises(lbconfig.ConfigError, match="protocols: 'MLP' is not a valid name"):
        _check(track)


def test_a_dataset_filter_must_select_something(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("profile: p\ndevice: cpu\ndatasets: [digits_*]\n"
                   "tracks: {classification: config/tracks/classification/smoke.yaml}\n")
    with pytest.raises(lbconfig.ConfigError, match="'digits_\\*' matches no dataset.*Valid: mnist1d_lt100"):
        lbconfig.load_profile(cfg)
    cfg.write_text(cfg.read_text().replace("digits_*", "mnist1d_lt*"))
    assert {d for _, d, *_ in lbconfig.runs(lbconfig.load_profile(cfg)[1], ["mnist1d_lt*"])} == {"mnist1d_lt100"}
