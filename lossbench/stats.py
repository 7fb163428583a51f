"""Confidence intervals and paired comparisons over seeds, for the leaderboard.

Runs with the same seed share the data seed (conventions §4), so two methods are compared on the
per-seed differences: the seed-to-seed variation of the data split cancels instead of widening the
interval. Intervals are Student-t over seeds; NaN values (diverged runs, undefined metrics such as
`acc_few` without few-shot classes) are dropped, so `n` counts finite seeds only.

Tidy input columns: track, dataset, method, seed, metric, value (+ optional status).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats as st

GROUP = ["track", "dataset", "metric"]  # a leaderboard compares methods within one of these
KEYS = ["track", "dataset", "method", "metric"]  # one leaderboard row


def half_width(std, n, level: float = 0.95):
    """Half-width `t_{(1+level)/2, n-1} · std / √n` of the two-sided t interval; NaN if n < 2."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        hw = st.t.ppf(0.5 + level / 2, n - 1) * np.asarray(std, dtype=float) / np.sqrt(n)
    return np.where(n >= 2, hw, np.nan)


def mean_ci(values, level: float = 0.95) -> tuple[float, float, int]:
    """(mean, CI half-width, n) over the non-NaN values; half-width is NaN when n < 2."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan"), 0
    std = v.std(ddof=1) if v.size > 1 else np.nan
    return float(v.mean()), float(half_width(std, v.size, level)), int(v.size)


def summarize(df: pd.DataFrame, by: list[str], value: str, level: float = 0.95,
              prefix: str = "") -> pd.DataFrame:
    """Per group of `by`: n, mean, half_width, ci_low, ci_high of `value` (names prefixed)."""
    out = df.groupby(by, sort=False, dropna=False)[value].agg(["mean", "std", "count"])
    out = out.rename(columns={"count": "n"}).reset_index()
    out["half_width"] = half_width(out["std"], out["n"], level)
    out["ci_low"] = out["mean"] - out["half_width"]
    out["ci_high"] = out["mean"] + out["half_width"]
    cols = ["n", "mean", "half_width", "ci_low", "ci_high"]
    return out[by + cols].rename(columns={c: prefix + c for c in cols})


def _wide(df: pd.DataFrame) -> pd.DataFrame:
    """Values with one column per method and one row per (track, dataset, metric, seed).

    Raises on duplicate keys: two values for one run would make the pairing ambiguous.
    """
    return df.set_index(GROUP + ["seed", "method"])["value"].unstack("method")


def _reference(wide: pd.DataFrame, baseline) -> np.ndarray:
    """The reference method's value on each row of `wide` (NaN where it has none)."""
    rows = wide.index.to_frame(index=False)
    if isinstance(baseline, str):
        names = [baseline] * len(rows)
    else:  # keys may be a track or a (track, dataset, metric) tuple
        names = [baseline.get((t, d, m), baseline.get(t))
                 for t, d, m in zip(rows["track"], rows["dataset"], rows["metric"])]
    col = pd.Index(wide.columns).get_indexer(names)
    if len(col) == 0:
        return np.empty(0)
    picked = wide.to_numpy(dtype=float)[np.arange(len(col)), np.maximum(col, 0)]
    return np.where(col >= 0, picked, np.nan)


def paired_diff(df: pd.DataFrame, baseline, level: float = 0.95) -> pd.DataFrame:
    """Paired difference (method − reference) over the seeds where both have a value.

    `baseline` is a method name, a dict track -> method, or a dict (track, dataset, metric) ->
    method. Returns one row per (track, dataset, metric, method) with diff_n, diff_mean,
    diff_half_width, diff_ci_low, diff_ci_high (the reference itself gets 0 ± 0).
    """
    wide = _wide(df)
    diffs = wide.sub(_reference(wide, baseline), axis=0).reset_index()
    long = diffs.melt(id_vars=GROUP + ["seed"], var_name="method", value_name="diff")
    out = summarize(long, GROUP + ["method"], "diff", level, prefix="diff_")
    out["diff_p"] = t_pvalue(out["diff_mean"], out["diff_half_width"], out["diff_n"], level)
    return out


def sd_from_halfwidth(hw, n, level: float = 0.95):
    """The sample standard deviation behind a `level` t-interval of half-width `hw` over `n` values
    (hw = t_{n−1} · sd / √n inverted); NaN where n < 2."""
    hw, n = np.asarray(hw, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = hw / st.t.ppf(0.5 + level / 2, n - 1) * np.sqrt(n)
    return np.where(n >= 2, sd, np.nan)


def t_pvalue(mean, hw, n, level: float = 0.95) -> np.ndarray:
    """Two-sided p-value of the one-sample t test of `mean = 0`, recovered from a `level` t-interval
    of half-width `hw` over `n` values (the same test the CI inverts, so p < 1 − level exactly when
    the CI excludes zero). NaN when n < 2; with zero spread, 0 for a non-zero mean and 1 for zero."""
    mean, hw, n = (np.asarray(x, dtype=float) for x in (mean, hw, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        se = sd_from_halfwidth(hw, n, level) / np.sqrt(n)
        p = 2 * st.t.sf(np.abs(mean) / se, n - 1)
    p = np.where(se == 0, np.where(mean == 0, 1.0, 0.0), p)
    return np.where(n >= 2, p, np.nan)


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true paired difference a two-sided paired t-test over `n` seeds detects with
    probability `power` at level `alpha`, given the paired differences' standard deviation `sd`:
    the non-centrality δ with P(|T'| > t_crit) = power for T' ~ noncentral t(n − 1, δ), times sd/√n
    (scipy's `nct`; exact, not the normal approximation). NaN when n < 2 or sd is NaN; 0 when sd = 0."""
    if n < 2 or not np.isfinite(sd):
        return float("nan")
    if sd == 0:
        return 0.0
    from scipy.optimize import brentq

    df, tc = n - 1, st.t.ppf(1 - alpha / 2, n - 1)

    def short(nc):  # power at non-centrality nc ≥ 0, minus the target; scipy's far lower tail can be
        # NaN where it underflows (≈ 1e-17 and below): it is 0 there
        return st.nct.sf(tc, df, nc) + np.nan_to_num(st.nct.cdf(-tc, df, nc)) - power

    hi = 1.0
    while short(hi) < 0:
        hi *= 2
    return float(brentq(short, 0.0, hi, xtol=1e-10) * sd / np.sqrt(n))


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values of one family of tests: the i-th smallest of m p-values becomes
    max over j ≤ i of min(1, (m − j + 1)·p_(j)). NaN entries (no test possible) stay NaN and do not
    count towards m. Written out rather than taken from statsmodels' `multipletests`, which runs a
    full garbage collection per call (≈ 0.25 s: 90 s for one report's ~400 families); the tests check
    it against statsmodels."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size:
        order = ok[np.argsort(p[ok], kind="stable")]
        m = order.size
        out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def direction(metrics: Mapping[str, Mapping] | None, metric: str) -> int:
    """+1 if higher is better, −1 if lower is better, 0 if the metadata does not say."""
    flag = ((metrics or {}).get(metric) or {}).get("higher_is_better")
    return 0 if flag is None else (1 if flag else -1)


def better_worse(low: pd.Series, high: pd.Series, sign: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Whether a difference CI [low, high] excludes zero on the better / the worse side."""
    up, down = low > 0, high < 0  # NaN bounds compare False: no interval, no claim
    better = ((sign > 0) & up) | ((sign < 0) & down)
    worse = ((sign > 0) & down) | ((sign < 0) & up)
    return better, worse


def _grid(stats: pd.DataFrame, methods: Mapping[str, list] | None) -> pd.DataFrame:
    """Every (dataset, method, metric) of each track, so a missing run shows as n = 0."""
    frames = []
    for track, part in stats.groupby("track", sort=False):
        names = list(dict.fromkeys([*part["method"], *((methods or {}).get(track) or [])]))
        frames.append(pd.MultiIndex.from_product(
            [[track], part["dataset"].unique(), names, part["metric"].unique()], names=KEYS
        ).to_frame(index=False))
    full = pd.concat(frames, ignore_index=True) if frames else stats[KEYS].iloc[:0]
    out = full.merge(stats, on=KEYS, how="left")
    out["n"] = out["n"].fillna(0).astype(int)
    return out


BAD_STATUSES = ("diverged", "failed")  # a NaN loss; an exception (a bug, out of memory): lossbench.runner


def status_counts(df: pd.DataFrame, status: str) -> pd.Series:
    """Number of seeds per (track, dataset, method) whose run ended with `status`, as `n_<status>`."""
    has = df["status"] if "status" in df else pd.Series("ok", index=df.index)
    bad = df[has == status]
    return bad.groupby(["track", "dataset", "method"])["seed"].nunique().rename(f"n_{status}")


def diverged_counts(df: pd.DataFrame) -> pd.Series:
    """Number of diverged seeds per (track, dataset, method)."""
    return status_counts(df, "diverged")


def _best_methods(board: pd.DataFrame, sign: pd.Series) -> dict:
    """(track, dataset, metric) -> method with the best mean, for metrics with a direction."""
    ok = (board["n"] > 0) & (sign != 0) & board["mean"].notna()
    scored = board[ok].assign(score=(sign * board["mean"])[ok])
    idx = scored.groupby(GROUP)["score"].idxmax()
    return {key: board.at[i, "method"] for key, i in idx.items()}


def _baseline_of(baselines: Mapping, track, dataset, metric):
    """The baseline method of a table: a (track, dataset, metric) key wins over a track key."""
    return baselines.get((track, dataset, metric), baselines.get(track))


def holm_vs_baseline(board: pd.DataFrame, baselines: Mapping) -> pd.Series:
    """`diff_p` Holm-adjusted within each (track, dataset, metric): the family is every method of
    that table with a paired test against the baseline (the baseline itself and methods without a
    p-value, e.g. fewer than 2 shared seeds, are not in it). NaN where a row is not in a family."""
    base = [_baseline_of(baselines, t, d, m)
            for t, d, m in zip(board["track"], board["dataset"], board["metric"])]
    tested = board["diff_p"].where(board["method"].to_numpy() != np.asarray(base, dtype=object))
    return tested.groupby([board[k] for k in GROUP], sort=False).transform(holm).astype(float)


def leaderboard(summary_df: pd.DataFrame, baselines: Mapping[str, str], level: float = 0.95,
                metrics: Mapping[str, Mapping] | None = None,
                methods: Mapping[str, list] | None = None) -> pd.DataFrame:
    """One row per (track, dataset, method, metric) with CIs and comparison flags.

    baselines: track -> baseline method. metrics: metric -> metadata with `higher_is_better`
    (metrics without it get no flags). methods: optional track -> method names expected even if
    they have no rows. Columns: n, n_diverged, n_failed, mean, half_width, ci_low, ci_high, diff_* (paired
    vs the baseline: uncorrected CI, diff_p the paired t-test p-value), diff_p_holm (Holm-adjusted
    over the methods of the (track, dataset, metric) table compared with the baseline, see
    `holm_vs_baseline`), beats_baseline / worse_than_baseline (diff_p_holm < 1 − level, on the
    better / worse side), beats_uncorrected / worse_uncorrected (the uncorrected diff CI excludes
    zero), and `best`: the best mean plus every method whose paired CI vs it includes zero (or
    cannot be formed).
    """
    df = summary_df[summary_df["metric"].notna()]
    board = _grid(summarize(df, KEYS, "value", level), methods)
    for status in BAD_STATUSES:
        board = board.merge(status_counts(df, status), on=["track", "dataset", "method"], how="left")
        board[f"n_{status}"] = board[f"n_{status}"].fillna(0).astype(int)
    board = board.merge(paired_diff(df, dict(baselines), level), on=KEYS, how="left")
    board["diff_n"] = board["diff_n"].fillna(0).astype(int)
    sign = board["metric"].map(lambda m: direction(metrics, m))
    board["beats_uncorrected"], board["worse_uncorrected"] = better_worse(
        board["diff_ci_low"], board["diff_ci_high"], sign)
    board["diff_p_holm"] = holm_vs_baseline(board, baselines)
    # Holm's p is never below the raw p, so a corrected flag implies the uncorrected one (same side)
    significant = board["diff_p_holm"] < 1 - level  # NaN compares False: no test, no claim
    board["beats_baseline"] = board["beats_uncorrected"] & significant
    board["worse_than_baseline"] = board["worse_uncorrected"] & significant

    best = _best_methods(board, sign)
    vs = board[KEYS].merge(paired_diff(df, best, level), on=KEYS, how="left")
    better, worse = better_worse(vs["diff_ci_low"], vs["diff_ci_high"], sign)
    groups = zip(board["track"], board["dataset"], board["metric"])
    has_best = pd.Series([g in best for g in groups], index=board.index)
    board["best"] = has_best & (board["n"] > 0) & ~(better | worse)
    cols = KEYS + ["n", "n_diverged", "n_failed", "mean", "half_width", "ci_low", "ci_high", "diff_n",
                   "diff_mean", "diff_half_width", "diff_ci_low", "diff_ci_high", "diff_p", "diff_p_holm",
                   "beats_baseline", "worse_than_baseline", "beats_uncorrected", "worse_uncorrected",
                   "best"]
    return board[cols].sort_values(KEYS, kind="stable").reset_index(drop=True)
