"""LM-pretraining tracks in the report: time-to-target and the track's own figures.

Time to target (AlgoPerf-style, card "Metrics"): for each run, the tokens seen when its validation
loss first reaches the final validation loss of the uniform baseline's run with the same seed (the
paired target); NaN when it never does, and `val/reached_target` says which. Computed here because
it compares two runs; everything else comes from the runs' own metrics.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lossbench.lm_pretrain import FLAGS, WEIGHT_EDGES
from lossbench.report.plots import MAX_SERIES, ci_text, line_style, save_figure, seeds_text

TARGET_METRIC = "val/loss"


def is_lm(data: Mapping, track: str) -> bool:
    return ((data["provenance"].get("tracks") or {}).get(track) or {}).get("task") == "lm_pretraining"


def tokens_to_target(curve: pd.DataFrame, target: float) -> float:
    """Tokens at the first evaluation with loss ≤ target (curve: tokens, value), else NaN."""
    hit = curve.sort_values("tokens")
    hit = hit[hit["value"] <= target]
    return float(hit["tokens"].iloc[0]) if len(hit) else float("nan")


def add_time_to_target(data: dict, track: str) -> None:
    """Append val/tokens_to_target and val/reached_target rows to data['summary'] for `track`.
    The target of a seed is the tuned baseline's final validation loss: the report calls this after
    variant selection (report/selection.py), which leaves the baseline's selected variant only; of
    several variants (no selection made) the lowest."""
    summary, curves = data["summary"], data["curves"]
    baseline = (data["provenance"].get("tracks") or {}).get(track, {}).get("baseline", "uniform")
    finals = summary[(summary["track"] == track) & (summary["metric"] == TARGET_METRIC)]
    targets = finals[finals["method"] == baseline].groupby(["dataset", "seed"])["value"].min()
    mine = curves[(curves["track"] == track) & (curves["metric"] == TARGET_METRIC)]
    by_run = dict(list(mine.groupby(["dataset", "method", "variant", "seed"])))
    rows = []
    for _, r in finals.iterrows():
        target = targets.get((r["dataset"], r["seed"]), np.nan)
        curve = by_run.get((r["dataset"], r["method"], r["variant"], r["seed"]))
        ok = curve is not None and np.isfinite(target) and np.isfinite(r["value"])
        t = tokens_to_target(curve, target) if ok else np.nan
        rows.append({**r.to_dict(), "metric": "val/tokens_to_target", "value": t})
        rows.append({**r.to_dict(), "metric": "val/reached_target", "value": float(np.isfinite(t))})
    if rows:
        data["summary"] = pd.concat([summary, pd.DataFrame(rows)], ignore_index=True)


def figures(ctx, summary: pd.DataFrame, curves: pd.DataFrame, path, note: str = "") -> list[tuple[str, Path | None]]:
    """(caption, path or None) of the per-domain bars (the methods of ctx.colors: the baseline and
    the top of the table; `note` names the rest) and the weight histograms."""
    base = ctx.info["baseline"]
    domains = summary[summary["metric"].str.match(r"^test/loss/[^/]+$")]
    hist = curves[curves["metric"].str.startswith("weights/hist_")]
    drawn = [(f"Test loss per domain (mean ± {ci_text(ctx.level)} over {seeds_text(domains, ctx.colors)}); lower is "
              "better. Held-out text of every clean domain; the redundant and noise parts of the training mixture "
              "have no held-out chunks." + note,
              domain_bars(summary, base, ctx.colors, ctx.level, path("domains"))),
             ("Per-sample weights over training (reweighting methods): share of weights w·N in each bin per "
              f"evaluation interval, mean over {seeds_text(hist)} (w·N = 1 is the uniform weight); and the mean w·N "
              "the method gave to clean, redundant and noise chunks.",
              weight_histograms(curves, path("weights")))]
    return drawn


def domain_bars(summary: pd.DataFrame, baseline: str, colors: Mapping, level: float, out: Path) -> Path | None:
    """Grouped bars of the per-domain test loss, one bar per method of `colors` (at most
    MAX_SERIES, each its own colour) in each domain group."""
    from lossbench.stats import summarize

    rows = summary[summary["metric"].str.match(r"^test/loss/[^/]+$")]
    rows = rows[rows["method"].isin(list(colors)[:MAX_SERIES])]
    if rows.empty:
        return None
    rows = rows.assign(domain=rows["metric"].str.split("/").str[-1])
    band = summarize(rows, ["method", "domain"], "value", level)
    domains = list(dict.fromkeys(band["domain"]))
    methods = [m for m in colors if m in set(band["method"])]
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(domains)), 3.2))
    for i, m in enumerate(methods):
        part = band[band["method"] == m].set_index("domain").reindex(domains)
        x = np.arange(len(domains)) + (i - (len(methods) - 1) / 2) * width
        style = line_style(m, baseline, colors)
        ax.bar(x, part["mean"], width, yerr=part["half_width"].fillna(0), color=style["color"], label=style["label"],
               error_kw={"lw": 0.6, "ecolor": "0.3"})
    lo = (band["mean"] - band["half_width"].fillna(0)).min()
    ax.set_ylim(bottom=max(0.0, lo - 0.1 * abs(lo)))
    ax.set_xticks(np.arange(len(domains)), domains)
    ax.set(ylabel=f"test loss (nats/token), mean ± {ci_text(level)}", title="Per-domain test loss")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return save_figure(fig, out)


def weight_histograms(curves: pd.DataFrame, out: Path) -> Path | None:
    hist = curves[curves["metric"].str.startswith("weights/hist_")]
    if hist.empty:
        return None
    mean = hist.groupby(["method", "tokens", "metric"], as_index=False)["value"].mean()
    flags = curves[curves["metric"].isin([f"weights/{f}" for f in FLAGS])]
    methods = list(dict.fromkeys(mean["method"]))
    fig, axes = plt.subplots(2, len(methods), figsize=(2.6 * len(methods), 4.6), squeeze=False)
    labels = [f"{lo:g}–{hi:g}" for lo, hi in zip(WEIGHT_EDGES[:-1], WEIGHT_EDGES[1:])]
    for j, m in enumerate(methods):
        grid = mean[mean["method"] == m].pivot(index="metric", columns="tokens", values="value")
        grid = grid.reindex([f"weights/hist_{i}" for i in range(len(labels))])
        ax = axes[0][j]
        ax.imshow(grid.to_numpy(), aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                  extent=(grid.columns.min(), grid.columns.max(), -0.5, len(labels) - 0.5))
        ax.set_yticks(range(len(labels)), labels if j == 0 else [""] * len(labels))
        ax.set(title=m, xlabel="tokens seen")
        ax = axes[1][j]
        for f in FLAGS:
            part = flags[(flags["method"] == m) & (flags["metric"] == f"weights/{f}")]
            part = part.groupby("tokens")["value"].mean()
            if len(part):
                ax.plot(part.index, part.to_numpy(), label=f)
        ax.axhline(1.0, color="grey", lw=0.6, ls=":")
        ax.set(xlabel="tokens seen", ylabel="mean w·N" if j == 0 else "")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("w·N bin")
    axes[1][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return save_figure(fig, out)
