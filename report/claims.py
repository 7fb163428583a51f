"""Headline claims of the implemented papers, checked against the measured paired differences.

`report/claims.yaml` lists one entry per paper: its own url, the claim in words, where it was read, and one or
more tests {track (optional), datasets, metric, baseline, direction, margin (for "equal"),
min_steps (optional: {steps, why}, a claim that needs a longer run than the profile's budget)}.
Dataset names may be glob patterns (`*_sym*`); names absent from the results count as "no runs".
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import yaml

from lossbench.stats import BAD_STATUSES, better_worse, paired_diff, status_counts
from lossbench.report.tables import fmt_number

CLAIMS_PATH = Path(__file__).with_name("claims.yaml")
MIN_SEEDS_FOR_NULL = 3  # paired seeds below which a non-significant difference gets no verdict
REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_TESTABLE = (
    "reproduced", "partly", "not reproduced", "not testable at this scale")

RULE = (
    "Verdict rule, per method and test, using the paired difference (method − named baseline "
    "over shared seeds) and its CI on each listed dataset that has runs: <b>reproduced</b> = every "
    "dataset shows a difference whose CI excludes zero in the claimed direction; <b>partly</b> = "
    "at least one does, or all point the claimed direction without significance; <b>not "
    "reproduced</b> = none is significant in the claimed direction (the reason says whether any is "
    "significantly opposite); <b>not testable at this scale</b> = the entry gives a reason or "
    "there are no runs, or nothing is significant with fewer than 3 paired seeds. Listed datasets without runs are named in the reason and left out. For "
    "an “≈ baseline” claim (direction <i>equal</i>, margin m): reproduced = every CI lies "
    "within ±m; partly = no CI excludes zero but some reach beyond ±m (inconclusive); not "
    "reproduced = some CI excludes zero. In the measured column ✓/✗ mark a CI that excludes zero on the "
    "claimed/opposite side, ≠ one that excludes zero for an equality claim.")


def check_url(entry: Mapping) -> str:
    """The entry's own paper url; a claim never borrows a method's url (whose paper may be another one)."""
    url = entry.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise ValueError(f"claims.yaml entry {entry.get('paper')!r} has no url of its own (got {url!r}): "
                         "give it the paper's arXiv abs or venue page")
    return url


def load_claims(path: Path | str = CLAIMS_PATH) -> list[dict]:
    """The entries of claims.yaml; ValueError if one has no url of its own."""
    claims = yaml.safe_load(Path(path).read_text())["claims"]
    for entry in claims:
        check_url(entry)
    return claims


def _datasets(patterns: list[str], present: list[str]) -> list[str]:
    """Listed names in order; a glob pattern expands to the matching datasets present."""
    out = []
    for p in patterns:
        out += fnmatch.filter(present, p) if any(ch in p for ch in "*?[") else [p]
    return list(dict.fromkeys(out))


def _cells(summary: pd.DataFrame, method: str, test: Mapping, level: float) -> list[dict]:
    """One paired difference per (track, dataset) of the test; n = 0 where nothing was run."""
    tracks = [test["track"]] if test.get("track") else sorted(summary["track"].unique())
    in_tracks = summary[summary["track"].isin(tracks)]
    sub = in_tracks[in_tracks["metric"].eq(test["metric"]) & in_tracks["method"].isin([method, test["baseline"]])]
    names = _datasets(test["datasets"], sorted(in_tracks["dataset"].unique()))  # globs: this test's tracks only
    diff = paired_diff(sub, test["baseline"], level)
    runs_of = in_tracks[in_tracks["method"] == method]  # a failed run has no row of the test's metric
    bad = {s: status_counts(runs_of, s) for s in BAD_STATUSES}
    both_ran = (set(sub.loc[sub["method"] == test["baseline"], "dataset"])
                & set(sub.loc[sub["method"] == method, "dataset"]))
    cells = []
    for dataset in names:
        rows = diff[(diff["dataset"] == dataset) & (diff["method"] == method)]
        if dataset not in both_ran:  # one side alone ran: "no runs" (of the pair), not "no finite values"
            rows = rows.iloc[:0]
        for r in rows.to_dict("records") or [{"track": None, "diff_n": 0}]:
            cells.append({"dataset": dataset, "track": r["track"], "n": int(r["diff_n"]),
                          **{s: int(n.get((r["track"], dataset, method), 0)) for s, n in bad.items()},
                          "mean": r.get("diff_mean", np.nan), "low": r.get("diff_ci_low", np.nan),
                          "high": r.get("diff_ci_high", np.nan)})
    return cells


def _names(cells: list[dict]) -> str:
    return ", ".join(c["dataset"] for c in cells)


def verdict(cells: list[dict], direction: str, margin: float | None = None,
            fmt=lambda x: f"{x:g}") -> tuple[str, str]:
    """(verdict, reason) from per-dataset differences {dataset, track, n, mean, low, high}.

    `fmt` prints the equivalence margin in display units.
    """
    ran = [c for c in cells if c["n"] > 0]
    if not ran:
        # rows without finite values (metric undefined, runs diverged) are not "no runs"
        return NOT_TESTABLE, "no finite values" if any(c.get("track") for c in cells) else "no runs"
    cells = ran
    low = np.array([c["low"] for c in cells], dtype=float)
    high = np.array([c["high"] for c in cells], dtype=float)
    if direction == "equal":
        return _verdict_equal(cells, low, high, margin or 0.0, fmt)
    sign = 1 if direction == "higher" else -1
    better, worse = better_worse(low, high, sign)
    pointing = np.array([c["mean"] for c in cells], dtype=float) * sign > 0
    sig = [c for c, b in zip(cells, better) if b]
    opposite = [c for c, w in zip(cells, worse) if w]
    if not sig and not opposite and max(c["n"] for c in cells) < MIN_SEEDS_FOR_NULL:
        # with one degree of freedom the t-CI spans ±12.7 standard deviations: "no significant
        # difference" says nothing, so it is not read as "not reproduced"
        return NOT_TESTABLE, (f"only {max(c['n'] for c in cells)} paired seeds and no significant difference: "
                              f"too few to tell (the claimed direction {'holds' if pointing.all() else 'does not hold'} "
                              "on the means)")
    if len(sig) == len(cells):
        return REPRODUCED, ("significant in the claimed direction on every dataset run "
                            f"({_names(cells)})")
    if sig:
        return PARTLY, f"significant in the claimed direction on {_names(sig)} only"
    if pointing.all():
        return PARTLY, f"the claimed direction on {_names(cells)}, but none significantly"
    against = (f"significantly opposite on {_names(opposite)}" if opposite
               else "none significantly opposite")
    return NOT_REPRODUCED, f"no dataset significant in the claimed direction; {against}"


def _verdict_equal(cells, low, high, margin, fmt) -> tuple[str, str]:
    differs = [c for c, lo, hi in zip(cells, low, high) if lo > 0 or hi < 0]
    if differs:
        return NOT_REPRODUCED, f"significant difference on {_names(differs)}"
    wide = [c for c, lo, hi in zip(cells, low, high) if not (lo >= -margin and hi <= margin)]
    if not wide:
        return REPRODUCED, f"all CIs within ±{fmt(margin)} of the baseline"
    return PARTLY, (f"no significant difference, but the CI reaches beyond ±{fmt(margin)} on "
                    f"{_names(wide)} (inconclusive)")


def _mark(c: Mapping, direction: str) -> str:
    """✓ / ✗: CI excludes zero on the claimed / the opposite side; ≠ for an "equal" claim."""
    better, worse = better_worse(c["low"], c["high"], -1 if direction == "lower" else 1)
    if direction == "equal":
        return " ≠" if better or worse else ""
    return " ✓" if better else " ✗" if worse else ""


def measured_text(cells: list[dict], meta: Mapping, direction: str) -> list[str]:
    """`dataset: +5.4 ± 2.1 pp (n=3) ✓` per cell, in the metric's display units."""
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    several = len({c["track"] for c in cells if c["track"]}) > 1  # name the track only if needed
    out = []
    for c in cells:
        label = f"{c['track']}:{c['dataset']}" if several and c["track"] else c["dataset"]
        if c["n"] == 0:
            out.append(f"{label}: {'no finite values' if c['track'] else 'no runs'}")
            continue
        mean = f"{float(c['mean']) * meta.get('scale', 1):+.{meta.get('digits', 3)}f}"
        half = (c["high"] - c["low"]) / 2
        ci = " (no CI)" if np.isnan(half) else f" ± {fmt_number(half, meta)}"
        n = f"n={c['n']}" + "".join(f", {c[s]} {s}" for s in BAD_STATUSES if c.get(s))
        out.append(f"{label}: {mean}{ci}{unit} ({n}){_mark(c, direction)}")
    return out


def budget_steps(provenance: Mapping, track: str | None) -> int | None:
    """The longest step budget among the track's protocols in the run's provenance (None if unknown)."""
    budgets = ((provenance or {}).get("tracks") or {}).get(track, {}).get("budget") or {}
    steps = [b.get("budget", {}).get("steps") for b in budgets.values() if isinstance(b, Mapping)]
    steps = [s for s in steps if isinstance(s, (int, float))]
    return int(max(steps)) if steps else None


def _short_budget(test: Mapping, provenance: Mapping) -> str | None:
    """Why a claim needing `min_steps` cannot be judged from this run's shorter budget, else None."""
    need = test.get("min_steps")
    have = budget_steps(provenance, test.get("track")) if need else None
    if have is None or have >= need["steps"]:
        return None
    return f"the budget ({have:,} steps) is shorter than the {need['steps']:,} the claim needs: {need['why']}"


def _row(method: str, test: Mapping, entry: Mapping, summary: pd.DataFrame, level: float,
         metrics: Mapping, provenance: Mapping | None = None) -> dict:
    """One claims-table row: the measured differences of `method` for one test, and the verdict."""
    direction = test.get("direction", "higher")
    meta = metrics.get(test["metric"], {})
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    cells = _cells(summary, method, test, level)
    label, reason = verdict(cells, direction, test.get("margin"),
                            fmt=lambda x: fmt_number(x, meta) + unit)
    short = _short_budget(test, provenance or {})
    if entry.get("not_testable_reason"):
        label, reason = NOT_TESTABLE, entry["not_testable_reason"]
    elif short and label != REPRODUCED:  # a short run that already shows the effect still counts
        label, reason = NOT_TESTABLE, f"{short} (measured: {label}, {reason})"
    elif label != NOT_TESTABLE:
        reason += "".join(f"; {text}" for text in measured_text(cells, meta, direction)
                          if text.endswith(("no runs", "no finite values")))
    return {"method": method, "baseline": test["baseline"], "direction": direction,
            "metric": meta.get("display", test["metric"]),
            "measured": measured_text(cells, meta, direction), "verdict": label, "reason": reason}


def evaluate(claims: list[dict], summary: pd.DataFrame, level: float,
             metrics: Mapping, kernels: pd.DataFrame | None = None,
             provenance: Mapping | None = None) -> list[dict]:
    """Per claim: its text plus one row per (test, method) with the measured cells and verdict.
    A test with a `bench` key reads the kernels benchmark's table (report/kernels.py)."""
    from lossbench.report import kernels as kernel_claims

    out = []
    for entry in claims:
        url = check_url(entry)  # the entry's own paper; no fallback to a method's url
        tests = entry.get("tests") or ([entry["test"]] if entry.get("test") else [])
        rows = [kernel_claims.claim_row(m, t, entry, kernels) if "bench" in t else
                _row(m, t, entry, summary, level, metrics, provenance) for t in tests for m in entry["methods"]]
        if not tests:  # a claim with nothing to measure at all
            rows = [{"method": m, "baseline": "", "direction": "", "metric": "", "measured": [],
                     "verdict": NOT_TESTABLE, "reason": entry.get("not_testable_reason", "no test")}
                    for m in entry["methods"]]
        out.append({**{k: entry.get(k, "") for k in ("paper", "claim", "source")},
                    "url": url, "rows": rows})
    return out
