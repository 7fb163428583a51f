"""The LM track's cross-run metric: tokens to reach the (tuned) uniform baseline's final validation
loss of the same seed."""
import numpy as np
import pandas as pd

from lossbench.report import lm_pretraining as lm


def _data():
    keys = dict(track="lm", dataset="d")
    curves, summary = [], []
    # seed 0: uniform's two variants end at 3.0 and 2.8 (the tuned target is 2.8); seed 1 ends at 3.5
    runs = {("uniform", "lr1", 0): [4.0, 3.5, 3.0], ("uniform", "lr2", 0): [4.0, 3.2, 2.8],
            ("fast", "default", 0): [3.5, 2.8, 2.5], ("slow", "default", 0): [4.5, 3.9, 2.9],
            ("uniform", "lr1", 1): [4.0, 3.6, 3.5], ("uniform", "lr2", 1): [4.1, 3.7, 3.6],
            ("fast", "default", 1): [3.9, 3.4, 3.3], ("slow", "default", 1): [4.4, 4.0, np.nan]}
    for (m, v, s), losses in runs.items():
        for i, x in enumerate(losses):
            curves.append({**keys, "method": m, "variant": v, "seed": s, "tokens": 1000 * (i + 1),
                           "metric": "val/loss", "value": x})
        summary.append({**keys, "method": m, "variant": v, "seed": s, "metric": "val/loss", "value": losses[-1]})
    return {"summary": pd.DataFrame(summary), "curves": pd.DataFrame(curves),
            "provenance": {"tracks": {"lm": {"task": "lm_pretraining", "baseline": "uniform"}}}}


def test_tokens_to_target_is_paired_by_seed_against_the_tuned_baseline():
    data = _data()
    lm.add_time_to_target(data, "lm")
    s = data["summary"]
    ttt = s[s.metric == "val/tokens_to_target"].set_index(["method", "variant", "seed"])["value"]
    reached = s[s.metric == "val/reached_target"].set_index(["method", "variant", "seed"])["value"]
    assert ttt[("fast", "default", 0)] == 2000 and ttt[("fast", "default", 1)] == 2000  # 2.8 ≤ 2.8; 3.4 ≤ 3.5
    assert ttt[("uniform", "lr2", 0)] == 3000 and np.isnan(ttt[("uniform", "lr1", 0)])  # 3.0 never reaches 2.8
    assert np.isnan(ttt[("slow", "default", 0)]) and reached[("slow", "default", 0)] == 0.0
    assert np.isnan(ttt[("slow", "default", 1)])  # a diverged (NaN) run never reaches it
    assert reached[("fast", "default", 0)] == 1.0


def test_not_an_lm_track_without_the_task():
    assert not lm.is_lm({"provenance": {"tracks": {"x": {"task": "classification"}}}}, "x")
    assert lm.is_lm(_data(), "lm")
