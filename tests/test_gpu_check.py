"""The prepared GPU check (benchmarks/gpu_check.sh) run on the CPU at smoke size (--tiny): every
step runs, is time-boxed and recorded, and the results land where `lossbench publish` reads them.
What only a GPU shows (the gpu tests passing, CUDA kernels, the 8-minute budget) is not tested here."""
import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lossbench import config as lbconfig

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks/gpu_check.sh")]).returncode == 0


def test_gpu_check_config_runs_the_full_protocols(tmp_path):
    """The GPU profile's tracks extend the full ones: their protocols are the full ones (so the same
    cost-table keys), for the embedded datasets."""
    from benchmarks.gpu_check import write_config

    cfg, tracks = lbconfig.load_profile(write_config(tmp_path, tiny=False, device="cuda"))
    for name in ("classification", "preference"):
        full = lbconfig.load_track(ROOT / f"config/tracks/{name}/full.yaml")
        assert all(full["protocols"][p] == proto for p, proto in tracks[name]["protocols"].items())
        assert tracks[name]["seeds"] == [0]
    runs = lbconfig.runs(tracks, cfg["datasets"])
    assert {r[1] for r in runs} == {"mnist1d_lt100", "mnist1d_sym40", "synthpref"}
    assert lbconfig.load_benchmarks(cfg)["kernels"]["slices"]["gemma2_2b_8k"]["vd"] == [[256000, 2304]]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("LOSSBENCH_GPU_CHECK_TEST") != "1",
                    reason="the whole GPU check at smoke size (~3 min on 2 cores) would push the suite past 10 min: LOSSBENCH_GPU_CHECK_TEST=1 runs it")
def test_gpu_check_tiny_on_cpu(tmp_path):
    out = tmp_path / "gpu_check"
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(out), "CORES": "2", "TIMEOUT_SCALE": "4"}
    res = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--tiny"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    prov = json.loads((out / "provenance.json").read_text())
    assert [s["step"] for s in prov["steps"]] == ["gpu_tests", "dag", "kernels", "report", "together", "throughput"]
    assert prov["all_ok"], prov["steps"]
    assert all(s["seconds"] <= s["timeout_s"] for s in prov["steps"]) and prov["commit"]
    results = out / "dag" / "results" / "gpu_check"  # what `lossbench publish` reads
    for name in ("summary.csv", "runs.json", "provenance.json", "kernels.csv", "kernels.json", "report/index.html"):
        assert (results / name).exists(), name
    summary = pd.read_csv(results / "summary.csv")
    assert set(summary.track) == {"classification", "preference"} and (summary.status == "ok").all()
    table = yaml.safe_load((out / "throughput.yaml").read_text())
    measured = [k for k, e in table["jobs"].items() if k.startswith("train_run/") and e["cpu"].get("measured")]
    assert measured and table["devices"]["cpu"]["command"].startswith("python")
