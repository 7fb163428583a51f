"""The at-a-glance leaderboard that opens each track: methods × datasets of the track's main metric,
the mean rank over (dataset, seed) blocks, which methods the post-hoc test cannot tell from the best,
and the critical-difference diagram (report/ranks.py, after Demšar 2006).

Every cell comes from the same tidy leaderboard as the per-dataset tables (lossbench.stats.leaderboard),
so a number here and there can never disagree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from lossbench.report import preference, ranks
from lossbench.report.tables import table_cell


def glance_datasets(board: pd.DataFrame, track: str, datasets: list[str]) -> list[str]:
    """The datasets the glance compares: each dataset once. A preference track shows each dataset under
    its primary view (`@best`); the other views re-select variants of the same runs, and ranking a
    dataset twice would count it twice."""
    present = set(board.loc[board["track"] == track, "dataset"])
    out = []
    for d in datasets:
        view = preference.split_view(d)[1]
        if d in present and view in (None, "best"):
            out.append(d)
    return out


def _rank_frame(summary: pd.DataFrame, track: str, datasets: list[str], metric: str) -> pd.DataFrame:
    """dataset, method, seed, value (+ status) of the main metric: the blocks the rank test reads."""
    rows = summary[(summary["track"] == track) & summary["dataset"].isin(datasets) & (summary["metric"] == metric)]
    cols = ["dataset", "method", "seed", "value"] + (["status"] if "status" in rows else [])
    return rows[cols]


def _cell(r: Mapping | None, meta: Mapping) -> dict:
    """A glance cell: display text, the number to sort by (`sort`, in display units), the markers."""
    cell = table_cell(r, meta)
    return {**cell, "sort": f"{r['mean'] * meta.get('scale', 1):.6g}" if "mean" in cell else ""}


def track_glance(track: str, board: pd.DataFrame, summary: pd.DataFrame, datasets: list[str],
                 main_metric: str, metrics: Mapping, baseline: str, level: float,
                 figure_path: Path | None) -> dict | None:
    """The glance of one track: {metric, datasets, rows, test, figure, note}; None without datasets.

    rows: one per method in mean-rank order (methods outside the rank test after them, by name),
    {method, baseline, rank (text), rank_sort, tied, cells}; `figure` is the critical-difference
    diagram's path (None where ranks.applies says the comparison has too little to compare).
    """
    names = glance_datasets(board, track, datasets)
    if not names:
        return None
    meta = metrics.get(main_metric, {})
    part = board[(board["track"] == track) & board["dataset"].isin(names) & (board["metric"] == main_metric)]
    if part.empty:
        return None
    by_key = {(r["dataset"], r["method"]): r for r in part.to_dict("records")}
    methods = list(dict.fromkeys(part["method"]))
    higher = (meta.get("higher_is_better") is not False)
    result = ranks.compare(_rank_frame(summary, track, names, main_metric), higher, level)
    mean_rank = result.mean_rank if result is not None else pd.Series(dtype=float)
    tied = set(result.tied_with_best) if result is not None else set()
    ordered = [m for m in mean_rank.index if m in methods] + sorted(m for m in methods if m not in mean_rank.index)
    rows = []
    for m in ordered:
        rank = mean_rank.get(m, np.nan)
        rows.append({"method": m, "baseline": m == baseline,
                     "rank": "—" if pd.isna(rank) else f"{rank:.2f}",
                     "rank_sort": "" if pd.isna(rank) else f"{rank:.6g}",
                     "tied": m in tied,
                     "cells": [_cell(by_key.get((d, m)), meta) for d in names]})
    per_dataset = part.groupby("dataset")["method"].nunique()
    figure = None
    if figure_path is not None and result is not None and ranks.applies(len(names), int(per_dataset.max())):
        figure = ranks.cd_figure(result, figure_path, baseline=baseline,
                                 title=f"{track}: mean rank of {meta.get('display', main_metric)}")
    left_out = result.left_out if result is not None else {}
    return {"metric": meta.get("display", main_metric), "datasets": names, "rows": rows,
            "test": result.test if result is not None else "too few methods or blocks for a rank test",
            "figure": figure, "left_out": left_out, "higher": higher,
            "n_blocks": result.n_blocks if result is not None else 0}
