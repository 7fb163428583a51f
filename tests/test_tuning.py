"""Equal-budget tuning (issue 19, lossbench/tuning.py): every method of a tuned track gets the same
number of trials on tuning seeds disjoint from the final ones; trials are deterministic with trial
0 at the defaults; choose() picks the best mean; and the tiny tuned profile (config/tests/tuning.yaml)
runs through Snakemake: trials -> choose_trial -> tuned runs -> report with a tuning table and no
trial rows in the leaderboard."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lossbench import config as lbconfig
from lossbench import io, methods, tuning
from lossbench.report import selection

ROOT = lbconfig.ROOT
TEST_TRACK = ROOT / "config" / "tracks" / "classification" / "tuning_test.yaml"
PROFILE = ROOT / "config" / "tests" / "tuning.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--workflow-profile", "none"]


def _tuned(path) -> bool:
    doc = lbconfig.track_yaml(path)
    return "tuning" in doc or any("tuning" in p for p in (doc.get("protocols") or {}).values())


TUNED_FILES = sorted(p for p in (ROOT / "config" / "tracks").glob("*/*.yaml") if _tuned(p))


def test_some_shipped_tracks_are_tuned():
    names = {p.relative_to(ROOT).as_posix() for p in TUNED_FILES}
    assert {"config/tracks/classification/full.yaml", "config/tracks/classification/tuning_test.yaml"} <= names
    assert not any(p.name == "smoke.yaml" for p in TUNED_FILES)  # the smoke DAG stays fast


@pytest.mark.parametrize("path", TUNED_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_method_gets_the_same_budget(path):
    track = lbconfig.load_track(path)
    runs = lbconfig.runs({track["track"]: track})
    for pname, proto in track["protocols"].items():
        view = lbconfig.protocol_track(track, pname)
        tune = view.get("tuning")
        if not tune:
            continue
        assert not set(tune["seeds"]) & set(view["seeds"]), pname
        for d in proto["datasets"]:
            for m in lbconfig.methods_on(track, d):
                points = tuning.trials(track, m, d)
                assert list(points) == [tuning.trial_slug(i) for i in range(tune["trials"])], (d, m)
                assert len({repr(sorted(p.items())) for p in points.values()}) == tune["trials"], (d, m)  # distinct
                mine = [(v, s) for t, dd, mm, v, s in runs if (dd, mm) == (d, m)]
                trial_runs = [(v, s) for v, s in mine if tuning.is_trial(v)]
                ran = points if tune["trials"] > 1 else {}  # one trial: nothing to choose, no trial runs
                assert sorted(trial_runs) == sorted((v, s) for v in ran for s in tune["seeds"]), (d, m)
                finals = tuning.tuned_variants(view, m, d)  # `tuned`, or one per preference view
                for v in finals:
                    assert sorted(s for vv, s in mine if vv == v) == sorted(view["seeds"]), (d, m, v)


def test_trials_are_deterministic_and_trial0_is_the_defaults():
    track = lbconfig.load_track(TEST_TRACK)
    a = tuning.trials(track, "logit_adjust", "digits_lt10")
    assert a == tuning.trials(lbconfig.load_track(TEST_TRACK), "logit_adjust", "digits_lt10")
    assert a["trial00"] == {"lr": 0.001, "tau": methods.get("logit_adjust").defaults["tau"]}  # protocol lr, defaults
    assert a["trial00"] == tuning.trials(track, "erm", "digits_lt10")["trial00"] | {"tau": 1.0}
    for p in list(a.values())[1:]:
        assert 3.0e-4 <= p["lr"] <= 3.0e-3 and 0.0 <= p["tau"] <= 2.0
    reseeded = {**track, "tuning": {**track["tuning"], "seed": 1}}
    assert tuning.trials(reseeded, "logit_adjust", "digits_lt10")["trial01"] != a["trial01"]
    # the tuned run resolves at trial 0 in the DAG and to the choice in its job
    run = lbconfig.resolve_run(track, "digits_lt10", "logit_adjust", 0, tuning.TUNED)
    assert run["hparams"]["tau"] == 1.0 and run["protocol"]["optimizer"]["lr"] == 0.001
    tuned = lbconfig.resolve_run(track, "digits_lt10", "logit_adjust", 0, tuning.TUNED, point=a["trial01"],
                                 tuned_from="ab" * 32)
    assert tuned["hparams"]["tau"] == a["trial01"]["tau"] and tuned["protocol"]["optimizer"]["lr"] == a["trial01"]["lr"]
    assert tuned["tuned_from"] == "ab" * 32 and tuned["run_id"] != run["run_id"]


def test_a_choice_space_gives_distinct_trials_without_replacement():
    track = {**lbconfig.load_track(TEST_TRACK), "methods": ["erm", "dice"], "tuning": {"trials": 6, "seeds": [10]}}
    points = tuning.trials(track, "dice", "digits_lt10")  # alpha 3 x gamma 2 choices = 6 points, defaults among them
    assert len({repr(sorted(p.items())) for p in points.values()}) == 6


def _write_track(tmp_path, **changes) -> Path:
    doc = {"extends": "config/tracks/classification/tuning_test.yaml", **changes}
    path = tmp_path / "track.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("changes, fragments", [
    ({"tuning": {"trials": 3, "seeds": [1, 10], "search": {"lr": ["log_uniform", 3.0e-4, 3.0e-3]}}},
     ["tuning/seeds: [1] are also final seeds [0, 1]", "disjoint"]),
    ({"sweep": {"erm": {"lr": [0.001, 0.003]}, "logit_adjust": {"tau": [0.5, 1.0]}}}, ["tuning and sweep"]),
    ({"tuning": {"trials": 3, "seeds": [10]}},
     ["method 'erm' can supply 1 distinct trial(s)", "add a shared search", "lower trials"]),
    ({"tuning": {"trials": 3, "seeds": [10], "search": {"lr": ["loguniform", 3.0e-4, 3.0e-3]}}},
     ["tuning/search/lr: unknown search kind 'loguniform'", "did you mean log_uniform", "choice, uniform, log_uniform"]),
    ({"tuning": {"trials": 3, "seeds": [10], "search": {"lr": ["uniform", 3.0e-3, 3.0e-4]}}}, ["low < high"]),
    ({"tuning": {"trials": 0, "seeds": [10]}}, ["tuning/trials"]),
])
def test_a_broken_tuning_block_is_one_config_error(tmp_path, changes, fragments):
    with pytest.raises(lbconfig.ConfigError) as e:
        lbconfig.load_track(_write_track(tmp_path, **changes))
    assert "\n" not in str(e.value)
    for f in fragments:
        assert f in str(e.value), str(e.value)


def test_a_protocol_may_have_its_own_tuning(tmp_path):
    base = yaml.safe_load(TEST_TRACK.read_text())["protocols"]["mlp_adam"]
    own = {"trials": 2, "seeds": [20], "search": {"lr": ["log_uniform", 1.0e-3, 1.0e-2]}}
    track = lbconfig.load_track(_write_track(tmp_path, protocols={"mlp_adam": {**base, "tuning": own}}))
    assert tuning.settings(track, "digits_lt10") == own
    runs = lbconfig.runs({"classification": track})
    assert {(v, s) for _, _, m, v, s in runs if m == "erm"} == {("trial00", 20), ("trial01", 20), ("tuned", 0),
                                                                 ("tuned", 1)}
    bad = {**base, "tuning": {**own, "seeds": [0]}}
    with pytest.raises(lbconfig.ConfigError, match="protocols/mlp_adam: tuning/seeds"):
        lbconfig.load_track(_write_track(tmp_path, protocols={"mlp_adam": bad}))


def _rows(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"variant": v, "seed": 10 + i, "metric": "val/score", "value": x}
            for v, xs in scores.items() for i, x in enumerate(xs)]
    rows.append({"variant": "tuned", "seed": 0, "metric": "val/score", "value": 99.0})  # never a candidate
    rows.append({"variant": "trial02", "seed": 10, "metric": "test/score", "value": 99.0})  # not the metric
    return pd.DataFrame(rows)


def test_choose_picks_the_best_mean_with_spread_and_edges():
    sp = {"lr": ("log_uniform", 1e-4, 1e-2), "tau": ("uniform", 0.0, 2.0), "k": ("choice", 1.0, 2.0, 4.0)}
    points = {"trial00": {"lr": 1e-3, "tau": 1.0, "k": 2.0}, "trial01": {"lr": 1e-4, "tau": 1.95, "k": 4.0},
              "trial02": {"lr": 2e-3, "tau": 0.5, "k": 2.0}}
    rows = _rows({"trial00": [0.5, 0.7], "trial01": [0.8, 0.8], "trial02": [0.9, 0.3]})
    c = tuning.choose(rows, "val/score", True, points, sp)
    assert c["trial"] == "trial01" and c["point"] == points["trial01"]
    assert c["scores"] == pytest.approx({"trial00": 0.6, "trial01": 0.8, "trial02": 0.6})
    assert c["spread"]["range"] == pytest.approx(0.2) and c["spread"]["std"] == pytest.approx(pd.Series(
        [0.6, 0.8, 0.6]).std(ddof=0))
    assert c["n_trials"] == 3 and sorted(c["on_edge"]) == ["k", "lr", "tau"]  # lr at its low, tau near its high, k last
    low = tuning.choose(rows, "val/score", False, points, sp)  # lower is better: a tie of 0.6, the first wins
    assert low["trial"] == "trial00" and low["on_edge"] == []
    nan = _rows({"trial00": [0.5, float("nan")], "trial01": [0.4, 0.45]})  # most seeds with a value first
    assert tuning.choose(nan, "val/score", True)["trial"] == "trial01"
    none = tuning.choose(_rows({"trial00": [float("nan")], "trial01": [float("nan")]}), "val/score", True)
    assert none["trial"] == "trial00" and none["fallback"] and none["spread"]["range"] is None


def test_drop_trials_keeps_only_tuned_rows():
    summary = pd.DataFrame([{"track": "t", "dataset": "d", "method": "m", "variant": v, "seed": s, "metric": "x",
                             "value": 1.0} for v, s in (("trial00", 10), ("trial01", 10), ("tuned", 0))]
                           + [{"track": "u", "dataset": "d", "method": "m", "variant": "trial00", "seed": 0,
                               "metric": "x", "value": 1.0}])
    choice = {"trial": "trial01", "point": {"lr": 0.002}, "score": 0.5, "spread": {"range": 0.1, "std": 0.05},
              "n_trials": 2, "on_edge": ["lr"], "metric": "val/x", "higher_is_better": True, "tuning_seeds": [10]}
    runs = [{"track": "t", "dataset": "d", "method": "m", "variant": r.variant, "seed": r.seed,
             **({"tuning": choice} if r.variant == "tuned" else {})} for r in summary[summary.track == "t"].itertuples()]
    data = {"summary": summary, "runs": runs}
    assert selection.apply(data, "t") is None
    assert list(data["summary"]["variant"]) == ["tuned", "trial00"]  # another track's rows untouched
    assert [r["variant"] for r in data["runs"]] == ["tuned"]
    table = selection.tuning_table("t", "d", ["m"], data)
    assert table["title"] == "Tuning (equal budget: 2 trials per method on seeds 10)"
    assert table["rows"] == [["m", "trial01", "lr=0.002", "0.5", "0.1; 0.05", "⚠ lr"]]


@pytest.mark.slow
def test_tuned_profile_end_to_end(tmp_path):
    """trials -> choose_trial -> tuned runs -> aggregate -> report; a rerun does nothing and the same
    command in another folder gives the same numbers."""
    works = [tmp_path / "a", tmp_path / "b"]
    for work in works:
        out = subprocess.run(SNAKEMAKE + ["--configfile", str(PROFILE), "--directory", str(work), "--cores", "2",
                                          "--force-use-threads"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-4000:]
        assert out.stderr.count("rule train_run:") == 2 * (3 * 1 + 2) and out.stderr.count("rule choose_trial:") == 2
    again = subprocess.run(SNAKEMAKE + ["--configfile", str(PROFILE), "--directory", str(works[0]), "-n"],
                           capture_output=True, text=True)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    results = [w / "results" / "tuning_test" for w in works]
    a, b = (pd.read_csv(r / "summary.csv") for r in results)
    keep = lambda s: s[~s.metric.str.startswith("train/")].reset_index(drop=True)[["method", "variant", "seed", "metric", "value"]]  # noqa: E731
    pd.testing.assert_frame_equal(keep(a), keep(b))  # same command, same numbers (timings aside)

    track = lbconfig.load_track(TEST_TRACK)
    runs = {(r["method"], r["variant"], r["seed"]): r for r in io.read_json(results[0] / "runs.json")}
    board = pd.read_csv(results[0] / "report" / "tables" / "classification.csv")
    md = (results[0] / "report" / "tables" / "classification.md").read_text()
    html = (results[0] / "report" / "index.html").read_text()
    assert "Tuning (equal budget: 3 trials per method on seeds 10)" in html and "### Tuning (equal budget" in md
    assert "trial0" not in board.to_csv()  # trials never reach the leaderboard
    for m in track["methods"]:
        path = results[0] / "tuning" / "classification" / "digits_lt10" / f"{m}.json"
        choice = io.read_json(path)
        rows = a[(a.method == m) & a.variant.map(tuning.is_trial)]
        assert set(rows.seed) == {10}
        expected = tuning.choose(rows, "val/balanced_accuracy", True, tuning.trials(track, m, "digits_lt10"))
        assert choice["trial"] == expected["trial"] and choice["point"] == expected["point"]
        for seed in (0, 1):
            info = io.read_json(works[0] / f"results/tuning_test/runs/classification/digits_lt10/{m}/tuned/seed{seed}/train.json")
            assert info["tuned_from"] == io.sha256_file(path) and runs[(m, "tuned", seed)]["tuning"]["trial"] == choice["trial"]
            assert info["protocol"]["optimizer"]["lr"] == choice["point"]["lr"]
            assert all(info["hparams"][k] == v for k, v in choice["point"].items() if k != "lr")
        tuned = a[(a.method == m) & (a.variant == "tuned") & (a.metric == "test/balanced_accuracy")]["value"]
        shown = board[(board.method == m) & (board.metric == "test/balanced_accuracy")]["mean"]
        assert shown.iloc[0] == pytest.approx(tuned.mean(), rel=1e-4)
        assert f"| {m} | {choice['trial']} |" in md


def test_one_trial_runs_no_trials_and_the_tuned_run_keeps_the_protocol_setting(tmp_path):
    """trials: 1 (a paper's fixed setup, e.g. grokking): no trial runs; the choice is trial00's point
    with nothing read and no fallback."""
    track = lbconfig.load_track(TEST_TRACK)  # its tuning is track-level
    track = {**track, "tuning": {**track["tuning"], "trials": 1}}
    d = lbconfig.track_datasets(track)[0]
    for m in track["methods"]:
        assert tuning.trials_to_run(track, m, d) == {}
        assert list(lbconfig.variants(track, m, d)) == [tuning.TUNED]
    runs = lbconfig.runs({track["track"]: track})
    assert runs and all(v == tuning.TUNED for _, _, _, v, _ in runs)
    choice = tuning.write_choice(track, d, track["methods"][0], [], tmp_path / "choice.json")
    assert choice["trial"] == "trial00" and choice["fallback"] is False and choice["n_trials"] == 1
    assert choice["point"] == tuning.trials(track, track["methods"][0], d)["trial00"]
