"""Subsets of a profile (issue 17): only_tracks, datasets, methods, seeds and method_hparams keys
(lossbench/config.py select), into results/<profile>/ only; a subset on Snakemake's --config must
name its own profile (check_overrides)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lossbench import config as lbconfig

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "config" / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke():
    cfg = lbconfig.read_yaml(SMOKE)
    return cfg, lbconfig.load_tracks(cfg, str(SMOKE)), lbconfig.load_benchmarks(cfg, str(SMOKE))


def _select(smoke, **keys):
    cfg, tracks, benches = smoke
    sub = {**cfg, **keys}
    lbconfig.validate_schema(sub, "config", "subset")
    tracks, benches = lbconfig.select(sub, tracks, benches, "subset")
    return tracks, benches, lbconfig.runs(tracks, sub.get("datasets"), sub.get("methods"))


def test_no_subset_keys_change_nothing(smoke):
    tracks, benches, runs = _select(smoke)
    assert tracks == smoke[1] and benches == smoke[2] and runs == lbconfig.runs(smoke[1])


def test_method_filter_and_track_selection(smoke):
    tracks, benches, runs = _select(smoke, only_tracks=["classification"], datasets=["mnist1d_lt100"],
                                    methods=["focal", "logit_*"], seeds=[7])
    assert list(tracks) == ["classification"] and benches == {}
    assert {(t, d, m, s) for t, d, m, _, s in runs} == {("classification", "mnist1d_lt100", "focal", 7),
                                                      ("classification", "mnist1d_lt100", "logit_adjust", 7)}
    assert tracks["classification"]["seeds"] == [7]


def test_filters_drop_tracks_without_runs_but_keep_benchmarks(smoke):
    tracks, benches, _ = _select(smoke, methods=["dpo"])
    assert list(tracks) == ["preference"] and list(benches) == ["kernels"]


def test_method_hparams_reach_the_run(smoke):
    tracks, _, runs = _select(smoke, datasets=["mnist1d_sym40"], methods=["focal"], method_hparams={"focal": {"gamma": 1.0}})
    t, d, m, v, s = runs[0]
    assert lbconfig.resolve_run(tracks[t], d, m, s, v)["hparams"] == {"gamma": 1.0}


@pytest.mark.parametrize("keys, message", [
    ({"methods": ["focall"]}, "the pattern 'focall' matches no method of the profile's tracks. Did you mean focal"),
    ({"datasets": ["synthpref"], "methods": ["focal"]}, "selects no runs"),
    ({"only_tracks": ["clasification"]}, "unknown track 'clasification'. Did you mean classification"),
    ({"only_tracks": ["grokking"], "datasets": ["mnist1d_lt100"]}, "matches no dataset"),
    ({"method_hparams": {"focal": {"gama": 1.0}}}, "gama"),
    ({"method_hparams": {"dpoo": {"beta": 1.0}}}, "unknown method in method_hparams 'dpoo'"),
    ({"seeds": [0, 0]}, "repeated"),
])
def test_a_subset_that_selects_nothing_or_is_wrong_is_an_error(smoke, keys, message):
    with pytest.raises(lbconfig.ConfigError, match=re.escape(message)):
        _select(smoke, **keys)


def test_override_without_own_profile_is_refused():
    cfg = {"profile": "smoke", "datasets": ["mnist1d_lt100"]}
    with pytest.raises(lbconfig.ConfigError, match="a subset needs its own profile name.*results/smoke/"):
        lbconfig.check_overrides(cfg, {"datasets": ["mnist1d_lt100"]}, str(SMOKE))
    with pytest.raises(lbconfig.ConfigError, match="own profile name"):  # the file's own name, given again
        lbconfig.check_overrides(cfg, {"profile": "smoke", "datasets": ["mnist1d_lt100"]}, str(SMOKE))
    cfg = {"profile": "mine", "seeds": ["0", "1"], "method_hparams": {"focal": {"gamma": "1.0"}}}
    lbconfig.check_overrides(cfg, {"profile": "mine", "seeds": ["0", "1"], "method_hparams": {"focal": {"gamma": "1.0"}}},
                             str(SMOKE))
    assert cfg["seeds"] == [0, 1] and cfg["method_hparams"] == {"focal": {"gamma": 1.0}}  # --config reads text
    lbconfig.check_overrides({"profile": "smoke"}, {}, str(SMOKE))  # no subset keys: nothing to check


def _snakemake_dry(*config):
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", *config]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_dag_subset_writes_to_its_own_results_folder(smoke):
    config = ["profile=subset_test", "only_tracks=[classification]", "datasets=[mnist1d_lt100]",
              "methods=[focal,logit_adjust]", "seeds=[0]"]
    out = _snakemake_dry(*config)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    outputs = re.findall(r"output: ([^\n]+)", log)
    files = [f.strip() for line in outputs for f in line.split(",")]
    assert files and all(f.startswith("results/subset_test/") for f in files), set(files) - {
        f for f in files if f.startswith("results/subset_test/")}
    assert "results/smoke" not in log and "kernel_bench" not in log
    expected = len(_select(smoke, only_tracks=["classification"], datasets=["mnist1d_lt100"],
                           methods=["focal", "logit_adjust"], seeds=[0])[2])
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", log, re.M))
    assert int(counts["train_run"]) == int(counts["evaluate_run"]) == expected == 2
    assert int(counts["total"]) == 2 * expected + 3 + int(counts.get("prepare_source", 0))  # + aggregate, report, all


def test_dag_subset_without_profile_is_refused():
    out = _snakemake_dry("datasets=[mnist1d_lt100]")
    assert out.returncode != 0 and "a subset needs its own profile name" in out.stdout + out.stderr
