"""Grokking tracks in the report: the steps-to-grok table and the collapse/NLM curves.

Steps to grok is a time-to-target metric (conventions §3): a run that never reaches 95% test
accuracy scores ∞, and the table takes the median over seeds with misses as ∞, so a method that
groks on fewer than half of its seeds reads "not reached". The leaderboard's mean ± CI of
`test/steps_to_grok` covers the seeds that grokked only; `test/grokked` says how many did.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from lossbench.report import plots
from lossbench.report.tables import markdown_extra

# (column header, metric) of the steps table; steps are full-batch optimiser steps at the logged resolution
STEP_COLUMNS = [("to 95% test (grok)", "test/steps_to_grok"), ("to 99% test", "test/steps_to_grok_99"),
                ("to 99% train (memorise)", "train/steps_to_memorize"),
                ("Softmax Collapse > 50%", "train/first_collapse_step")]
DIAGNOSTICS = ["train/sc_fraction", "train/zero_loss_fraction", "weights/l2", "grad/nlm_cosine"]


def is_grokking(data: Mapping, track: str) -> bool:
    return ((data["provenance"].get("tracks") or {}).get(track) or {}).get("task") == "grokking"


def _median_with_misses(values: pd.Series) -> str:
    """Median over seeds with a NaN (never reached) counted as ∞."""
    if values.empty:
        return "—"
    med = float(np.median(values.fillna(np.inf).to_numpy()))
    return "not reached" if np.isinf(med) else f"{med:.0f}"


def steps_table(summary: pd.DataFrame, order: list[str]) -> dict:
    """Rows of the steps table of one (track, dataset): per method, how many seeds grokked, the
    median steps to each target (misses = ∞) and each seed's steps to grok."""
    ok = summary[summary["status"] == "ok"] if "status" in summary else summary
    rows = []
    for method in order:
        part = ok[ok["method"] == method]
        by_metric = {m: part[part["metric"] == m].sort_values("seed").set_index("seed")["value"]
                     for _, m in STEP_COLUMNS}
        grok = by_metric["test/steps_to_grok"]
        per_seed = ", ".join(f"{s}: {'—' if np.isnan(v) else f'{v:.0f}'}" for s, v in grok.items())
        rows.append([method, f"{int(grok.notna().sum())}/{len(grok)}",
                     *(_median_with_misses(by_metric[m]) for _, m in STEP_COLUMNS), per_seed])
    return {"title": "Steps to grok",
            "caption": "Median over seeds of the first logged step reaching each target, a seed that never reaches "
                       "it counted as ∞ ('not reached' when that is the median); '—' per seed = not reached. "
                       "Diverged runs are left out.",
            "headers": ["method", "grokked seeds", *(h for h, _ in STEP_COLUMNS), "steps to grok per seed"],
            "rows": rows}


def markdown(table: dict) -> str:
    return markdown_extra(table)


def figures(ctx, curves: pd.DataFrame, path, note: str = "") -> list[tuple[str, Path | None]]:
    """The diagnostics behind the paper's story: collapse, zero losses, weight norm, NLM cosine,
    for the methods of ctx.colors (the baseline and the top of the table); `note` names the rest."""
    return [("Softmax Collapse (shifted exp-sum exactly 1 in the run's softmax precision; float32 for StableMax "
             "and ⊥Grad), exactly-zero losses, weight norm and cos(−∇L, θ) (the naïve-loss-minimisation "
             f"direction): {plots.curves_caption(curves, DIAGNOSTICS, ctx.colors, ctx.level)}." + note,
             plots.curves(curves, DIAGNOSTICS, ctx.metrics, ctx.info["baseline"], ctx.colors, ctx.level,
                          path("diagnostics"), log_x=ctx.layout.get("curves_log_x", False)))]
