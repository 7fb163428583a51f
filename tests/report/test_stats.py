"""lossbench.stats: t intervals, paired differences, leaderboard flags and the best set."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from lossbench.stats import leaderboard, mean_ci, paired_diff

META = {"acc": {"higher_is_better": True}, "ece": {"higher_is_better": False}}


def tidy(values: dict, metric="acc", track="t", dataset="d") -> pd.DataFrame:
    """{method: [value per seed]} -> tidy rows; None leaves the run out."""
    return pd.DataFrame([
        {"track": track, "dataset": dataset, "method": m, "seed": s, "metric": metric,
         "value": v, "status": "diverged" if v is not None and math.isnan(v) else "ok"}
        for m, vs in values.items() for s, v in enumerate(vs) if v is not None])


def row(board, method, metric="acc"):
    return board[(board["method"] == method) & (board["metric"] == metric)].iloc[0]


def test_mean_ci_matches_hand_computed_t_interval():
    mean, hw, n = mean_ci([1.0, 2.0, 3.0, 4.0])
    # s = sqrt(5/3) = 1.290994, t_{0.975, 3} = 3.182446: hw = 3.182446 * 1.290994 / 2
    assert (mean, n) == (2.5, 4)
    assert hw == pytest.approx(2.054260, abs=1e-6)
    lo, hi = st.t.interval(0.95, 3, loc=2.5, scale=st.sem([1, 2, 3, 4]))
    assert (mean - hw, mean + hw) == pytest.approx((lo, hi))


def test_mean_ci_level_and_nan_handling():
    mean, hw, n = mean_ci([1.0, np.nan, 3.0], level=0.90)
    assert (mean, n) == (2.0, 2)
    assert hw == pytest.approx(st.t.ppf(0.95, 1) * math.sqrt(2) / math.sqrt(2))  # 6.313752
    one = mean_ci([5.0, np.nan])
    assert one[0] == 5.0 and math.isnan(one[1]) and one[2] == 1
    none = mean_ci([np.nan])
    assert math.isnan(none[0]) and math.isnan(none[1]) and none[2] == 0


def test_paired_difference_is_significant_both_ways_where_unpaired_is_not():
    seed_effect = [0.50, 0.70, 0.60, 0.80]  # large data-seed variation shared by all methods
    df = tidy({"base": seed_effect,
               "up": [v + 0.05 + e for v, e in zip(seed_effect, [0.01, -0.01, 0.0, 0.005])],
               "down": [v - 0.05 + e for v, e in zip(seed_effect, [0.01, -0.01, 0.0, 0.005])]})
    diff = paired_diff(df, "base").set_index("method")
    assert diff.loc["up", "diff_ci_low"] > 0 and diff.loc["down", "diff_ci_high"] < 0
    assert diff.loc["up", "diff_mean"] == pytest.approx(0.05125)
    # hand check: differences 0.06, 0.04, 0.05, 0.055 -> t-CI half-width
    d = np.array([0.06, 0.04, 0.05, 0.055])
    assert diff.loc["up", "diff_half_width"] == pytest.approx(
        st.t.ppf(0.975, 3) * d.std(ddof=1) / 2)
    # unpaired, the seed spread swamps the 0.05 gap
    up, base = mean_ci(df[df.method == "up"].value), mean_ci(df[df.method == "base"].value)
    assert up[0] - up[1] < base[0] + base[1]
    assert diff.loc["base", "diff_mean"] == 0


def test_leaderboard_flags_respect_metric_direction():
    seeds = [0.50, 0.70, 0.60]
    values = {"erm": seeds, "hi": [v + 0.1 + 0.01 * i for i, v in enumerate(seeds)]}
    df = pd.concat([tidy(values, "acc"), tidy(values, "ece")])
    board = leaderboard(df, {"t": "erm"}, metrics=META)
    hi_acc, hi_ece = row(board, "hi", "acc"), row(board, "hi", "ece")
    assert hi_acc.beats_baseline and not hi_acc.worse_than_baseline
    assert hi_ece.worse_than_baseline and not hi_ece.beats_baseline
    assert not row(board, "erm").beats_baseline and not row(board, "erm").worse_than_baseline
    assert row(board, "hi", "acc").best and not row(board, "erm", "acc").best
    assert row(board, "erm", "ece").best and not row(board, "hi", "ece").best
    # without direction metadata nothing is flagged
    bare = leaderboard(df, {"t": "erm"}, metrics={})
    assert not bare[["beats_baseline", "worse_than_baseline", "best"]].any().any()


def test_pairs_only_shared_seeds_and_counts_missing_and_diverged():
    df = tidy({"erm": [0.5, 0.7, 0.6], "a": [0.6, None, 0.7], "b": [0.55, 0.75, float("nan")]})
    board = leaderboard(df, {"t": "erm"}, metrics=META, methods={"t": ["ghost"]})
    a, b, ghost = row(board, "a"), row(board, "b"), row(board, "ghost")
    assert (a.n, a.diff_n, a.n_diverged) == (2, 2, 0)
    assert (b.n, b.diff_n, b.n_diverged) == (2, 2, 1)
    assert a["mean"] == pytest.approx(0.65) and b["mean"] == pytest.approx(0.65)
    assert ghost.n == 0 and math.isnan(ghost["mean"]) and not ghost.best


def test_best_set_holds_the_best_and_the_indistinguishable():
    df = tidy({"top": [0.80, 0.60, 0.70, 0.75],
               "near": [0.79, 0.62, 0.68, 0.74],   # differences to top change sign
               "far": [0.70, 0.50, 0.61, 0.64],    # always ~0.1 below top
               "solo": [0.95, None, None, None]})  # best mean, but a single seed: no CI
    board = leaderboard(df.query("method != 'solo'"), {"t": "far"}, metrics=META)
    assert set(board.loc[board.best, "method"]) == {"top", "near"}
    # a best method with one seed cannot exclude anyone: everything with runs stays in the set
    board = leaderboard(df, {"t": "far"}, metrics=META)
    assert set(board.loc[board.best, "method"]) == {"top", "near", "far", "solo"}


def test_duplicate_runs_are_rejected():
    df = tidy({"erm": [0.5, 0.6]})
    with pytest.raises(ValueError):
        paired_diff(pd.concat([df, df]), "erm")


SEEDS5 = [0.50, 0.70, 0.60, 0.80, 0.55]  # shared data-seed effect
MARGINAL = [0.03, 0.01, 0.035, 0.005, 0.02]  # paired differences: p ≈ 0.025 alone
STRONG = [0.10, 0.11, 0.09, 0.105, 0.10]  # p ≈ 7e-6


def with_diffs(diffs: dict) -> pd.DataFrame:
    """erm on SEEDS5 plus one method per entry, erm + its per-seed differences."""
    return tidy({"erm": SEEDS5, **{m: [b + d for b, d in zip(SEEDS5, ds)] for m, ds in diffs.items()}})


def nulls(k: int) -> dict:
    """k methods whose differences to erm average zero (rotations of one pattern)."""
    pattern = [0.01, -0.01, 0.02, -0.02, 0.0]
    return {f"null{i}": pattern[i % 5:] + pattern[:i % 5] for i in range(k)}


def test_diff_p_agrees_with_scipy_paired_t_test():
    board = leaderboard(with_diffs({"win": MARGINAL, "strong": STRONG}), {"t": "erm"}, metrics=META)
    for method in ("win", "strong"):
        values = [b + d for b, d in zip(SEEDS5, MARGINAL if method == "win" else STRONG)]
        assert row(board, method).diff_p == pytest.approx(st.ttest_rel(values, SEEDS5).pvalue, rel=1e-6)
    assert math.isnan(row(board, "erm").diff_p_holm)  # the baseline is not in the family
    # a family of two: Holm multiplies the smaller p by 2 and the larger by 1 (monotone)
    assert row(board, "strong").diff_p_holm == pytest.approx(2 * row(board, "strong").diff_p)
    assert row(board, "win").diff_p_holm == pytest.approx(row(board, "win").diff_p)


def test_holm_removes_a_marginal_win_among_many_methods():
    alone = leaderboard(with_diffs({"win": MARGINAL}), {"t": "erm"}, metrics=META)
    assert row(alone, "win").beats_baseline and row(alone, "win").beats_uncorrected
    many = leaderboard(with_diffs({"win": MARGINAL, **nulls(9)}), {"t": "erm"}, metrics=META)
    win = row(many, "win")
    assert win.diff_p < 0.05 < win.diff_p_holm
    assert not win.beats_baseline and win.beats_uncorrected  # the uncorrected CI still excludes zero
    assert win.diff_ci_low > 0  # the CI columns are the uncorrected ones
    assert not many[["beats_baseline", "worse_than_baseline"]].any().any()


def test_strong_effects_keep_their_markers_on_both_sides_and_directions():
    down = [-d for d in STRONG]
    df = with_diffs({"strong": STRONG, "down": down, **nulls(9)})
    board = leaderboard(pd.concat([df, df.assign(metric="ece")]), {"t": "erm"}, metrics=META)
    assert row(board, "strong").diff_p_holm < 0.05
    assert row(board, "strong").beats_baseline and row(board, "down").worse_than_baseline
    # lower is better for ece: the same differences flip sides
    assert row(board, "strong", "ece").worse_than_baseline and row(board, "down", "ece").beats_baseline
    # each (track, dataset, metric) table is its own family
    assert row(board, "strong", "ece").diff_p_holm == pytest.approx(row(board, "strong").diff_p_holm)
    bare = leaderboard(df, {"t": "erm"}, metrics={})
    assert not bare[["beats_baseline", "worse_than_baseline", "beats_uncorrected",
                     "worse_uncorrected"]].any().any()


def test_holm_matches_statsmodels_and_keeps_nan_out_of_the_family():
    from statsmodels.stats.multitest import multipletests  # installed with scikit-posthocs

    from lossbench.stats import holm

    rng = np.random.default_rng(1)
    for _ in range(100):
        p = rng.uniform(0, 0.2, rng.integers(1, 30))
        p[rng.random(p.size) < 0.2] = np.nan
        ok = ~np.isnan(p)
        if ok.any():
            np.testing.assert_allclose(holm(p)[ok], multipletests(p[ok], method="holm")[1])
        assert np.isnan(holm(p)[~ok]).all()


def test_sd_from_halfwidth_inverts_mean_ci():
    """stats.sd_from_halfwidth undoes mean_ci's half-width: the sample sd comes back (NaN below 2 values),
    so the paired test (diff_p) and the claims' MDE read the same spread."""
    from lossbench.stats import sd_from_halfwidth

    x = np.array([0.3, 1.1, -0.4, 2.0, 0.7])
    for level in (0.9, 0.95):
        _, hw, n = mean_ci(x, level)
        assert float(sd_from_halfwidth(hw, n, level)) == pytest.approx(np.std(x, ddof=1))
    assert math.isnan(float(sd_from_halfwidth(1.0, 1)))
