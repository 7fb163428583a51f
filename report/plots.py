"""Report figures (matplotlib, Agg): main-metric bars, per-class recall, training curves.

Each function takes tidy frames already filtered to one (track, dataset), writes one PNG and
returns its path, or None when there is nothing to draw.

Readability rules (issue 18): a figure with one line (or bar group) per method draws only the
methods in its colour map, which `method_colors` builds from the table order: the baseline (black,
thick) and the best-ranked others, at most `MAX_SERIES` in all, each in its own colour, so no
colour repeats within a figure and a method keeps its colour across the figures of one
(track, dataset). Captions say what is shown and over how many seeds (`seeds_text`) and how many
table methods are not drawn (`not_drawn_note`). A curve whose metric is each method's own training
objective (`OWN_LOSS_CURVES`) is drawn relative to each run's first logged value, never on one
absolute axis (losses of different methods have different scales and offsets).
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection, Mapping

import matplotlib

matplotlib.use("Agg")  # headless: the report is built in CI and by Snakemake jobs
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lossbench.stats import summarize  # noqa: E402

plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7,
                     "figure.dpi": 110, "savefig.bbox": "tight"})
BASELINE_COLOR = "black"
# tab10 without its grey (index 7): 9 distinct colours; the grey is kept for non-method marks
# (e.g. π_ref in the preference frontier) and the bar chart's neutral bars
PALETTE = tuple(c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7)
NEUTRAL_COLOR = plt.get_cmap("tab10").colors[7]
BAR_COLOR = "0.72"  # every non-baseline bar of the main-metric chart
MAX_SERIES = 8  # lines (or bar groups) per figure: the baseline and the top 7 methods
# curve metrics that log each method's own objective (classification, grokking); the LM track's
# losses are plain cross-entropy for every method and stay absolute (build._figures passes `relative`)
OWN_LOSS_CURVES = ("train/loss", "val/loss", "test/loss")
RELATIVE_RULE = "change from each run's first logged value, in % of |first value|"


def method_colors(methods: list[str], baseline: str | None, limit: int = MAX_SERIES) -> dict[str, tuple]:
    """Colours of the methods a figure draws, in the order of `methods` (pass the table order, best
    first): the baseline black (when present) and the first other methods in `PALETTE` order, at most
    `limit` methods in all (and never more others than the palette has colours). Methods past the
    limit get no colour; figures draw only the methods of the map."""
    methods = list(dict.fromkeys(methods))
    has_base = baseline in methods
    room = min(max(0, limit - has_base), len(PALETTE))
    kept = set([m for m in methods if m != baseline][:room])
    colors, i = {}, 0
    for m in methods:
        if m == baseline:
            colors[m] = BASELINE_COLOR
        elif m in kept:
            colors[m] = PALETTE[i]
            i += 1
    return colors


def not_drawn_note(order: list[str], colors: Mapping, by: str | None = None) -> str:
    """Caption note on the table methods a figure leaves out ('' when it draws them all)."""
    hidden = [m for m in dict.fromkeys(order) if m not in colors]
    if not hidden:
        return ""
    drawn = f"Drawn: the baseline and the top {sum(1 for m in colors if m in order) - 1} methods" + (
        f" by {by}" if by else "") + "; "
    names = f" ({', '.join(hidden)})" if len(hidden) <= 3 else ""
    other = "method is" if len(hidden) == 1 else "methods are"
    return f" {drawn}{len(hidden)} other {other}{names} in the table, not drawn."


def seeds_text(df: pd.DataFrame, methods: Collection[str] | None = None, n_column: str | None = None) -> str:
    """'3 seeds', or '2–3 seeds' when the drawn methods differ: distinct seeds per method of `df`
    (only `methods`, when given), or the per-row count in `n_column` (a leaderboard's `n`)."""
    if methods is not None:
        df = df[df["method"].isin(list(methods))]
    if n_column is not None:
        counts = df.loc[df[n_column] > 0, n_column].astype(int)
    elif df.empty or "seed" not in df:
        counts = pd.Series([], dtype=int)
    else:
        counts = df.groupby("method")["seed"].nunique()
    if counts.empty:
        return "0 seeds"
    lo, hi = int(counts.min()), int(counts.max())
    return f"{lo} seed{'s' if lo != 1 else ''}" if lo == hi else f"{lo}–{hi} seeds (per method)"


def ci_text(level: float) -> str:
    return f"{level:.0%} CI"


def line_style(method: str, baseline: str | None, colors: Mapping) -> dict:
    """Line style: the baseline drawn thick on top, the rest thin."""
    is_base = method == baseline
    return {"color": colors.get(method, NEUTRAL_COLOR), "lw": 2.4 if is_base else 1.1,
            "zorder": 3 if is_base else 2, "label": f"{method} (baseline)" if is_base else method}


def _by_method(df: pd.DataFrame, colors: Mapping):
    """(method, rows) of the methods in the colour map (at most MAX_SERIES), in its order, so every
    legend lists methods alike and no figure draws a method without its own colour."""
    for method in list(colors)[:MAX_SERIES]:
        part = df[df["method"] == method]
        if not part.empty:
            yield method, part


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _legend_right(fig, ax) -> None:
    """One legend outside the axes, never covering the data."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def relative_to_start(rows: pd.DataFrame, x: str = "step") -> pd.DataFrame:
    """`value` as the change from each run's first logged value (smallest `x`), in % of |first|:
    0 at the start, −100 where a positive loss reaches 0, +400 where it grows 5×; one rule for every
    loss, whatever its sign, offset or scale. A run whose first value is 0 has no such scale and is
    left out. Adds the column `first` (the run's first value)."""
    if rows.empty:
        return rows
    keys = [k for k in ("method", "variant", "seed") if k in rows]
    rows = rows.sort_values([*keys, x])
    first = rows.groupby(keys, dropna=False)["value"].transform("first")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (rows["value"] - first) / first.abs() * 100
    return rows.assign(value=rel, first=first)[np.isfinite(rel.to_numpy())]


def bar_main(rows: pd.DataFrame, meta: Mapping, baseline: str | None, path: Path,
             level: float = 0.95) -> Path | None:
    """Horizontal bars of the main metric (rows: method, mean, half_width, n; in table order), one
    per method of the table: bars are named by their tick, so they share one neutral colour and only
    the baseline's is black."""
    rows = rows[rows["n"] > 0]
    if rows.empty:
        return None
    scale = meta.get("scale", 1)
    fig, ax = plt.subplots(figsize=(4.6, 0.6 + 0.24 * len(rows)))
    y = range(len(rows))[::-1]  # table order top to bottom
    ax.barh(list(y), rows["mean"] * scale, xerr=(rows["half_width"] * scale).fillna(0),
            color=[BASELINE_COLOR if m == baseline else BAR_COLOR for m in rows["method"]],
            capsize=2, height=0.7, error_kw={"lw": 0.8, "ecolor": "0.25"})
    ax.set_yticks(list(y), [m + (" (baseline)" if m == baseline else "") for m in rows["method"]])
    lo = (rows["mean"] - rows["half_width"].fillna(0)).min() * scale
    ax.set_xlim(left=max(0.0, lo - 0.05 * abs(lo)))  # zoom in: differences are a few points
    ax.set_xlabel(f"{meta.get('display', 'value')} — mean ± {ci_text(level)} over "
                  f"{seeds_text(rows, n_column='n')}")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def per_class(rows: pd.DataFrame, baseline: str | None, colors: Mapping, path: Path) -> Path | None:
    """Test recall per class, mean over seeds, one line per method of `colors`, classes ordered by
    training count.

    x is a class's rank in that order (fewest training examples left, ties by class id), the same
    for every method, so each line runs left to right; drawing at the class index instead would
    zig-zag wherever the counts are not sorted by class id (e.g. a noisy dataset). Tick labels name
    the classes, with their training counts where those differ by 2× or more (long-tailed data).
    """
    rows = rows[rows["method"].isin(list(colors)[:MAX_SERIES])]
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
           colors: Mapping, level: float, path: Path, x: str = "step", log_x: bool = False,
           relative: Collection[str] = ()) -> Path | None:
    """One panel per curve metric: mean over seeds per `x` (step, or tokens seen) with a t-CI band,
    one line per method of `colors`. `log_x`: symmetric-log x axis (linear on [0, 1], so step 0
    stays), for runs whose early steps matter as much as the late ones (grokking's log-spaced
    logging). Panels in `relative` (each method's own loss) show each run's change from its first
    logged value (`relative_to_start`) instead of the absolute value."""
    rows = rows[rows["method"].isin(list(colors)[:MAX_SERIES])]
    panels = [p for p in panels if (rows["metric"] == p).any()]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0), squeeze=False,
                             layout="constrained")  # room for a relative panel's y label
    for ax, metric in zip(axes[0], panels):
        meta = metrics.get(metric, {})
        own = rows[rows["metric"] == metric]
        if metric in relative:
            own, scale, high = relative_to_start(own, x), 1, None
            # a loss bounded below by 0 that starts above 0 cannot fall more than 100%: clip its band there
            low = -100.0 if meta.get("bounds", (None,))[0] == 0 and (own["first"] > 0).all() else None
            ax.axhline(0, color="0.5", lw=0.6, ls=":")
            ax.set_ylabel("(loss − first) / |first| (%)")
            title = f"{meta.get('display', metric)}: % change from each run's start"
        else:
            scale, title = meta.get("scale", 1), meta.get("display", metric)
            low, high = meta.get("bounds", (None, None))  # a t-CI of 2 seeds can leave [0, 100]%: clip it
        band = summarize(own, ["method", x], "value", level)
        for method, part in _by_method(band, colors):
            style = line_style(method, baseline, colors)
            ax.plot(part[x], part["mean"] * scale, **style)
            ax.fill_between(part[x], part["ci_low"].clip(low, high) * scale, part["ci_high"].clip(low, high) * scale,
                            color=style["color"], alpha=0.12, lw=0)
        ax.set(xlabel=("tokens seen" if x == "tokens" else x) + (" (log)" if log_x else ""), title=title)
        if log_x:
            ax.set_xscale("symlog", linthresh=1)
        ax.grid(alpha=0.3)
    _legend_right(fig, axes[0][0])
    return save_figure(fig, path)


def curves_caption(rows: pd.DataFrame, panels: list[str], colors: Mapping, level: float,
                   relative: Collection[str] = ()) -> str:
    """What `curves` shows: statistic, seed count of the drawn runs, and the relative-loss rule."""
    shown = rows[rows["method"].isin(list(colors)[:MAX_SERIES]) & rows["metric"].isin(panels)]
    text = f"mean and {ci_text(level)} band over {seeds_text(shown)}"
    rel = [p for p in panels if p in relative and (shown["metric"] == p).any()]
    if rel:
        text += (f"; {', '.join(rel)}: each method's own training objective, so drawn as the {RELATIVE_RULE} "
                 "(0 = start, −100 = a positive loss reaching 0), never on one absolute axis")
    return text
