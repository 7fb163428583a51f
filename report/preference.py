"""Preference tracks in the report: variant selection ("fair tuning") and the track's figures.

Every method of a preference track runs a grid of variants (its β grid) of the same size. The
report never shows a test number chosen on test data: each *view* picks one variant per
(dataset, method) from validation means over seeds, then reports that variant's test metrics:

  @best        the variant with the best mean val win rate vs π_ref
  @matched-kl  among variants whose mean val KL(π‖π_ref) is within the protocol's kl_budget, the
               one with the best mean val gold reward (no variant within budget: no row)

A tuned track (`tuning:`, lossbench/tuning.py) chose each view's trial in the DAG, on tuning seeds
disjoint from the reported ones (lossbench/tasks/preference.py tuning_rules, the same rules with a
smallest-KL fallback for @matched-kl): each view reads its own final variant (tuned_best, tuned_kl,
tuned_forget) and no selection happens here; the trials never reach a table.

A view is written back as an ordinary dataset (`synthpref @best`), so leaderboards, paired CIs and
claims work unchanged; π_ref itself appears as the pseudo-method `sft` (win rate ½, KL 0, no
log-likelihood change), read from the same runs. Unlearning methods (NPO) are ranked with the rest
(their utility cost shows) and get their own view with the forget metrics.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lossbench import data as datasets
from lossbench import methods as registry
from lossbench.stats import mean_ci
from lossbench.report import overopt, selection
from lossbench.report import plots
from lossbench.report.plots import MAX_SERIES, NEUTRAL_COLOR, line_style, save_figure  # Agg backend, shared style

VIEWS = {
    "best": "each method at the variant with the best mean validation win rate",
    "matched-kl": "each method at its best-validation-gold-reward variant with mean validation KL ≤ {budget:g}",
    "unlearning": "unlearning methods at the variant with the lowest mean forget-set log-likelihood, "
                  "against π_ref (sft) and the retain-only model's likelihoods",
}
SFT = "sft"
SFT_VALUES = {  # metric of the pseudo-method `sft` (π_ref) -> the metric holding its value, or a constant
    "test/gold_reward": "test/sft_gold_reward", "val/gold_reward": "val/sft_gold_reward",
    "test/win_rate": 0.5, "val/win_rate": 0.5, "test/soft_win_rate": 0.5,
    "test/kl": 0.0, "val/kl": 0.0, "test/sqrt_kl": 0.0,
    "test/ranking_accuracy": "test/reference_ranking_accuracy",
    "test/idealized_ranking_accuracy": "test/idealized_ranking_accuracy",
    "test/chosen_change_sum": 0.0, "test/rejected_change_sum": 0.0,
    "test/mean_length": "test/sft_mean_length",
    "forget/forget_loglik": "forget/sft_forget_loglik", "forget/extraction_rate": "forget/sft_extraction_rate",
    "retain/extraction_rate": "retain/sft_extraction_rate",
    "capability/mean_acc": "capability/sft_mean_acc",
}


def view_name(dataset: str, view: str) -> str:
    return f"{dataset} @{view}"


def split_view(name: str) -> tuple[str, str | None]:
    base, _, view = name.partition(" @")
    return base, view or None


def _choose(rows: pd.DataFrame, view: str, budget: float, kinds: Mapping[str, str]) -> tuple[pd.DataFrame, str]:
    """(report/selection.choose's picks, what they were chosen on) of one dataset's rows under `view`;
    validation metrics only (the forget set for @unlearning), the rule shared by every track."""
    if view == "unlearning":
        rows = rows[rows["method"].map(lambda m: kinds.get(m) == "unlearning")]
        return selection.choose(rows, "forget/forget_loglik", higher_is_better=False), "forget/forget_loglik (min)"
    if view == "best":
        crit = selection.criterion({}, "", "preference")  # the task's SELECTION: val/win_rate
        way = "max" if crit.higher_is_better else "min"
        return selection.choose(rows, crit.metric, crit.higher_is_better), f"{crit.metric} ({way})"
    kl = selection.means(rows, "val/kl")["mean"]
    return (selection.choose(rows, "val/gold_reward", True, allowed=kl <= budget),
            f"val/gold_reward (max) with mean val/kl ≤ {budget:g}")


def select(rows: pd.DataFrame, view: str, budget: float, kinds: Mapping[str, str]) -> dict[str, str]:
    """{method: chosen variant} of one dataset's rows under `view` (validation metrics only)."""
    chosen, _ = _choose(rows, view, budget, kinds)
    return dict(zip(chosen["method"], chosen["variant"]))


def tuned_picks(rows: pd.DataFrame, view: str) -> dict[str, str]:
    """{method: its final variant for `view`} of one dataset's rows of a tuned track (lossbench/
    tuning.py chose it on the tuning seeds; @unlearning: the unlearning methods' tuned_forget)."""
    from lossbench.tasks.preference import VIEW_VARIANTS

    want = VIEW_VARIANTS[view]
    return {m: want for m in rows.loc[rows["variant"] == want, "method"].drop_duplicates()}


def _sft_rows(rows: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """π_ref as a method: one row per seed and metric of SFT_VALUES that the runs let us fill."""
    first = rows.drop_duplicates(["seed", "metric"]).pivot(index="seed", columns="metric", values="value")
    out = []
    for metric, source in SFT_VALUES.items():
        if isinstance(source, str) and source not in first:
            continue
        vals = first[source] if isinstance(source, str) else pd.Series(source, index=first.index)
        out += [{"metric": metric, "seed": s, "value": v} for s, v in vals.items()]
    base = rows.iloc[0]
    return pd.DataFrame(out).assign(track=base["track"], dataset=dataset, method=SFT, variant="-",
                                    status="ok", track_version=base["track_version"], method_version=0,
                                    run_id="")


def budgets(data: Mapping, track: str) -> dict[str, float]:
    """dataset -> the matched-KL budget of its protocol (provenance, via runs.json's protocol name)."""
    protos = ((data["provenance"].get("tracks") or {}).get(track) or {}).get("budget") or {}
    out = {}
    for r in data["runs"]:
        if r["track"] == track and r.get("protocol_name") in protos:
            out[r["dataset"]] = protos[r["protocol_name"]]["eval"]["kl_budget"]
    return out


def expand_views(data: dict, track: str) -> pd.DataFrame:
    """Replace `track`'s rows in data (summary, runs, provenance datasets) by its views; returns the
    selection table (dataset, view, method, variant) shown in the report."""
    tuned = selection.drop_trials(data, track)  # a tuned track: its final runs only (report/selection.py)
    summary, kinds = data["summary"], {m: v.get("kind") for m, v in data["methods"].items()}
    own = summary[summary["track"] == track]
    data.setdefault("raw_summary", {})[track] = own  # every variant: the frontier plot needs them all
    limit = budgets(data, track)
    views, runs, picks = [], [r for r in data["runs"] if r["track"] != track], []
    described = (data["provenance"].get("tracks") or {}).get(track, {}).get("datasets") or {}
    new_desc, swept, shown = {}, selection.swept(own), []
    for dataset, rows in own.groupby("dataset", sort=False):
        for view, text in VIEWS.items():
            if tuned:  # chosen in the DAG on the tuning seeds: each view reads its own final variant
                chosen = tuned_picks(rows, view)
            else:
                picked, on = _choose(rows, view, limit.get(dataset, np.inf), kinds)
                chosen = dict(zip(picked["method"], picked["variant"]))
            if not chosen:
                continue
            name = view_name(dataset, view)
            if swept and not tuned:  # the selection table under the view's leaderboard (a sweep-less track shows none)
                metric = on.split(" ")[0]
                shown.append(picked.assign(track=track, dataset=name, on=on, metric=metric,
                                           higher_is_better=view != "unlearning", split="validation",
                                           grid=picked["method"].map(selection.grid_text(rows, metric))))
            keep = rows[[chosen.get(m) == v for m, v in zip(rows["method"], rows["variant"])]]
            views += [keep.assign(dataset=name), _sft_rows(rows, name)]
            runs += [{**r, "dataset": name} for r in data["runs"]
                     if r["track"] == track and r["dataset"] == dataset and chosen.get(r["method"]) == r["variant"]]
            picks += [{"dataset": dataset, "view": view, "method": m, "variant": v} for m, v in chosen.items()]
            new_desc[name] = f"{described.get(dataset, dataset)}. View: {text.format(budget=limit.get(dataset, np.inf))}."
    data["summary"] = pd.concat([summary[summary["track"] != track], *views], ignore_index=True)
    data["runs"] = runs
    if track in (data["provenance"].get("tracks") or {}):
        data["provenance"]["tracks"][track]["datasets"] = new_desc
    data.setdefault("picks", {})[track] = pd.DataFrame(picks, columns=["dataset", "view", "method", "variant"])
    if shown:
        data.setdefault("selection", {})[track] = pd.concat(shown, ignore_index=True)[selection.SELECTION_COLUMNS]
    return data["picks"][track]


def trim_board(board: pd.DataFrame, data: Mapping) -> pd.DataFrame:
    """Leave out the empty rows the leaderboard adds (it lists every method of a track under every
    dataset): non-unlearning methods in @unlearning views, and methods that never ran on a view's
    dataset (dataset_methods). A method that ran but has no variant within the KL budget stays."""
    kinds = {m: v.get("kind") for m, v in data["methods"].items()}
    off = board["dataset"].str.endswith(" @unlearning") & ~board["method"].map(
        lambda m: m == SFT or kinds.get(m) == "unlearning")
    ran = {(t, d, m) for t, raw in data.get("raw_summary", {}).items()
           for d, m in raw[["dataset", "method"]].drop_duplicates().itertuples(index=False)}
    views = board["dataset"].str.contains(" @", regex=False)
    never = views & (board["method"] != SFT) & ~pd.Series(  # not in this dataset's dataset_methods
        [(t, split_view(d)[0], m) in ran for t, d, m in zip(board["track"], board["dataset"], board["method"])],
        index=board.index)
    return board[~(off | never)]


def is_preference(data: Mapping, track: str) -> bool:
    task = ((data["provenance"].get("tracks") or {}).get(track) or {}).get("task")
    if task:
        return task == "preference"
    kinds = {v.get("kind") for m, v in data["methods"].items()
             if m in set(data["summary"].loc[data["summary"]["track"] == track, "method"])}
    from lossbench.preference import PREFERENCE_KINDS

    return bool(kinds) and kinds <= set(PREFERENCE_KINDS)


def figures(ctx, view_dataset: str, data: Mapping, out,
            order: list[str] | None = None) -> list[tuple[str, Path | None]]:
    """(caption, path) of one view's figures: frontier and dynamics (@best, @matched-kl), and the
    noise-robustness curves once, under the clean dataset's @best view. They draw the baseline and
    the top of `order` (the view's table order; π_ref is no method here), at most plots.MAX_SERIES,
    in colours fixed for the view; the caption names how many others the table has."""
    track = ctx.info["name"]
    base, view = split_view(view_dataset)
    raw = data["raw_summary"][track]
    picks = data["picks"][track]
    chosen = dict(picks.loc[(picks["dataset"] == base) & (picks["view"] == view), ["method", "variant"]].to_numpy())
    curves = data["curves"]
    curves = curves[(curves["track"] == track) & (curves["dataset"] == base)]
    budget = budgets(data, track).get(base, np.inf)
    if view == "unlearning":
        return []
    baseline = ctx.info["baseline"]
    ranked = [m for m in (order if order is not None else list(chosen)) if m != SFT]
    colors = plots.method_colors(ranked, baseline)
    main = ctx.layout.get("view_columns", {}).get(view, [ctx.layout.get("main_metric")])[0]
    note = plots.not_drawn_note(ranked, colors, ctx.metrics.get(main, {}).get("display", main))
    ci = plots.ci_text(ctx.level)
    slug = f"{track}__{base}__{view}"
    drawn = []
    if view == "best":
        mine = raw[raw["dataset"] == base]
        tuned = mine["variant"].astype(str).str.startswith("tuned").any()  # a tuned track: its final variants
        points = "each method's final variants (one per view's choice)" if tuned else "each method's grid"
        drawn.append((f"Reward–KL frontier: test gold reward against √KL over {points} (mean ± "
                      f"{ci} over {plots.seeds_text(mine, colors)}; the grey star is π_ref). Up and left is better."
                      + note,
                      frontier(mine, baseline, colors, budget, ctx.level, out(f"{slug}__frontier"))))
    shown = curves[[chosen.get(m) == v for m, v in zip(curves["method"], curves["variant"])]]
    drawn.append(("Log-likelihood dynamics on held-out probe pairs (selected variants, mean over "
                  f"{plots.seeds_text(shown[shown['metric'].isin(DYNAMICS)], colors)}): chosen and rejected "
                  "log-likelihood change and the gradient cosine (E2)." + note,
                  dynamics(curves, chosen, baseline, colors, out(f"{slug}__dynamics"))))
    online = curves[curves["metric"] == "train/gold_reward"]["method"].unique()
    if view == "best" and len(online):
        drawn.append(("Online methods during training: proxy and gold reward of the policy's own samples "
                      "against √KL(π‖π_ref) (the samples' mean log π − log π_ref, floored at 0), one point per "
                      "logging step, mean over seeds, selected variants. The proxy is each method's own reward "
                      "(remax_*: the ensemble objective of standardised members; the others: the one proxy RM's "
                      "raw score). Overoptimisation shows as proxy reward still rising while gold reward falls.",
                      online_trajectories(curves, chosen, [m for m in chosen if m in set(online)],
                                          out(f"{slug}__online"))))
    if view == "best":
        mine = raw[raw["dataset"] == base]
        revised = revisions(mine, chosen, baseline, ranked, ctx.level, out(f"{slug}__revisions"))
        if revised is not None:
            drawn.append(("Self-revision (SRPO's evaluation): test gold reward of each policy's answers after k "
                          "revisions, each round answering again given the prompt and its previous answer "
                          f"(k = 0: the unrevised answers), selected variants, mean ± {ci} over seeds. The "
                          "methods that train a self-improvement policy (SRPO) are always drawn.", revised))
    if view == "best" and not datasets.dataset_entry(base).get("label_noise"):
        best = data["summary"][(data["summary"]["track"] == track)
                               & data["summary"]["dataset"].str.endswith(" @best")]
        wins = best[best["metric"] == "test/win_rate"]
        drawn.append(("Noise robustness: test win rate against the training label-flip rate (@best, mean ± "
                      f"{ci} over {plots.seeds_text(wins, colors)})." + note,
                      noise_curves(best, baseline, colors, ctx.level, out(f"{track}__noise"))))
        curves_bon = data.get("overopt")
        if curves_bon is not None and (curves_bon["track"] == track).any():
            drawn.append((overopt.caption(curves_bon, track, ctx.level),
                          overopt.figure(curves_bon, track, ctx.level, out(f"{track}__overopt"))))
    return drawn


# ============================================================================================ figures
DYNAMICS = ["val/chosen_change_sum", "val/rejected_change_sum", "val/grad_cosine"]  # panels of `dynamics`
def frontier(raw: pd.DataFrame, baseline: str, colors: Mapping, budget: float, level: float,
             path: Path) -> Path | None:
    """Test gold reward against √KL(π‖π_ref) for every variant (the β sweep), mean ± CI over seeds,
    for the methods of `colors`; π_ref is a grey star (grey is no method's colour)."""
    wide = raw[raw["metric"].isin(["test/gold_reward", "test/sqrt_kl"])]
    if wide.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for method in list(colors)[:MAX_SERIES]:
        part = wide[wide["method"] == method]
        pts = []
        for variant, v in part.groupby("variant"):
            g = v[v["metric"] == "test/gold_reward"]["value"].dropna()
            k = v[v["metric"] == "test/sqrt_kl"]["value"].dropna()
            if len(g) and len(k):
                m, hw, _ = mean_ci(g.to_numpy(), level)
                pts.append((k.mean(), m, 0 if np.isnan(hw) else hw))
        if pts:
            x, y, e = map(np.array, zip(*sorted(pts)))
            ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=2, **line_style(method, baseline, colors))
    sft = raw[raw["metric"] == "test/sft_gold_reward"].drop_duplicates("seed")["value"]
    if len(sft):
        ax.scatter([0], [sft.mean()], marker="*", s=140, color=NEUTRAL_COLOR, zorder=5, label="π_ref (sft)")
    if np.isfinite(budget):
        ax.axvline(np.sqrt(budget), color="0.5", ls=":", lw=1)
        ax.text(np.sqrt(budget), ax.get_ylim()[0], " KL budget", color="0.4", va="bottom", fontsize=8)
    ax.set_xlabel("√KL(π‖π_ref) on test prompts")
    ax.set_ylabel("gold reward r* of policy samples (test)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return save_figure(fig, path)


def revisions(raw: pd.DataFrame, chosen: Mapping[str, str], baseline: str, ranked: list[str], level: float,
              path: Path) -> Path | None:
    """Test gold reward after k = 0..N self-revisions, mean ± CI over seeds, selected variants: the baseline,
    the methods that train to revise (need revision_logps) and the top of the table, MAX_SERIES in all."""
    rounds = sorted({int(m.rsplit("rev", 1)[1]) for m in raw["metric"].unique()
                     if m.startswith("test/gold_reward_rev")})
    if not rounds:
        return None
    revised = set(raw[raw["metric"] == f"test/gold_reward_rev{rounds[0]}"].dropna(subset=["value"])["method"])
    ranked = [m for m in ranked if m in revised]  # best-of-n and unlearning runs have no revisions
    first = [m for m in ranked if m == baseline or (m in registry.REGISTRY
                                                     and "revision_logps" in registry.get(m).needs)]
    shown = (first + [m for m in ranked if m not in first])[:MAX_SERIES]
    colors = plots.method_colors(shown, baseline)
    metrics = ["test/gold_reward"] + [f"test/gold_reward_rev{k}" for k in rounds]
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for method in shown:
        part = raw[(raw["method"] == method) & (raw["variant"] == chosen.get(method))]
        pts = [mean_ci(part[part["metric"] == m]["value"].dropna().to_numpy(), level)[:2] for m in metrics]
        if any(np.isfinite(m) for m, _ in pts):
            y, e = map(np.array, zip(*pts))
            ax.errorbar([0] + rounds, y, yerr=np.nan_to_num(e), marker="o", ms=4, capsize=2,
                        **line_style(method, baseline, colors))
    ax.set_xticks([0] + rounds)
    ax.set_xlabel("self-revisions k")
    ax.set_ylabel("gold reward r* of the answers (test)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return save_figure(fig, path)


ONLINE = ["train/proxy_reward", "train/gold_reward"]  # panels of `online_trajectories`, against train/kl_sample


def online_trajectories(curves: pd.DataFrame, chosen: Mapping[str, str], methods_: list[str],
                        path: Path) -> Path | None:
    """Proxy and gold reward of the online methods' training samples against √KL over training
    (lossbench/online.py logs them every logging step), mean over seeds, selected variants."""
    rows = curves[curves["method"].isin(methods_) & curves["metric"].isin(ONLINE + ["train/kl_sample"])]
    rows = rows[[chosen.get(m) == v for m, v in zip(rows["method"], rows["variant"])]]
    if rows.empty:
        return None
    colors = plots.method_colors(sorted(methods_), None)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric in zip(axes, ONLINE):
        for method in colors:
            mean = rows[rows["method"] == method].groupby(["metric", "step"])["value"].mean().unstack(0)
            if metric in mean and "train/kl_sample" in mean:
                ax.plot(np.sqrt(mean["train/kl_sample"].clip(lower=0)), mean[metric], marker=".",
                        **line_style(method, None, colors))
        ax.set_title({"train/proxy_reward": "proxy reward (what is optimised)",
                      "train/gold_reward": "gold reward r*"}[metric], fontsize=10)
        ax.set_xlabel("√KL(π‖π_ref) of the training samples")
        ax.grid(alpha=0.3)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return save_figure(fig, path)


def dynamics(curves: pd.DataFrame, chosen: Mapping[str, str], baseline: str, colors: Mapping,
             path: Path) -> Path | None:
    """Chosen and rejected log-likelihood change vs π_ref on held-out probe pairs over training
    (the '3D properties' / gradient-entanglement picture), mean over seeds, selected variants."""
    panels = DYNAMICS
    rows = curves[curves["metric"].isin(panels) & curves["method"].isin(list(colors)[:MAX_SERIES])]
    rows = rows[[chosen.get(m) == v for m, v in zip(rows["method"], rows["variant"])]]
    if rows.empty:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, metric in zip(axes, panels):
        own = rows[rows["metric"] == metric]
        for method in [m for m in colors if m in set(own["method"])]:
            mean = own[own["method"] == method].groupby("step")["value"].mean()
            ax.plot(mean.index, mean.to_numpy(), **line_style(method, baseline, colors))
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title({"val/chosen_change_sum": "log π(y_w) − log π_ref(y_w)",
                      "val/rejected_change_sum": "log π(y_l) − log π_ref(y_l)",
                      "val/grad_cosine": "cos(∇log π(y_w), ∇log π(y_l))"}[metric], fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return save_figure(fig, path)


def noise_curves(view_rows: pd.DataFrame, baseline: str, colors: Mapping, level: float, path: Path,
                 metric: str = "test/win_rate") -> Path | None:
    """`metric` against the train label-flip rate ε, one line per method present at ≥ 2 noise levels."""
    rows = view_rows[(view_rows["metric"] == metric) & (view_rows["method"] != SFT)
                     & view_rows["method"].isin(list(colors)[:MAX_SERIES])].copy()
    if rows.empty:
        return None
    rows["eps"] = [datasets.dataset_entry(split_view(d)[0]).get("label_noise", 0.0) for d in rows["dataset"]]
    if rows["eps"].nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method in [m for m in colors if m in set(rows["method"])]:
        part = rows[rows["method"] == method]
        pts = [(eps, *mean_ci(v["value"].dropna().to_numpy(), level)[:2]) for eps, v in part.groupby("eps")]
        if len(pts) < 2:
            continue
        x, y, e = map(np.array, zip(*pts))
        ax.errorbar(x, y, yerr=np.nan_to_num(e), marker="o", capsize=2, **line_style(method, baseline, colors))
    ax.set_xlabel("label-flip rate ε of the training pairs")
    ax.set_ylabel("test win rate vs π_ref (@best)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return save_figure(fig, path)
