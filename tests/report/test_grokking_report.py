"""The grokking section of the report: the steps-to-grok table (time to target, misses as ∞)."""
import numpy as np
import pandas as pd

from lossbench.report import grokking


def _summary(values: dict) -> pd.DataFrame:
    rows = [{"track": "grokking", "dataset": "d", "method": m, "seed": s, "metric": metric, "value": v,
             "status": "ok"}
            for m, per_metric in values.items() for metric, seeds in per_metric.items() for s, v in enumerate(seeds)]
    return pd.DataFrame(rows)


def test_steps_table_counts_misses_as_infinite():
    nan = np.nan
    summary = _summary({
        "fast": {"test/steps_to_grok": [100, nan, 200], "test/steps_to_grok_99": [150, nan, nan],
                 "train/steps_to_memorize": [100, 90, 200], "train/first_collapse_step": [nan, nan, nan]},
        "never": {"test/steps_to_grok": [nan, nan, nan], "test/steps_to_grok_99": [nan, nan, nan],
                  "train/steps_to_memorize": [50, 50, 60], "train/first_collapse_step": [2000, 3000, 2500]},
    })
    summary.loc[(summary.method == "never") & (summary.seed == 2), "status"] = "diverged"  # left out
    table = grokking.steps_table(summary, ["fast", "never"])
    fast, never = table["rows"]
    assert fast == ["fast", "2/3", "200", "not reached", "100", "not reached", "0: 100, 1: —, 2: 200"]
    assert never == ["never", "0/2", "not reached", "not reached", "50", "2500", "0: —, 1: —"]
    assert len(table["headers"]) == len(fast)
    md = grokking.markdown(table)
    assert md.startswith("### Steps to grok") and "| fast | 2/3 | 200 |" in md
