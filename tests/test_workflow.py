"""The DAG itself: the smoke profile builds, and a reduced smoke run goes end to end, reruns
nothing when complete, resumes only what is missing, and gives the same numbers twice."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.hub_fixtures import (hub_protocol, hub_track, lm_dir, rm_dir, root, task_dir,  # noqa: F401
                                tokenizer_dir, uf_dir)

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def test_smoke_dag_builds():
    # --forceall: the whole DAG, whether or not a smoke run already left results behind
    out = subprocess.run(SNAKEMAKE + ["-n", "--forceall", "--quiet", "rules"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "train_run" in out.stdout and "build_report" in out.stdout


def _profile(tmp_path, track: dict | list[dict], profile: str) -> Path:
    """A profile config that runs `track` (or a list of tracks) alone, its results under results/<profile>/."""
    paths = {}
    for t in track if isinstance(track, list) else [track]:
        paths[t["track"]] = tmp_path / f"track_{t['track']}.yaml"
        paths[t["track"]].write_text(yaml.safe_dump(t))
    cfg = tmp_path / f"{profile}.yaml"
    cfg.write_text(yaml.safe_dump({"profile": profile, "device": "cpu",
                                   "tracks": {name: str(path) for name, path in paths.items()}}))
    return cfg


def test_config_typo_stops_the_dag(tmp_path):
    track = yaml.safe_load((ROOT / "config/tracks/classification/smoke.yaml").read_text())
    track["methods"].append("focall")
    cfg = _profile(tmp_path, track, "typo")
    out = subprocess.run(SNAKEMAKE + ["-n", "--workflow-profile", "none", "--configfile", str(cfg)],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0
    assert "unknown method 'focall'" in out.stdout + out.stderr


def _reduced_classification_track(methods=("erm", "logit_adjust", "resample"), seeds=(0, 1)) -> dict:
    """The smoke classification track on digits_lt10 alone, 40 steps, these methods and seeds."""
    track = yaml.safe_load((ROOT / "config/tracks/classification/smoke.yaml").read_text())
    track["methods"] = list(methods)
    track["method_hparams"] = {m: h for m, h in track.get("method_hparams", {}).items() if m in track["methods"]}
    track.pop("optimizer_axis", None)  # its runs would join the train_run count below
    track.pop("dataset_methods", None)  # it names methods this reduced track drops
    track["seeds"] = list(seeds)
    track["protocols"]["mlp_adam"].update(datasets=["digits_lt10"], budget={"steps": 40, "batch_size": 64})
    track["protocols"] = {"mlp_adam": track["protocols"]["mlp_adam"]}  # not the open-world retrieval protocol
    return track


def _reduced_config(tmp_path):
    return _profile(tmp_path, _reduced_classification_track(), "itest")


def _run_track(tmp_path, track: dict, profile: str, env=None):
    """Run `track` alone through the whole DAG in tmp_path/work and check that it succeeded;
    (profile config, work folder, the finished process) for further checks and dry runs."""
    cfg, work = _profile(tmp_path, track, profile), tmp_path / "work"
    out = _snakemake(cfg, work, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    return cfg, work, out


def _snakemake_cmd(cfg, workdir, *extra):
    """Snakemake on profile config `cfg` in `workdir`, no workflow profile: `extra` says how jobs run."""
    return SNAKEMAKE + ["--workflow-profile", "none", "--configfile", str(cfg), "--directory", str(workdir), *extra]


def _snakemake(cfg, workdir, *extra, env=None):
    cmd = _snakemake_cmd(cfg, workdir, "--cores", "2", "--force-use-threads", *extra)
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_reduced_smoke_dag_end_to_end(tmp_path):
    cfg = _reduced_config(tmp_path)
    work = tmp_path / "work"
    runs = work / "results" / "itest" / "runs" / "classification" / "digits_lt10"

    # an interrupted DAG: only two runs finished before it was stopped
    done_first = [runs / "erm" / "default" / "seed0" / "run.json", runs / "resample" / "default" / "seed1" / "run.json"]
    out = _snakemake(cfg, work, *(str(p.relative_to(work)) for p in done_first))
    assert out.returncode == 0, out.stderr[-4000:]
    first = pd.read_csv(done_first[1].parent / "metrics.csv")

    # rerunning the whole DAG finishes the missing jobs only
    out = _snakemake(cfg, work)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stderr.count("rule train_run:") == 6 - len(done_first)
    results = work / "results" / "itest"
    summary = pd.read_csv(results / "summary.csv")
    assert set(summary.method) == {"erm", "logit_adjust", "resample"} and set(summary.seed) == {0, 1}
    assert {"track", "dataset", "method", "seed", "metric", "value"} <= set(summary.columns)
    html = (results / "report" / "index.html").read_text()
    assert "logit_adjust" in html and "claims" in html.lower()

    # complete: nothing to do
    dry = _snakemake(cfg, work, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr

    # same command, same numbers (CPU): retrain one run from scratch and compare
    # (Snakemake does not rebuild an intermediate file whose downstream outputs are all present,
    # so the run and everything downstream of it goes)
    shutil.rmtree(done_first[1].parent)
    (results / "summary.csv").unlink()
    shutil.rmtree(results / "report")
    again = _snakemake(cfg, work)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("rule train_run:") == 1
    second = pd.read_csv(done_first[1].parent / "metrics.csv")
    keep = ~first.metric.str.startswith("train/")  # wall time and throughput vary
    pd.testing.assert_series_equal(first.value[keep], second.value[keep])

    # the smoke protocol trains each run's seeds together (seeds_together): one group job per
    # (method, variant), whose seed folders the seeds' train_run copy
    info = json.loads((runs / "erm" / "default" / "seed1" / "train.json").read_text())
    assert info["trained_together"]["seeds"] == [0, 1] and info["status"] == "ok"
    group = results / "together" / "classification" / "digits_lt10" / "erm" / "default"
    assert json.loads((group / "seeds.json").read_text())["runs"] == {"seed0": "ok", "seed1": "ok"}


@pytest.mark.slow
def test_a_failed_group_of_seeds_trains_each_seed_alone(tmp_path):
    """A group of seeds trained together that fails (here injected) loses nothing: its index records
    the error and each seed's train_run trains that seed on its own."""
    cfg = _profile(tmp_path, _reduced_classification_track(methods=("erm",)), "itest")
    work = tmp_path / "work"
    env = {**os.environ, "LOSSBENCH_FAIL_RUNS": "classification/digits_lt10/erm/default/together"}
    out = _snakemake(cfg, work, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    results = work / "results" / "itest"
    index = json.loads((results / "together/classification/digits_lt10/erm/default/seeds.json").read_text())
    assert index["status"] == "failed" and "LOSSBENCH_FAIL_RUNS" in index["error"]
    for seed in (0, 1):
        info = json.loads((results / f"runs/classification/digits_lt10/erm/default/seed{seed}/train.json").read_text())
        assert info["status"] == "ok" and "trained_together" not in info and "copied_from" not in info


@pytest.mark.slow
def test_reduced_preference_dag_end_to_end(tmp_path):
    """The preference stages wired by Snakemake: TGDPO waits for its DPO guide, every run gets a
    sample_eval, and the report shows the track's views and claims."""
    track = yaml.safe_load((ROOT / "config/tracks/preference/smoke.yaml").read_text())
    track["methods"], track["seeds"] = ["dpo", "tgdpo", "npo"], [0, 1]
    track["sweep"] = {m: track["sweep"][m] for m in track["methods"]}
    track["dataset_methods"] = {"synthpref_eps20": ["dpo"]}
    track["protocols"]["synthpref_tiny"].update(
        model={"arch": "gpt2", "d_model": 16, "layers": 1, "heads": 2, "context": 48},
        sft={"prompts": 300, "secrets": 6, "forget": 2, "repeats": 5, "steps": 30, "batch_size": 32, "lr": 3e-3,
             "revision_steps": 8},  # the smoke protocol's revision evaluation (eval: revisions) needs it
        pairs={"train": 40, "val": 16, "test": 16, "list_size": 3, "tau_bt": 0.25},
        train={"steps": 4, "batch_size": 4, "probe_every": 2, "probe_pairs": 4},
        overoptimization={"datasets": ["synthpref", "synthpref_eps25"], "members": 2, "prompts": 8, "samples": 4,
                          "lambda": 0.5})
    cfg, work, out = _run_track(tmp_path, track, "ptest")
    assert out.stderr.count("rule pref_sft:") == 2 and out.stderr.count("rule pref_sample_eval:") == 16
    assert out.stderr.count("rule pref_overopt:") == 4  # 2 seeds x (clean, 25% flipped)
    results = work / "results" / "ptest"
    assert set(pd.read_csv(results / "overopt.csv")["seed"]) == {0, 1}
    assert (results / "report" / "figures" / "preference__overopt.png").exists()
    assert (results / "report" / "figures" / "preference__synthpref__best__revisions.png").exists()
    summary = pd.read_csv(results / "summary.csv")
    assert set(summary.variant) == {"beta0.1", "beta1.0"} and set(summary.dataset) == {"synthpref", "synthpref_eps20"}
    html = (results / "report" / "index.html").read_text()
    for text in ("synthpref @best", "synthpref @matched-kl", "synthpref @unlearning", "frontier", "TGDPO"):
        assert text in html


@pytest.mark.slow
def test_reduced_hub_preference_dag_end_to_end(tmp_path, lm_dir, rm_dir, uf_dir, task_dir):
    """The real-LM testbed wired by Snakemake, offline on the tiny local stand-ins: π_ref and the judge
    resolved once, π_ref's capability scored once, one pairs stage for the seed, MADPO's proxy RM,
    and each run trained, sampled and judged, scored by lm-eval and evaluated into the report."""
    proto = hub_protocol(lm_dir, rm_dir, uf_dir, task_dir)
    proto["datasets"] = ["ultrafeedback"]
    track = hub_track(proto, ["dpo", "madpo"])
    track.update(sweep={"dpo": {"beta": [0.1]}, "madpo": {"beta": [0.1]}}, dataset_methods={})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "BENCH_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets_cache")}
    cfg, work, out = _run_track(tmp_path, track, "htest", env=env)
    once = ("pref_reference", "pref_ref_capability", "pref_sample", "pref_label", "pref_reward_model")
    assert all(out.stderr.count(f"rule {r}:") == 1 for r in once)
    assert all(out.stderr.count(f"rule {r}:") == 2 for r in ("train_run", "pref_sample_eval", "pref_capability"))
    results = work / "results" / "htest"
    summary = pd.read_csv(results / "summary.csv")
    assert set(summary.method) == {"dpo", "madpo"} and set(summary.dataset) == {"ultrafeedback"}
    values = summary.groupby("metric")["value"]
    assert values.apply(lambda v: v.between(0, 1).all())[["test/win_rate", "capability/tiny_mc_acc",
                                                           "test/judge_agreement"]].all()
    assert values.apply(lambda v: v.isna().all())["test/idealized_ranking_accuracy"]  # SynthPref only
    assert not summary.metric.isin(["test/cov", "forget/forget_loglik"]).any()
    html = (results / "report" / "index.html").read_text()
    assert "ultrafeedback @best" in html and "ultrafeedback @matched-kl" in html and "Capability acc." in html
    dry = _snakemake(cfg, work, "-n", env=env)
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.slow
def test_reduced_lm_pretraining_dag_end_to_end(tmp_path):
    """The LM track wired by Snakemake on the embedded Shakespeare mixture: the corpus prepared once,
    one reference stage per seed read only by the methods that need it, every run evaluated, and
    the report's LM section (time to target, per-domain bars, weight histograms)."""
    track = yaml.safe_load((ROOT / "config/tracks/lm_pretraining/smoke.yaml").read_text())
    track["methods"], track["seeds"] = ["uniform", "dlsr_linupper", "preselect"], [0, 1]
    track["method_hparams"] = {}
    track["protocols"]["t0_mix"].update(
        model={"arch": "gpt2", "d_model": 16, "layers": 1, "heads": 2, "context": 160},
        budget={"steps": 6, "batch_size": 8}, data={"pool_chunks": 200},
        eval={"every": 3, "chunks_per_domain": 4, "lm_eval": {"tasks": ["shakespeare_cloze"], "local": True,
                                                             "docs": 8, "limit": 8}},
        reference={"steps": 8, "checkpoints": 3, "projection": [4, 4]})
    cfg, work, out = _run_track(tmp_path, track, "ltest")
    assert out.stderr.count("rule prepare_source:") == 1 and out.stderr.count("rule lm_reference:") == 2
    assert out.stderr.count("rule train_run:") == 6
    summary = pd.read_csv(work / "results" / "ltest" / "summary.csv")
    assert set(summary.method) == {"uniform", "dlsr_linupper", "preselect"}
    kept = summary[summary.metric == "train/kept_fraction"].set_index(["method", "seed"])["value"]
    assert (kept.loc["preselect"] == 0.5).all() and (kept.loc["uniform"] == 1.0).all()
    html = (work / "results" / "ltest" / "report" / "index.html").read_text()
    for text in ("lm_pretraining", "Tokens to target", "Test loss per domain", "weights over training", "Sow et al."):
        assert text in html, text


def _reduced_grokking_track(methods=("erm", "orthograd", "stablemax"), seeds=None) -> dict:
    """The smoke grokking track with a 16-unit MLP for 12 steps (seeds: the smoke track's unless given)."""
    track = yaml.safe_load((ROOT / "config/tracks/grokking/smoke.yaml").read_text())
    track["methods"] = list(methods)
    if seeds is not None:
        track["seeds"] = list(seeds)
    track["protocols"]["grok_smoke"].update(model={"hidden": [16]}, budget={"steps": 12},
                                            eval={"every": 4, "early_points": 2})
    return track


@pytest.mark.slow
def test_reduced_grokking_dag_end_to_end(tmp_path):
    """The grokking track wired by Snakemake: the modular-arithmetic source prepared once, every run
    trained and evaluated, and the report's grokking section (steps-to-grok table, diagnostics, claims)."""
    cfg, work, out = _run_track(tmp_path, _reduced_grokking_track(), "gtest")
    assert out.stderr.count("rule prepare_source:") == 1 and out.stderr.count("rule train_run:") == 6
    results = work / "results" / "gtest"
    summary = pd.read_csv(results / "summary.csv")
    assert set(summary.method) == {"erm", "orthograd", "stablemax"} and set(summary.seed) == {0, 1}
    assert {"test/steps_to_grok", "test/grokked", "train/first_collapse_step"} <= set(summary.metric)
    curves = pd.read_csv(results / "curves.csv")
    assert sorted(curves.step.unique()) == [0, 1, 2, 4, 8, 12]
    html = (results / "report" / "index.html").read_text()
    for text in ("Track grokking", "Steps to grok", "grokked seeds", "Softmax Collapse", "⊥Grad", "StableMax"):
        assert text in html, text
    assert (results / "report" / "figures" / "grokking__mod113_add_f40__diagnostics.png").exists()
    dry = _snakemake(cfg, work, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.slow
def test_reduced_kernels_dag_end_to_end(tmp_path):
    """A benchmarks-only profile: one kernel_bench job per slice, the aggregated table, the report's
    kernels section with its figure and claims, nothing to redo when complete, and a changed
    measurement setting reruns every slice."""
    track = yaml.safe_load((ROOT / "config/tracks/kernels/smoke.yaml").read_text())
    track["measure"].update(reps=3, copy_bytes=1 << 20, gemm_n=64, err_tokens=16)
    track["impls"] = ["ce_eager", "lce_chunked", "cce", "softmax_3p_recompute", "softmax_2p_extexp"]
    track["slices"] = {"ce": {"bench": "linear_ce", "n": [32], "v": [100, 400], "d": [8], "dtype": ["float32"]},
                       "sm": {"bench": "softmax", "n": [8], "v": [64, 256], "dtype": ["float32"]}}
    (tmp_path / "kernels.yaml").write_text(yaml.safe_dump(track))
    cfg = tmp_path / "ktest.yaml"
    cfg.write_text(yaml.safe_dump({"profile": "ktest", "device": "cpu",
                                   "benchmarks": {"kernels": str(tmp_path / "kernels.yaml")}}))
    work = tmp_path / "work"
    out = _snakemake(cfg, work)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stderr.count("rule kernel_bench:") == 2 and "rule train_run:" not in out.stderr
    results = work / "results" / "ktest"
    table = pd.read_csv(results / "kernels.csv")
    assert set(table.track) == {"kernels"} and set(table.slice) == {"ce", "sm"}
    ok = table[(table.status == "ok") & (table.bench != "device")]
    assert set(ok.impl) == {"ce_eager", "lce_chunked", "softmax_3p_recompute", "softmax_2p_extexp"}
    assert table[table.impl == "cce"].note.unique().tolist() == ["cce runs on cuda only"]
    html = (results / "report" / "index.html").read_text()
    for text in ("Benchmark kernels", "Distance from the bound", "cce runs on cuda only", "Cut Your Losses"):
        assert text in html, text
    assert list((results / "report" / "figures").glob("kernels__linear_ce_*.png"))
    dry = _snakemake(cfg, work, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    track["measure"]["reps"] = 4
    (tmp_path / "kernels.yaml").write_text(yaml.safe_dump(track))
    dry = _snakemake(cfg, work, "-n")
    assert (dry.stdout + dry.stderr).count("rule kernel_bench:") == 2
