"""A sweep in every track kind goes through the report (issue 16): one Snakemake invocation of
config/tests/sweep.yaml (classification, preference, LM pretraining, grokking; each 2 methods x
2-point grid x 2 seeds, a few steps), then each track's leaderboard has one row per method, at the
variant that is best on the task's selection metric (mean over seeds, computed here from the
summary independently of the report), and the report shows the selection table."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lossbench import tasks

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "config" / "tests" / "sweep.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--workflow-profile", "none"]
MAIN = {"classification": "test/balanced_accuracy", "preference": "test/win_rate", "lm_pretraining": "test/loss",
        "grokking": "test/accuracy"}


def _expected_picks(rows: pd.DataFrame, metric: str, higher: bool) -> dict[str, str]:
    means = rows[rows.metric == metric].groupby(["method", "variant"])["value"].mean()
    best = means.groupby(level="method").idxmax() if higher else means.groupby(level="method").idxmin()
    return {m: v for m, (_, v) in best.items()}


@pytest.mark.slow
def test_sweep_in_every_track_kind_reaches_the_report(tmp_path):
    work = tmp_path / "work"
    out = subprocess.run(SNAKEMAKE + ["--configfile", str(PROFILE), "--directory", str(work), "--cores", "2",
                                      "--force-use-threads"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stderr.count("rule train_run:") == 4 * 2 * 2 * 2
    results = work / "results" / yaml.safe_load(PROFILE.read_text())["profile"]
    summary = pd.read_csv(results / "summary.csv")
    html = (results / "report" / "index.html").read_text()
    assert html.count("Variant selection") >= 4
    for track, main in MAIN.items():
        rows = summary[summary.track == track]
        assert (rows.groupby("method")["variant"].nunique() == 2).all() and set(rows.seed) == {0, 1}, track
        spec = tasks.get(track).SELECTION  # every track here is named after its task
        picks = _expected_picks(rows, spec["metric"], spec["higher_is_better"])
        board = pd.read_csv(results / "report" / "tables" / f"{track}.csv")
        assert not board.duplicated(["dataset", "method", "metric"]).any(), track
        (dataset,) = set(rows.dataset)
        shown = f"{dataset} @best" if track == "preference" else dataset  # preference: its @best view
        main_rows = board[(board.dataset == shown) & (board.metric == main)].set_index("method")
        assert set(main_rows.index) - {"sft"} == set(picks), track  # one row per method (+ π_ref)
        md = (results / "report" / "tables" / f"{track}.md").read_text()
        assert "### Variant selection" in md, track
        for method, variant in picks.items():
            at = rows[(rows.method == method) & (rows.variant == variant) & (rows.metric == main)]["value"]
            assert main_rows.at[method, "mean"] == pytest.approx(at.mean(), rel=1e-4), (track, method)
            assert f"| {method} | {variant} | {spec['metric']} (" in md, (track, method)
