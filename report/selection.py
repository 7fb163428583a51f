"""Variant selection on validation data ("fair tuning"), one rule for every track.

A track with a `sweep` runs every method on a grid of variants of the same size. The report never
shows a test number chosen on test data: per (dataset, method) it picks one variant from the mean
over seeds of the task's selection metric (`SELECTION` of lossbench/tasks/<task>.py: a validation
metric and its direction), then every table, figure and claim reads that variant's runs only.

  choose()   the rule: among a method's variants, the one with the most seeds with a finite
             selection value (a variant that diverged or failed on a seed loses to one that did
             not), then the best mean over those seeds; ties go to the first variant by name.
  apply()    filters a track's summary, curves, per-class rows and runs to the chosen variants and
             records the selection table shown in the report. A track whose methods each ran one
             variant is left exactly as it is (no selection, no table).

A track with `tuning` (lossbench/tuning.py) chose each method's trial in the DAG, on tuning seeds
disjoint from the reported ones: drop_trials() keeps only its `tuned` rows (trials never reach the
tables or claims) and tuning_table() shows what was chosen.

Preference tracks select per *view* (report/preference.py) with the same rule; the optimizer
axis (report/optimizers.py) selects per optimizer among the same grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

SELECTION_COLUMNS = ["track", "dataset", "method", "variant", "on", "metric", "higher_is_better", "split",
                     "value", "n", "grid"]
TABLES = ("summary", "curves", "per_class")  # the tidy tables that carry one run per row group


@dataclass(frozen=True)
class Criterion:
    """What a variant is chosen on: a metric of the runs, its direction and the data split it is
    measured on ("validation"; "train" for a task without validation data)."""
    metric: str
    higher_is_better: bool
    split: str = "validation"

    @property
    def text(self) -> str:
        """`val/loss (min)`; `train/loss (min, train data)` off the validation split."""
        note = "" if self.split == "validation" else f", {self.split} data"
        return f"{self.metric} ({'max' if self.higher_is_better else 'min'}{note})"


def task_of(data: Mapping, track: str) -> str | None:
    return ((data["provenance"].get("tracks") or {}).get(track) or {}).get("task")


def criterion(data: Mapping, track: str, task: str | None = None) -> Criterion:
    """The selection criterion the track's task names (lossbench/tasks/<task>.py: SELECTION)."""
    from lossbench import tasks

    task = task or task_of(data, track)
    spec = getattr(tasks.get(task), "SELECTION", None) if task else None
    if not spec:
        raise ValueError(f"track {track!r} ran several variants per method, but its task {task!r} names no "
                         "selection metric (SELECTION in lossbench/tasks/<task>.py): no variant can be chosen "
                         "without test data")
    return Criterion(spec["metric"], bool(spec["higher_is_better"]), spec.get("split", "validation"))


def means(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (method, variant): `mean` over seeds of `metric` (NaN seeds left out) and `n` finite seeds."""
    part = rows[rows["metric"] == metric]
    finite = part[np.isfinite(part["value"].astype(float))]
    out = finite.groupby(["method", "variant"])["value"].agg(mean="mean", n="count")
    variants = part[["method", "variant"]].drop_duplicates()
    return out.reindex(pd.MultiIndex.from_frame(variants)).fillna({"n": 0}).sort_index()


def choose(rows: pd.DataFrame, metric: str, higher_is_better: bool = True,
           allowed: pd.Series | None = None) -> pd.DataFrame:
    """One row per method of `rows` (one dataset's summary rows): its chosen variant by the rule
    above, with the selection `value` (mean over seeds) and `n`. `allowed`: a boolean Series on
    the (method, variant) index of `means` restricting the candidates (a KL budget). A method
    without any finite value among its allowed variants gets no row."""
    m = means(rows, metric)
    if allowed is not None:
        m = m[allowed.reindex(m.index).fillna(False).astype(bool)]
    m = m[m["n"] > 0]
    out = []
    sign = 1.0 if higher_is_better else -1.0
    for method, part in m.groupby(level="method", sort=False):
        best = None
        for (_, variant), r in part.iterrows():  # sorted by variant: ties go to the first
            key = (r["n"], sign * r["mean"])
            if best is None or key > best[0]:
                best = (key, variant, r)
        _, variant, r = best
        out.append({"method": method, "variant": variant, "value": float(r["mean"]), "n": int(r["n"])})
    return pd.DataFrame(out, columns=["method", "variant", "value", "n"])


def grid_text(rows: pd.DataFrame, metric: str, digits: int = 4) -> dict[str, str]:
    """method -> `variant: mean (n), ...` of every variant tried, for the selection table."""
    m = means(rows, metric)
    out = {}
    for method, part in m.groupby(level="method", sort=False):
        out[method] = ", ".join(f"{v}: {_num(r['mean'], digits)} ({int(r['n'])})" for (_, v), r in part.iterrows())
    return out


def _num(x: float, digits: int) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def swept(rows: pd.DataFrame) -> bool:
    """Whether some (dataset, method) of `rows` ran more than one variant."""
    if rows.empty or "variant" not in rows:
        return False
    return bool((rows.groupby(["dataset", "method"])["variant"].nunique() > 1).any())


def pick_table(rows: pd.DataFrame, crit: Criterion, track: str) -> pd.DataFrame:
    """The selection table of one track's summary rows: one row per (dataset, method) picked."""
    parts = []
    for dataset, part in rows.groupby("dataset", sort=False):
        chosen = choose(part, crit.metric, crit.higher_is_better)
        grid = grid_text(part, crit.metric)
        parts.append(chosen.assign(track=track, dataset=dataset, on=crit.text, metric=crit.metric,
                                   higher_is_better=crit.higher_is_better, split=crit.split,
                                   grid=chosen["method"].map(grid)))
    return (pd.concat(parts, ignore_index=True)[SELECTION_COLUMNS] if parts
            else pd.DataFrame(columns=SELECTION_COLUMNS))


def keep_mask(df: pd.DataFrame, track: str, keep: set) -> np.ndarray:
    """Rows of `df` to keep: other tracks', and `track`'s whose (dataset, method, variant) is in `keep`."""
    if df.empty or "variant" not in df:
        return np.ones(len(df), dtype=bool)
    other = (df["track"] != track).to_numpy()
    mine = np.array([k in keep for k in zip(df["dataset"], df["method"], df["variant"])], dtype=bool)
    return other | mine


def kept_variants(rows: pd.DataFrame, picks: pd.DataFrame) -> set:
    """(dataset, method, variant) to keep: each pick, and for a (dataset, method) with no pick (no
    seed of any variant has a selection value: all diverged or failed) its first variant, so the
    method keeps its row with its diverged/failed counts."""
    keep = set(zip(picks["dataset"], picks["method"], picks["variant"]))
    picked = {(d, m) for d, m, _ in keep}
    for (d, m), part in rows.groupby(["dataset", "method"], sort=False):
        if (d, m) not in picked:
            keep.add((d, m, sorted(part["variant"].unique())[0]))
    return keep


def filter_runs(data: dict, track: str, keep: set, tables=TABLES) -> None:
    """Keep only the chosen variants of `track` in data's tidy `tables` and runs.json entries."""
    for name in tables:
        df = data.get(name)
        if df is not None:
            data[name] = df[keep_mask(df, track, keep)].reset_index(drop=True)
    data["runs"] = [r for r in data["runs"]
                    if r["track"] != track or (r["dataset"], r["method"], r.get("variant", "default")) in keep]


def apply(data: dict, track: str, task: str | None = None, tables=TABLES) -> pd.DataFrame | None:
    """Select `track`'s variants on its task's criterion and drop the others from `data` (`tables`,
    the first the summary the selection reads, and runs); returns the selection table (also in
    data["selection"][track]), or None when nothing was swept."""
    if drop_trials(data, track, tables):  # a tuned track: its `tuned` rows only, no selection
        return None
    summary = data[tables[0]]
    own = summary[summary["track"] == track]
    if not swept(own):
        return None
    crit = criterion(data, track, task)
    picks = pick_table(own, crit, track)
    filter_runs(data, track, kept_variants(own, picks), tables)
    data.setdefault("selection", {})[track] = picks
    return picks


# ============================================================================== the report's table
HEADERS = ["method", "selected variant", "selected on", "value (seeds)", "every variant: mean (seeds)"]


def table(picks: pd.DataFrame, dataset: str, order: list[str], label=lambda method: method) -> dict | None:
    """An extra table under a dataset's leaderboard: which variant each method runs at and why."""
    rows = picks[picks["dataset"] == dataset]
    if rows.empty:
        return None
    rank = {m: i for i, m in enumerate(order)}
    rows = rows.assign(_o=rows["method"].map(lambda m: rank.get(m, len(rank)))).sort_values(["_o", "method"],
                                                                                               kind="stable")
    body = []
    for r in rows.to_dict("records"):
        body.append([label(r["method"]), r["variant"], r["on"], f"{_num(r['value'], 4)} ({r['n']})", r["grid"] or ""])
    splits = set(rows["split"])
    caption = ("Variant selection: each method's sweep ran every variant on every seed; the table above shows "
               "the variant with the best mean selection metric over seeds (most seeds with a value first), "
               "chosen without test data.")
    if splits - {"validation"}:
        caption += (" This task has no validation split, so the selection uses training data "
                    "(the metric's prefix says which).")
    return {"title": "Variant selection", "caption": caption, "headers": HEADERS, "rows": body}


# ============================================================================== equal-budget tuning
def drop_trials(data: dict, track: str, tables=TABLES) -> bool:
    """For a tuned track (its runs have the variant `tuned`, or a rule's `tuned_<view>`): drop its
    trial runs from data's `tables` and runs, and record each (dataset, method, final variant)'s
    choice (the final runs' `tuning` record) in data["tuning"][track]. Returns whether the track is
    tuned."""
    from lossbench import tuning

    mine = [r for r in data["runs"] if r["track"] == track]
    if not any(tuning.is_tuned(r.get("variant", "")) for r in mine):
        return False
    choices = {}
    for r in mine:
        key = (r["dataset"], r["method"], r.get("variant"))
        if tuning.is_tuned(r.get("variant", "")) and r.get("tuning") and key not in choices:
            choices[key] = r["tuning"]
    data.setdefault("tuning", {})[track] = choices
    for name in tables:
        df = data.get(name)
        if df is not None and not df.empty and "variant" in df:
            trial = (df["track"] == track).to_numpy() & df["variant"].astype(str).map(tuning.is_trial).to_numpy()
            data[name] = df[~trial].reset_index(drop=True)
    data["runs"] = [r for r in data["runs"] if r["track"] != track or not tuning.is_trial(r.get("variant", ""))]
    return True


TUNING_HEADERS = ["method", "chosen trial", "chosen hyperparameters", "best validation score",
                  "spread over trials (best − worst; std)", "⚠ on the edge of its range"]


def tuning_table(track: str, dataset: str, order: list[str], data: Mapping, label=lambda method: method) -> dict | None:
    """An extra table under a tuned track's leaderboard: per method the chosen trial and its
    hyperparameters, its mean validation score over the tuning seeds, how much the trials differed,
    and ⚠ with the hyperparameters whose chosen value sits at the edge of their range. A preference
    view (`synthpref @matched-kl`) shows the choice of its own final variant (VIEW_VARIANTS)."""
    from lossbench import tuning
    from lossbench.tasks.preference import VIEW_VARIANTS

    choices = (data.get("tuning") or {}).get(track) or {}
    base, _, view = dataset.partition(" @")
    want = VIEW_VARIANTS.get(view, tuning.TUNED) if view else tuning.TUNED
    mine = {m: c for (d, m, v), c in choices.items() if d == base and v == want}
    if not mine:
        return None
    rank = {m: i for i, m in enumerate(order)}
    body = []
    for m in sorted(mine, key=lambda m: (rank.get(m, len(rank)), m)):
        c = mine[m]
        point = ", ".join(f"{k}={_num(v, 4) if isinstance(v, float) else v}" for k, v in sorted(c["point"].items()))
        spread = c.get("spread") or {}
        edge = c.get("on_edge") or []
        flag = (" (no trial within the KL budget: the smallest-KL trial)" if c.get("no_admissible")
                else " (no trial had a value: defaults)" if c.get("fallback") else "")
        body.append([label(m), c["trial"] + flag,
                     point or "(defaults)", _num(c.get("score"), 4),
                     f"{_num(spread.get('range'), 3)}; {_num(spread.get('std'), 3)}",
                     f"⚠ {', '.join(edge)}" if edge else ""])
    first = next(iter(mine.values()))
    seeds = ", ".join(map(str, first.get("tuning_seeds") or []))
    metric = first.get("on") or f"{first.get('metric')} ({'max' if first.get('higher_is_better') else 'min'})"
    caption = (f"Equal-budget tuning: every method, the baseline included, ran {first.get('n_trials')} trials "
               f"(trial00 its defaults, the others drawn from its search space or listed in its grid) on tuning "
               f"seeds {seeds}, which the leaderboard never uses; the trial with the best mean {metric} over those "
               f"seeds is the `{want}` variant shown above, trained on the final seeds. ⚠ names hyperparameters "
               f"chosen at the edge of their range: the best value may lie outside it.")
    return {"title": f"Tuning (equal budget: {first.get('n_trials')} trials per method on seeds {seeds})",
            "caption": caption, "headers": TUNING_HEADERS, "rows": body}
