"""A failed run is a result, not a crash: a run that raises is recorded as failed with its
traceback in its log, the DAG goes on and builds the report, whose tables count the failure; the
next invocation retries exactly the failed runs."""
import os

import pandas as pd
import pytest
import yaml

from lossbench import io
from tests.test_workflow import ROOT, _profile, _snakemake

FAILING = "classification/digits_lt10/logit_adjust/default/seed1"


def _track():
    track = yaml.safe_load((ROOT / "config/tracks/classification/smoke.yaml").read_text())
    track["methods"] = ["erm", "logit_adjust"]
    track["method_hparams"] = {m: h for m, h in track.get("method_hparams", {}).items() if m in track["methods"]}
    for key in ("optimizer_axis", "dataset_methods"):
        track.pop(key, None)
    track["seeds"] = [0, 1]
    track["protocols"]["mlp_adam"].update(datasets=["digits_lt10"], budget={"steps": 30, "batch_size": 64})
    track["protocols"] = {"mlp_adam": track["protocols"]["mlp_adam"]}  # not the open-world retrieval protocol
    return track


@pytest.mark.slow
def test_failed_run_is_recorded_and_retried(tmp_path):
    cfg, work = _profile(tmp_path, _track(), "failtest"), tmp_path / "work"
    results = work / "results" / "failtest"
    run_dir = results / "runs" / FAILING

    out = _snakemake(cfg, work, env={**os.environ, "LOSSBENCH_FAIL_RUNS": "*/logit_adjust/*/seed1"})
    assert out.returncode == 0, out.stderr[-4000:]  # the DAG finished, report included
    info = io.read_json(run_dir / "train.json")
    assert info["status"] == "failed" and info["error"]["type"] == "RuntimeError"
    assert "LOSSBENCH_FAIL_RUNS" in info["error"]["message"]
    log = (work / info["log"]).read_text()
    assert "Traceback (most recent call last)" in log and "_injected_failure" in log  # the real line
    tail = out.stderr.strip().splitlines()
    assert any("1 of 4 runs failed" in line for line in tail)
    assert "retry just these runs" in tail[-1]

    summary = pd.read_csv(results / "summary.csv")
    failed = summary[summary.status == "failed"]
    assert set(zip(failed.method, failed.seed)) == {("logit_adjust", 1)}
    assert set(failed.metric) == {"train/wall_seconds"}  # no artefact of the failed run was read
    html = (results / "report" / "index.html").read_text()
    assert "Failed runs (1)" in html and "failure injected" in html
    md = (results / "report" / "tables" / "classification.md").read_text()
    assert "| failed |" in md.replace("failed |", "failed |")

    # the same command again, without the fault: exactly the failed run is retried
    again = _snakemake(cfg, work)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("rule train_run:") == 1
    assert io.read_json(run_dir / "train.json")["status"] == "ok"
    assert "runs failed" not in again.stderr
    assert "Failed runs" not in (results / "report" / "index.html").read_text()
    dry = _snakemake(cfg, work, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
