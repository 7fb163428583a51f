"""Ranks of methods over many (dataset, seed) blocks, after Demšar (JMLR 7, 2006): the Friedman test,
the Nemenyi post-hoc test and the critical-difference diagram.

Input: the tidy runs of one track and one metric, columns dataset, method, seed, value (+ optional
status). A block is one (dataset, seed) pair; within a block the methods are ranked, 1 = best, ties
averaged. A run that exists but has no value (NaN, or a diverged / failed status) ranks worst in its
block, tied with the other such runs of the block. The tests need complete blocks:

1. blocks with fewer than 2 runs are dropped;
2. the track's design is the blocks that more than half of the methods ran; a method missing more
   than a quarter of them (e.g. run on one dataset of two) is left out of the test (`left_out`, with
   the reason), so a stray extra seed of a few methods does not push out all the others;
3. the test runs on the blocks every remaining method ran (a method missing one seed costs that
   block, not its place in the ranking).

Every test statistic comes from scipy (`friedmanchisquare`, `wilcoxon`) and scikit-posthocs
(`posthoc_nemenyi_friedman`, `critical_difference_diagram`). Following Demšar, the post-hoc test is
read only when the omnibus test rejects: otherwise every method is tied with the best.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as st

from lossbench.stats import BAD_STATUSES

BLOCK = ["dataset", "seed"]


@dataclass
class RankResult:
    """The rank comparison of one track and metric (see the module docstring).

    mean_rank: method -> mean rank over the blocks, best (lowest) first. friedman_stat / friedman_p:
    the omnibus test, Friedman's χ² with ≥ 3 methods, the Wilcoxon signed-rank test with exactly 2
    (`omnibus` says which). posthoc: method × method p-values (Nemenyi after Friedman; the Wilcoxon p
    with 2 methods), in mean-rank order. tied_with_best: the best-ranked method and every method the
    post-hoc test cannot tell from it at `level` (all methods when the omnibus test does not reject).
    left_out: method -> why it is not in the test. ranks: the block × method rank matrix.
    """
    mean_rank: pd.Series
    n_blocks: int
    n_datasets: int
    friedman_stat: float
    friedman_p: float
    posthoc: pd.DataFrame
    tied_with_best: list[str]
    left_out: dict[str, str]
    test: str
    omnibus: str = "friedman"
    level: float = 0.95
    ranks: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def rejected(self) -> bool:
        """Whether the omnibus test rejects "all methods rank alike" at `level`."""
        return bool(self.friedman_p < 1 - self.level)  # NaN (no spread at all) compares False


def applies(n_datasets: int, n_methods_per_dataset) -> bool:
    """Whether a track has enough to compare for the rank figure: ≥ 2 datasets or ≥ 3 methods per
    dataset (`n_methods_per_dataset`: a count, or one count per dataset, of which the largest counts)."""
    if not np.isscalar(n_methods_per_dataset):
        n_methods_per_dataset = max(n_methods_per_dataset, default=0)
    return n_datasets >= 2 or n_methods_per_dataset >= 3


def _matrices(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, present): block × method; a bad status counts as no value. Duplicate runs raise."""
    df = frame.copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    if "status" in df:
        df.loc[df["status"].isin(BAD_STATUSES), "value"] = np.nan
    if df.duplicated(BLOCK + ["method"]).any():
        raise ValueError("two runs for one (dataset, seed, method): ranks need one value per run")
    values = df.set_index(BLOCK + ["method"])["value"].unstack("method")
    present = df.assign(one=True).set_index(BLOCK + ["method"])["one"].unstack("method")
    return values.sort_index(), present.reindex(values.index).notna().sort_index()


def _select(present: pd.DataFrame) -> tuple[list[str], pd.Index, dict[str, str]]:
    """(kept methods, blocks of the test, left_out) by the rules of the module docstring."""
    present = present[present.sum(axis=1) >= 2]
    if present.empty:
        return [], present.index, {}
    n_methods = present.shape[1]
    design = present[present.sum(axis=1) > n_methods / 2]
    left_out = {}
    for m in present.columns:
        missing = design.index[~design[m]]
        if len(missing) > len(design) / 4:
            d, s = missing[0]
            left_out[m] = (f"no run in {len(missing)} of {len(design)} (dataset, seed) blocks "
                           f"the other methods share (e.g. {d}, seed {s})")
    kept = [m for m in present.columns if m not in left_out]
    blocks = present.index[present[kept].all(axis=1)] if kept else present.index[:0]
    return kept, blocks, left_out


def _block_ranks(values: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """Ranks within each row, 1 = best, ties averaged; NaN ranks worst (tied among themselves)."""
    oriented = (-values if higher_is_better else values).to_numpy(dtype=float)
    oriented = np.where(np.isnan(oriented), np.inf, oriented)
    return pd.DataFrame(st.rankdata(oriented, axis=1, method="average"),
                        index=values.index, columns=values.columns)


def _wilcoxon(values: pd.DataFrame, higher_is_better: bool) -> tuple[float, float, int]:
    """Two-sided Wilcoxon signed-rank test of the two methods' per-block differences, and which
    method it favours (0 or 1). A run without a value loses its block by more than any finite
    difference (the test uses only the ranks of |difference|, so the size of that stand-in is moot)."""
    v = (values if higher_is_better else -values).to_numpy(dtype=float)
    d = v[:, 0] - v[:, 1]
    finite = d[np.isfinite(d)]
    big = 2 * np.abs(finite).max() + 1 if finite.size else 1.0
    nan0, nan1 = np.isnan(v[:, 0]), np.isnan(v[:, 1])
    d = np.where(nan0 & nan1, 0.0, np.where(nan0, -big, np.where(nan1, big, d)))
    if not d.any():
        return 0.0, 1.0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = st.wilcoxon(d)
        greater = st.wilcoxon(d, alternative="greater").pvalue
        less = st.wilcoxon(d, alternative="less").pvalue
    p = 1.0 if np.isnan(res.pvalue) else float(res.pvalue)
    return float(res.statistic), p, 0 if greater <= less else 1


def _blocks_text(blocks: pd.Index) -> str:
    per = pd.Series(blocks.get_level_values("seed")).groupby(blocks.get_level_values("dataset")).nunique()
    n_d = len(per)
    datasets = f"{n_d} dataset{'s' if n_d != 1 else ''}"
    if per.nunique() == 1:
        s = int(per.iloc[0])
        return f"{len(blocks)} blocks ({datasets} × {s} seed{'s' if s != 1 else ''})"
    return f"{len(blocks)} blocks ({datasets}, {per.min()}–{per.max()} seeds each)"


def compare(frame: pd.DataFrame, higher_is_better: bool, level: float = 0.95) -> RankResult | None:
    """Rank the methods of one track and metric over (dataset, seed) blocks and test them; None when
    fewer than 2 methods or 2 blocks remain. See the module docstring for blocks and left-out methods."""
    if frame.empty:
        return None
    values, present = _matrices(frame)
    kept, blocks, left_out = _select(present)
    if len(kept) < 2 or len(blocks) < 2:
        return None
    values = values.loc[blocks, kept]
    ranks = _block_ranks(values, higher_is_better)
    # best first; equal mean ranks in name order
    mean_rank = ranks.mean(axis=0).sort_index().sort_values(kind="stable")
    order = list(mean_rank.index)
    alpha = 1 - level
    if len(kept) >= 3:
        omnibus = "friedman"
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            stat, p = st.friedmanchisquare(*ranks.to_numpy().T)  # ranking ranks keeps them
        if np.isnan(p):  # every block all tied: no evidence of any difference
            stat, p = 0.0, 1.0
        import scikit_posthocs as sp

        posthoc = sp.posthoc_nemenyi_friedman(ranks).loc[order, order]
        best = order[0]
        name = f"Friedman χ²={stat:.2f}, p={p:.2g}; Nemenyi post-hoc"
    else:
        omnibus = "wilcoxon"
        stat, p, favoured = _wilcoxon(values, higher_is_better)
        posthoc = pd.DataFrame([[1.0, p], [p, 1.0]], index=kept, columns=kept).loc[order, order]
        best = kept[favoured] if p < alpha else order[0]
        name = f"Wilcoxon signed-rank W={stat:g}, p={p:.2g} (2 methods: no Friedman test)"
    stat, p = float(stat), float(p)
    if p < alpha:
        tied = [m for m in order if m == best or posthoc.at[best, m] >= alpha]
        verdict = f"{len(tied)} of {len(order)} tied with the best at α={alpha:.3g}"
    else:
        tied = order
        verdict = f"no difference at α={alpha:.3g}: all {len(order)} tied"
    n_datasets = blocks.get_level_values("dataset").nunique()
    return RankResult(mean_rank=mean_rank, n_blocks=len(blocks), n_datasets=n_datasets,
                      friedman_stat=stat, friedman_p=p, posthoc=posthoc, tied_with_best=tied,
                      left_out=left_out, test=f"{name} over {_blocks_text(blocks)}; {verdict}",
                      omnibus=omnibus, level=level, ranks=ranks)


def rank_rows(result: RankResult | None) -> list[dict]:
    """One row per method in rank order: {method, mean_rank (float), tied_with_best (bool)}."""
    if result is None:
        return []
    tied = set(result.tied_with_best)
    return [{"method": m, "mean_rank": float(r), "tied_with_best": m in tied}
            for m, r in result.mean_rank.items()]


def _shown_matrix(result: RankResult) -> pd.DataFrame:
    """The p-values the diagram joins by: the post-hoc ones, or all 1 when the omnibus test does not
    reject (then no pair is different, as `tied_with_best` says)."""
    if result.rejected:
        return result.posthoc
    return pd.DataFrame(1.0, index=result.posthoc.index, columns=result.posthoc.columns)


def cd_figure(result: RankResult | None, path: Path | str, baseline: str | None = None,
              title: str | None = None) -> Path | None:
    """The critical-difference diagram (scikit-posthocs) as a PNG: methods at their mean rank (1 =
    best, on the left), a bar joins methods the post-hoc test cannot tell apart. The baseline's label
    is bold and says "(baseline)". Returns the path, or None when there is nothing to draw."""
    if result is None or len(result.mean_rank) < 2:
        return None
    import scikit_posthocs as sp

    from lossbench.report import plots  # Agg backend and the report's style
    import matplotlib.pyplot as plt

    label = {m: f"{m} (baseline)" if m == baseline else m for m in result.mean_rank.index}
    ranks = result.mean_rank.rename(index=label)
    sig = _shown_matrix(result).rename(index=label, columns=label)
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # no grey
    others = [m for m in ranks.index if m != label.get(baseline)]
    # distinct colours only while they cannot repeat; beyond that every label is one grey (the names say it)
    colors = ({m: palette[i] for i, m in enumerate(others)} if len(others) <= len(palette)
              else {m: "#555555" for m in others})
    if baseline in label:
        colors[label[baseline]] = "black"
    n = len(ranks)
    rows = (n + 1) // 2  # labels are split between the two sides, one line each
    fig, ax = plt.subplots(figsize=(7.0, 1.3 + 0.2 * rows + 0.12 * min(n, 10)))
    sp.critical_difference_diagram(
        ranks, sig, ax=ax, alpha=1 - result.level, color_palette=colors,
        label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}",
        label_props={"fontsize": 7}, marker_props={"s": 14}, elbow_props={"linewidth": 0.8},
        crossbar_props={"linewidth": 2.5, "alpha": 0.8})
    for text in ax.texts:
        if baseline in label and label[baseline] in text.get_text():
            text.set_fontweight("bold")
    ax.set_xlabel("mean rank (1 = best); a bar joins methods not significantly different")
    ax.xaxis.set_label_position("top")
    ax.set_title(title or f"Mean rank over {result.n_blocks} blocks", pad=6)
    fig.text(0.5, 0.0, result.test, ha="center", va="top", fontsize=6, wrap=True)
    return plots.save_figure(fig, Path(path))
