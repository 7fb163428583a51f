"""The preference track's best-of-n overoptimisation curves (lossbench/overopt.py, card E3): the
figure, and per-seed summary rows the claims table tests like any other metric.

Reads results/<profile>/overopt.csv (workflows/preference.smk: aggregate_overopt), one row per
(track, protocol, dataset, seed, objective, n). The summary rows name each objective a method
`bon_<objective>` on the dataset `<dataset> @bon`, so a claim compares, say, bon_wco against
bon_single with the paired seeds, Holm and the minimum detectable effect of every other claim:

    bon/gold_final  gold reward of best-of-N at the largest n (N: every sample of a prompt)
    bon/gold_drop   the curve's peak gold minus its gold at N: how much optimising harder lost
    bon/gold_gain   gold at N minus gold at n = 1 (π_ref)
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lossbench.stats import mean_ci  # noqa: E402
from lossbench.report.plots import ci_text, save_figure  # noqa: E402

FILE = "overopt.csv"
VIEW = "@bon"
STYLE = {"single": ("one RM", "black", "-"), "mean": ("mean", "tab:blue", "--"),
         "wco": ("WCO (min)", "tab:green", "-"), "uwo": ("UWO (mean − λ·var)", "tab:orange", "-")}


def load(results_dir) -> pd.DataFrame | None:
    path = Path(results_dir) / FILE
    return pd.read_csv(path) if path.exists() else None


def summary_rows(df: pd.DataFrame | None) -> pd.DataFrame:
    """Per (track, dataset, seed, objective): gold_final, gold_drop and gold_gain as summary rows."""
    if df is None or df.empty:
        return pd.DataFrame(columns=["track", "dataset", "method", "variant", "seed", "metric", "value", "status"])
    rows = []
    for (track, dataset, seed, objective), g in df.groupby(["track", "dataset", "seed", "objective"]):
        g = g.sort_values("n")
        final, first, peak = g["gold"].iloc[-1], g["gold"].iloc[0], g["gold"].max()
        for metric, value in (("bon/gold_final", final), ("bon/gold_drop", peak - final),
                              ("bon/gold_gain", final - first)):
            rows.append({"track": track, "dataset": f"{dataset} {VIEW}", "method": f"bon_{objective}",
                         "variant": "default", "seed": int(seed), "metric": metric, "value": float(value),
                         "status": "ok"})
    return pd.DataFrame(rows)


def figure(df: pd.DataFrame | None, track: str, level: float, path: Path) -> Path | None:
    """Gold (top) and proxy (bottom, the objective's own standardised score) reward of best-of-n
    against √KL(π_BoN ‖ π_ref), one column per dataset, one line per objective, mean ± CI over seeds."""
    if df is None:
        return None
    df = df[df["track"] == track]
    if df.empty:
        return None
    names = list(dict.fromkeys(df["dataset"]))
    fig, axes = plt.subplots(2, len(names), figsize=(4.6 * len(names), 6.4), squeeze=False, sharex=True)
    for col, name in enumerate(names):
        part = df[df["dataset"] == name]
        for row, value in enumerate(("gold", "proxy")):
            ax = axes[row, col]
            for objective in [o for o in STYLE if o in set(part["objective"])]:
                label, color, ls = STYLE[objective]
                pts = [(x, *mean_ci(g[value].to_numpy(), level)[:2])
                       for x, g in part[part["objective"] == objective].groupby("sqrt_kl")]
                x, y, e = map(np.array, zip(*pts))
                ax.plot(x, y, color=color, ls=ls, marker=".", label=label)
                ax.fill_between(x, y - np.nan_to_num(e), y + np.nan_to_num(e), color=color, alpha=0.15)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(name, fontsize=10)
            if col == 0:
                ax.set_ylabel("gold reward of best-of-n" if value == "gold" else "proxy objective (standardised)")
            if row == 1:
                ax.set_xlabel("√KL(π_BoN ‖ π_ref)  (n = 1, 2, 4, …)")
    axes[0, 0].legend(fontsize=8, frameon=False)
    return save_figure(fig, path)


def caption(df: pd.DataFrame | None, track: str, level: float) -> str:
    part = df[df["track"] == track]
    seeds, n_max = part["seed"].nunique(), int(part["n"].max())
    acc = part.groupby("dataset")["members_val_accuracy"].mean()
    rms = ", ".join(f"{d} {a:.2f}" for d, a in acc.items())
    members = int(part["members"].max())
    return (f"Best-of-n overoptimisation (E3): gold reward (top) and the proxy objective it optimises (bottom) "
            f"against √KL, n = 1 … {n_max} π_ref samples per prompt, mean ± {ci_text(level)} over {seeds} seeds. "
            f"One RM, the ensemble mean, its minimum (WCO) and mean − λ·variance (UWO) of {members} standardised "
            f"proxy RMs (mean held-out pair accuracy: {rms}). Where the proxy keeps rising while gold falls, the "
            "objective is being overoptimised.")
