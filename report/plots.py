"""Report figures (matplotlib, Agg): main-metric bars, per-class recall, training curves.

Each function takes tidy frames already filtered to one (track, dataset), writes one PNG and
returns its path, or None when there is nothing to draw. Colours come from `method_colors`, so a
method keeps its colour across every figure of a track; the baseline is always black and thick.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # headless: the report is built in CI and by Snakemake jobs
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lossbench.stats import summarize  # noqa: E402

plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7,
                     "figure.dpi": 110, "savefig.bbox": "tight"})
BASELINE_COLOR = "black"


def method_colors(methods: list[str], baseline: str | None) -> dict[str, tuple]:
    """Colours in the given order, baseline black: tab10 (more distinct) up to 10 methods,
    else tab20, whose dark/light pairs suit neighbouring variants of one method family."""
    others = [m for m in methods if m != baseline]
    cmap = plt.get_cmap("tab10" if len(others) <= 10 else "tab20")
    colors = {m: cmap(i % cmap.N) for i, m in enumerate(others)}
    return colors | ({baseline: BASELINE_COLOR} if baseline else {})


def line_style(method: str, baseline: str | None, colors: Mapping) -> dict:
    """Line style: the baseline drawn thick on top, the rest thin."""
    is_base = method == baseline
    return {"color": colors.get(method, "grey"), "lw": 2.4 if is_base else 1.1,
            "zorder": 3 if is_base else 2, "label": f"{method} (baseline)" if is_base else method}


def _by_method(df: pd.DataFrame, colors: Mapping):
    """(method, rows) in the colour map's order, so every legend lists methods alike."""
    order = list(colors) + sorted(set(df["method"]) - set(colors))
    for method in order:
        part = df[df["method"] == method]
        if not part.empty:
            yield method, part


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _legend_right(fig, ax) -> None:
    """One legend outside the axes, so ~20 methods never cover the data."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def bar_main(rows: pd.DataFrame, meta: Mapping, baseline: str | None, colors: Mapping,
             path: Path) -> Path | None:
    """Horizontal bars of the main metric (rows: method, mean, half_width, n; in table order)."""
    rows = rows[rows["n"] > 0]
    if rows.empty:
        return None
    scale = meta.get("scale", 1)
    fig, ax = plt.subplots(figsize=(4.6, 0.6 + 0.24 * len(rows)))
    y = range(len(rows))[::-1]  # table order top to bottom
    ax.barh(list(y), rows["mean"] * scale, xerr=(rows["half_width"] * scale).fillna(0),
            color=[colors.get(m, "grey") for m in rows["method"]], capsize=2, height=0.7,
            error_kw={"lw": 0.8})
    ax.set_yticks(list(y), [m + (" (baseline)" if m == baseline else "") for m in rows["method"]])
    lo = (rows["mean"] - rows["half_width"].fillna(0)).min() * scale
    ax.set_xlim(left=max(0.0, lo - 0.05 * abs(lo)))  # zoom in: differences are a few points
    ax.set_xlabel(f"{meta.get('display', 'value')} — mean ± CI over seeds")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def per_class(rows: pd.DataFrame, baseline: str | None, colors: Mapping, path: Path) -> Path | None:
    """Test recall per class, mean over seeds per method, classes ordered by training count.

    x is a class's rank in that order (fewest training examples left, ties by class id), the same
    for every method, so each line runs left to right; drawing at the class index instead would
    zig-zag wherever the counts are not sorted by class id (e.g. a noisy dataset). Tick labels name
    the classes, with their training counts where those differ by 2× or more (long-tailed data).
    """
    if rows.empty:
        return None
    mean = rows.groupby(["method", "class"], as_index=False)[["train_count", "test_recall"]].mean()
    counts = mean.groupby("class")["train_count"].mean()
    order = sorted(counts.index, key=lambda c: (counts[c], c))
    rank = {c: i for i, c in enumerate(order)}
    by_count = counts.max() >= 2 * max(counts.min(), 1)
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for method, part in _by_method(mean, colors):
        part = part.assign(rank=part["class"].map(rank)).sort_values("rank")
        ax.plot(part["rank"], part["test_recall"] * 100, marker="o", ms=2.5,
                alpha=1.0 if method == baseline else 0.8, **line_style(method, baseline, colors))
    step = -(-len(order) // 25)  # at most ~25 labelled ticks (CIFAR-100 has 100 classes)
    ticks = list(range(0, len(order), step))
    ax.set_xticks(ticks, [f"{order[i]}\n({counts[order[i]]:.0f})" if by_count else f"{order[i]}"
                          for i in ticks], **({"fontsize": 6} if by_count else {}))
    ax.set(xlabel="class (training examples), ordered by training count" if by_count else
           "class, ordered by training count (counts within 2× of each other)", ylabel="test recall (%)",
           title="Per-class test recall" + (" vs class frequency" if by_count else ""))
    ax.grid(alpha=0.3)
    _legend_right(fig, ax)
    return save_figure(fig, path)


def curves(rows: pd.DataFrame, panels: list[str], metrics: Mapping, baseline: str | None,
           colors: Mapping, level: float, path: Path, x: str = "step", log_x: bool = False) -> Path | None:
    """One panel per curve metric: mean over seeds per `x` (step, or tokens seen) with a t-CI band.
    `log_x`: symmetric-log x axis (linear on [0, 1], so step 0 stays), for runs whose early steps
    matter as much as the late ones (grokking's log-spaced logging)."""
    panels = [p for p in panels if (rows["metric"] == p).any()]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        meta = metrics.get(metric, {})
        scale = meta.get("scale", 1)
        band = summarize(rows[rows["metric"] == metric], ["method", x], "value", level)
        low, high = meta.get("bounds", (None, None))  # a t-CI of 2 seeds can leave [0, 100]%: clip it
        for method, part in _by_method(band, colors):
            style = line_style(method, baseline, colors)
            ax.plot(part[x], part["mean"] * scale, **style)
            ax.fill_between(part[x], part["ci_low"].clip(low, high) * scale, part["ci_high"].clip(low, high) * scale,
                            color=style["color"], alpha=0.12, lw=0)
        ax.set(xlabel=("tokens seen" if x == "tokens" else x) + (" (log)" if log_x else ""),
               title=meta.get("display", metric))
        if log_x:
            ax.set_xscale("symlog", linthresh=1)
        ax.grid(alpha=0.3)
    _legend_right(fig, axes[0][0])
    return save_figure(fig, path)
