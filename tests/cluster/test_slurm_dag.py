"""The DAG on a real SLURM cluster: a reduced two-track profile (classification and grokking) runs
through Snakemake's SLURM executor with the project's profiles/slurm, on a one-node cluster this test
starts (tests/cluster/slurm_cluster.py), and its tidy results equal a local `--cores 2` run's.

Skipped where SLURM is not installed or the test is not root, unless LOSSBENCH_REQUIRE_CLUSTER=1
(CI), which makes that a failure."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.cluster import slurm_cluster
from tests.test_workflow import (ROOT, _profile, _reduced_classification_track, _reduced_grokking_track,
                                 _snakemake, _snakemake_cmd)

# metrics that measure the machine, not the training: they differ between any two runs
TIMING = r"seconds|per_second|wall"
# what Snakemake submits to SLURM; the rest (evaluation, tables, report) are localrules
SLURM_RULES = ("prepare_source", "train_run")


@pytest.fixture(scope="module")
def cluster():
    reason = slurm_cluster.unavailable()
    if reason:
        if os.environ.get("LOSSBENCH_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"LOSSBENCH_REQUIRE_CLUSTER=1 but no test SLURM cluster can start: {reason}")
        pytest.skip(reason)
    with slurm_cluster.slurm_cluster() as c:
        yield c


def _tidy(results: Path) -> pd.DataFrame:
    summary = pd.read_csv(results / "summary.csv")
    summary = summary[~summary.metric.str.contains(TIMING)]
    return summary.sort_values(["track", "dataset", "method", "variant", "seed", "metric"]).reset_index(drop=True)


@pytest.mark.cluster
@pytest.mark.slow
def test_reduced_dag_on_slurm_equals_local_run(tmp_path, cluster):
    # two tracks, two methods each, one seed: 2 prepare_source + 4 train_run SLURM jobs, three waves
    # on a 2-CPU node (each job starts Snakemake twice and a torch worker: 20-30 s on 2 slow cores)
    tracks = [_reduced_classification_track(methods=("erm", "logit_adjust"), seeds=(0,)),
              _reduced_grokking_track(methods=("erm", "stablemax"), seeds=(0,))]
    cfg = _profile(tmp_path, tracks, "slurmtest")  # its own results profile and work folders
    n_runs = 4

    start = time.monotonic()
    local = _snakemake(cfg, tmp_path / "local")
    local_seconds = time.monotonic() - start
    assert local.returncode == 0, local.stderr[-4000:]

    # the README's cluster command: --profile profiles/slurm, the partition and status command on the
    # command line; the fast first status check and kept logs are for the test
    work = tmp_path / "slurm"
    cmd = _snakemake_cmd(cfg, work, "--profile", str(ROOT / "profiles" / "slurm"),
                         "--default-resources", f"slurm_partition={cluster.partition}",
                         "--slurm-status-command", "squeue",
                         "--slurm-init-seconds-before-status-checks", "2",
                         "--slurm-keep-successful-logs", "--latency-wait", "5")
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    slurm_seconds = time.monotonic() - start
    assert out.returncode == 0, out.stderr[-6000:] + "\n" + cluster.logs()

    # the submitted jobs went through SLURM: one batch job each, all completed, in the partition given
    log = out.stdout + out.stderr
    submitted = {r: log.count(f"rule {r}:") for r in SLURM_RULES}
    assert submitted == {"prepare_source": 2, "train_run": n_runs}, submitted
    assert log.count("rule evaluate_run:") == n_runs  # a localrule: run here, not submitted
    jobs = cluster.jobs()
    assert len(jobs) == sum(submitted.values()), jobs
    assert {j["state"] for j in jobs} == {"COMPLETED"} and {j["partition"] for j in jobs} == {cluster.partition}
    # what each job asked SLURM for is what its rule declares (workflows/resources.smk): 1 CPU,
    # 4000 MB, 60 min, and no GPU on a CPU profile (gpu=0 adds no --gpus)
    shown = [cluster.job(j["id"]) for j in jobs]
    assert sorted(j["Comment"].split("_wildcards_")[0] for j in shown) == sorted(
        f"rule_{r}" for r, n in submitted.items() for _ in range(n))
    for j in shown:
        assert (j["NumCPUs"], j["MinMemoryNode"], j["TimeLimit"]) == ("1", "4000M", "01:00:00"), j
        assert "gpu" not in j["TRES"] and j["WorkDir"] == str(work), j
    slurm_logs = work / ".snakemake" / "slurm_logs"
    assert {r: len(list((slurm_logs / f"rule_{r}").rglob("*.log"))) for r in SLURM_RULES} == submitted

    # same numbers as the local run, timing aside
    local_tidy, slurm_tidy = _tidy(tmp_path / "local" / "results" / "slurmtest"), _tidy(work / "results" / "slurmtest")
    assert set(slurm_tidy.track) == {"classification", "grokking"}
    assert slurm_tidy.groupby(["track", "method"]).ngroups == n_runs
    assert set(slurm_tidy.status) == {"ok"}  # equal because both trained, not because both failed
    pd.testing.assert_frame_equal(local_tidy, slurm_tidy)
    assert (work / "results" / "slurmtest" / "report" / "index.html").exists()
    print(f"\nSLURM run: {sum(submitted.values())} SLURM jobs + {n_runs + 2} local jobs in {slurm_seconds:.0f} s; "
          f"local --cores 2 run: {local_seconds:.0f} s; tidy results equal ({len(slurm_tidy)} rows, timing aside)",
          file=sys.stderr)
