"""report/ranks.py: block ranks, left-out methods, Friedman / Wilcoxon / Nemenyi, the CD diagram."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from lossbench.report import ranks


def frame(values: dict, status: dict | None = None) -> pd.DataFrame:
    """{(dataset, seed): {method: value}} -> tidy rows; a method absent from a block has no run."""
    return pd.DataFrame([
        {"dataset": d, "seed": s, "method": m, "value": v,
         "status": (status or {}).get((d, s, m), "diverged" if v is not None and math.isnan(v) else "ok")}
        for (d, s), runs in values.items() for m, v in runs.items()])


def grid(n_datasets, n_seeds, fn) -> pd.DataFrame:
    """fn(dataset index, seed) -> {method: value} over a full dataset × seed grid."""
    return frame({(f"d{d}", s): fn(d, s) for d in range(n_datasets) for s in range(n_seeds)})


def test_ranks_and_ties_by_hand():
    df = frame({("a", 0): {"A": 0.9, "B": 0.8, "C": 0.8},   # A 1, B 2.5, C 2.5
                ("a", 1): {"A": 0.7, "B": 0.9, "C": 0.5},   # B 1, A 2, C 3
                ("b", 0): {"A": 0.6, "B": 0.6, "C": 0.6}})  # all 2
    r = ranks.compare(df, higher_is_better=True)
    assert list(r.mean_rank.index) == ["A", "B", "C"]
    assert r.mean_rank.to_dict() == pytest.approx({"A": 5 / 3, "B": 5.5 / 3, "C": 7.5 / 3})
    assert r.ranks.loc[("a", 0)].to_dict() == {"A": 1.0, "B": 2.5, "C": 2.5}
    assert (r.n_blocks, r.n_datasets, r.left_out, r.omnibus) == (3, 2, {}, "friedman")
    # lower is better reverses every block
    low = ranks.compare(df, higher_is_better=False)
    assert low.mean_rank.to_dict() == pytest.approx({"C": 4.5 / 3, "B": 6.5 / 3, "A": 7 / 3})
    rows = ranks.rank_rows(r)
    assert [row["method"] for row in rows] == ["A", "B", "C"]
    assert rows[0]["mean_rank"] == pytest.approx(5 / 3) and isinstance(rows[0]["tied_with_best"], bool)


def test_a_run_without_value_ranks_worst():
    df = frame({("a", 0): {"A": float("nan"), "B": float("nan"), "C": 0.1},
                ("a", 1): {"A": 0.9, "B": 0.5, "C": 0.1},
                ("a", 2): {"A": 0.9, "B": 0.5, "C": 0.1}},
               status={("a", 2, "A"): "failed"})  # a bad status counts as no value
    r = ranks.compare(df, higher_is_better=True)
    assert r.ranks.loc[("a", 0)].to_dict() == {"A": 2.5, "B": 2.5, "C": 1.0}
    assert r.ranks.loc[("a", 2)].to_dict() == {"A": 3.0, "B": 1.0, "C": 2.0}
    # also when lower is better: a missing value never becomes the best
    low = ranks.compare(df, higher_is_better=False)
    assert low.ranks.loc[("a", 0)].to_dict() == {"A": 2.5, "B": 2.5, "C": 1.0}


def test_a_method_missing_many_blocks_is_left_out_one_missing_seed_costs_the_block():
    runs = {(d, s): {"A": 0.5 + s / 10, "B": 0.4, "C": 0.3, "D": 0.2, "E": 0.1} for d in "ab" for s in range(4)}
    del runs[("b", 1)]["E"]  # 1 of 8 design blocks: E stays, block (b, 1) goes
    for s in (0, 1, 2):  # 3 of 8 blocks (> a quarter): D is left out
        del runs[("a", s)]["D"]
    runs[("a", 9)] = {"A": 0.9, "B": 0.1}  # a stray extra seed of two methods: not the design
    r = ranks.compare(frame(runs), higher_is_better=True)
    assert set(r.left_out) == {"D"} and "3 of 8" in r.left_out["D"] and "a, seed 0" in r.left_out["D"]
    assert list(r.mean_rank.index) == ["A", "B", "C", "E"]
    assert r.n_blocks == 7 and r.n_datasets == 2 and ("b", 1) not in r.ranks.index
    assert ("a", 9) not in r.ranks.index  # C has no seed 9


def test_friedman_p_agrees_with_scipy_on_the_same_matrix():
    rng = np.random.default_rng(3)
    vals = rng.normal(size=(12, 4)) + np.array([0.0, 0.3, 0.6, 0.2])
    df = grid(4, 3, lambda d, s: dict(zip("ABCD", vals[3 * d + s])))
    r = ranks.compare(df, higher_is_better=True)
    ref = st.friedmanchisquare(*vals.T)  # Friedman ranks within blocks: raw values give the same test
    assert r.friedman_stat == pytest.approx(ref.statistic)
    assert r.friedman_p == pytest.approx(ref.pvalue)
    assert "Friedman" in r.test and "12 blocks (4 datasets × 3 seeds)" in r.test
    assert list(r.posthoc.index) == list(r.mean_rank.index) == list(r.posthoc.columns)


def test_dominant_method_alone_and_identical_methods_tied():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, size=(6, 3, 3))
    df = grid(6, 3, lambda d, s: {"top": 0.9, **{m: 0.6 + noise[d, s, i] for i, m in enumerate("xyz")}})
    r = ranks.compare(df, higher_is_better=True)
    assert r.friedman_p < 0.05
    assert r.tied_with_best == ["top"]
    assert (r.posthoc.loc[list("xyz"), list("xyz")] >= 0.05).all().all()
    same = ranks.compare(df[df.method != "top"], higher_is_better=True)
    assert sorted(same.tied_with_best) == ["x", "y", "z"]
    assert [row["tied_with_best"] for row in ranks.rank_rows(r)] == [True, False, False, False]


def test_two_methods_use_wilcoxon():
    rng = np.random.default_rng(1)
    diffs = rng.normal(0.02, 0.01, size=10)
    df = grid(5, 2, lambda d, s: {"a": 0.5 + diffs[2 * d + s], "b": 0.5})
    r = ranks.compare(df, higher_is_better=True)
    assert r.omnibus == "wilcoxon" and "Wilcoxon" in r.test
    assert r.friedman_p == pytest.approx(st.wilcoxon(diffs).pvalue)
    assert r.posthoc.loc["a", "b"] == r.friedman_p and r.tied_with_best == ["a"]


def test_too_little_to_compare_gives_none():
    one_block = frame({("a", 0): {"A": 0.1, "B": 0.2, "C": 0.3}})
    assert ranks.compare(one_block, higher_is_better=True) is None
    one_method = grid(2, 2, lambda d, s: {"A": 0.1})
    assert ranks.compare(one_method, higher_is_better=True) is None
    assert ranks.cd_figure(None, "unused.png") is None
    assert ranks.applies(2, 2) and ranks.applies(1, 3) and ranks.applies(1, [2, 3])
    assert not ranks.applies(1, 2)


def test_duplicate_runs_are_rejected():
    df = frame({("a", 0): {"A": 0.1, "B": 0.2}, ("a", 1): {"A": 0.1, "B": 0.2}})
    with pytest.raises(ValueError):
        ranks.compare(pd.concat([df, df.iloc[:1]]), higher_is_better=True)


def test_cd_figure_writes_a_png(tmp_path):
    rng = np.random.default_rng(2)
    df = grid(3, 2, lambda d, s: {f"m{i:02d}": i / 10 + rng.normal(0, 0.2) for i in range(12)})
    r = ranks.compare(df, higher_is_better=True)
    png = ranks.cd_figure(r, tmp_path / "figs" / "cd.png", baseline="m03", title="t: mean rank")
    assert png == tmp_path / "figs" / "cd.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
