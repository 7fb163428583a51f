"""Headline claims of the implemented papers, checked against the measured paired differences.

`report/claims.yaml` lists one entry per paper: its own url, the claim in words, where it was read, and one or
more tests {track (optional), datasets, metric, baseline, direction, margin (for "equal"),
min_steps (optional: {steps, why}, a claim that needs a longer run than the profile's budget)}.
Dataset names may be glob patterns (`*_sym*`); names absent from the results count as "no runs".

Verdicts depend on the results' evidence level (`evidence_level`: the profile's `evidence`, in
provenance.json): at smoke a direction check (consistent / inconsistent / no signal), at study and
full reproduced / partly / not reproduced / not testable at this scale; `rule(level)` states each.
"Significant" is Holm-adjusted over every (method, dataset) paired test of one entry. Each row names
the evidence it rests on (`evidence`: profile or published set, level, model, budget, seeds).
"""
from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import yaml

from lossbench.stats import BAD_STATUSES, better_worse, holm, min_detectable_effect, paired_diff, sd_from_halfwidth, status_counts
from lossbench.report.tables import fmt_number

CLAIMS_PATH = Path(__file__).with_name("claims.yaml")
MIN_SEEDS_FOR_NULL = 3  # paired seeds below which a non-significant difference gets no verdict
REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_TESTABLE = (
    "reproduced", "partly", "not reproduced", "not testable at this scale")
# the smoke level's direction check (never "reproduced": see rule("smoke"))
CONSISTENT, INCONSISTENT, NO_SIGNAL = "consistent", "inconsistent", "no signal"
EVIDENCE_LEVELS = ("smoke", "study", "full")  # a profile's `evidence` (config/schema/config.schema.yaml)
VERDICTS = {"smoke": (CONSISTENT, INCONSISTENT, NO_SIGNAL, NOT_TESTABLE),
            "study": (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_TESTABLE),
            "full": (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_TESTABLE)}
# verdict label -> CSS class suffix (the template's `v-<suffix>`)
VERDICT_CLASS = {v: v.replace(" ", "-") for labels in VERDICTS.values() for v in labels}
LEVEL_TEXT = {"smoke": "smoke (a plumbing and direction check: short runs, few seeds)",
              "study": "study (a CPU-sized published study)",
              "full": "full (the full protocol)"}

_SIGNIFICANT = (
    "<b>Significant</b> = Holm-adjusted paired t-test p &lt; 1 − CI level, the family being every "
    "(method, dataset) paired test of one claims entry (all its tests and methods). In the measured "
    "column the ± CI is the uncorrected per-dataset interval, p<sub>Holm</sub> the adjusted p, and ✓/✗ "
    "follow the corrected test: significant on the claimed / the opposite side (≠ significant for an "
    "equality claim), so a CI may exclude zero without a mark. Kernel claims compare the medians' CIs "
    "(significant = they do not overlap; no p-values, no Holm). <b>MDE</b>: the smallest paired difference "
    "the seeds would detect with 80% power at Holm's strictest level (1 − CI level) / family size, from "
    "the paired spread measured; where the entry gives the paper's effect, a row that does not reproduce "
    "it says whether the study was powered to see an effect that large.")
_NO_RUNS_NOTE = " Listed datasets without runs are named in the reason and left out."


def rule(level: str = "study") -> str:
    """The verdict rule shown above the claims table at evidence `level` (HTML)."""
    head = f"Evidence level <b>{LEVEL_TEXT.get(level, level)}</b>. "
    if level == "smoke":
        return head + (
            "Claims read as a <b>direction check</b>, never as reproduced, per method and test, on the "
            "paired difference (method − named baseline over shared seeds) on each listed dataset that has "
            "runs: <b>consistent</b> = significant in the claimed direction on at least one dataset and "
            "significantly opposite on none; <b>inconsistent</b> = significantly opposite on at least one "
            "dataset and significant in the claimed direction on none; <b>no signal</b> = nothing significant "
            "either way (the reason says where the means point) or significant both ways; <b>not testable at this "
            "scale</b> = nothing to test (no runs or no finite values, the entry gives a reason, or the budget is "
            "shorter than the claim needs), kept apart from a measured null. A mean that merely "
            "points one way is not a signal at this scale. For an “≈ baseline” claim (margin m): consistent = "
            "no significant difference and every CI within ±m; inconsistent = a significant difference; no "
            "signal = otherwise. Kernel claims: consistent = the claimed direction holds on the medians at "
            "every point and none is significantly opposite; inconsistent = significantly opposite somewhere, "
            "or the direction fails at every point." + _NO_RUNS_NOTE + " " + _SIGNIFICANT)
    return head + (
        "Verdict rule, per method and test, using the paired difference (method − named baseline "
        "over shared seeds) on each listed dataset that has runs: <b>reproduced</b> = every dataset is "
        "significant in the claimed direction; <b>partly</b> = at least one is, or all point the claimed "
        "direction without significance; <b>not reproduced</b> = none is significant in the claimed "
        "direction (the reason says whether any is significantly opposite); <b>not testable at this "
        "scale</b> = the entry gives a reason or there are no runs, or nothing is significant with fewer "
        "than 3 paired seeds, or the budget is shorter than the claim needs and the claim is not already "
        "reproduced. For an “≈ baseline” claim (direction <i>equal</i>, margin m): reproduced = every "
        "(uncorrected) CI lies within ±m; partly = none significant but some CI reaches beyond ±m "
        "(inconclusive); not reproduced = some difference is significant." + _NO_RUNS_NOTE + " "
        + _SIGNIFICANT)


RULE = rule("study")  # the rule at the study / full levels (kept for callers of the constant)


def evidence_level(provenance: Mapping | None) -> str:
    """The evidence level of a results folder: provenance["evidence"] (written by lossbench.runner
    since the key exists); else the `evidence` of config/<profile>.yaml in this checkout (published
    sets older than the key); else smoke for the profile named smoke and study for any other."""
    prov = provenance or {}
    if prov.get("evidence") in EVIDENCE_LEVELS:
        return prov["evidence"]
    profile = prov.get("profile")
    if isinstance(profile, str) and re.fullmatch(r"[a-z0-9_]+", profile):
        from lossbench import config as lbconfig

        path = lbconfig.ROOT / "config" / f"{profile}.yaml"
        try:
            cfg = yaml.safe_load(path.read_text()) if path.is_file() else None
        except (OSError, yaml.YAMLError):
            cfg = None
        if isinstance(cfg, Mapping) and cfg.get("evidence") in EVIDENCE_LEVELS:
            return cfg["evidence"]
    return "smoke" if profile == "smoke" else "study"


_MODEL_NAMES = {"mlp": "MLP", "gpt2": "GPT-2", "llama": "Llama", "cnn1d": "1-D CNN", "resnet32": "ResNet-32"}


def _protocol_text(proto: Mapping) -> str:
    """`MLP, 400 steps` from one protocol of a provenance track's budget (the protocol minus datasets)."""
    model = proto.get("model") if isinstance(proto.get("model"), Mapping) else {}
    name = model.get("name") or model.get("arch") or ("mlp" if model.get("hidden") else None)
    if isinstance(name, str):
        name = _MODEL_NAMES.get(name, name.rsplit("/", 1)[-1])  # a hub id: its model name
        if model.get("d_model") and model.get("layers"):
            name += f" ({model['layers']} layers, d {model['d_model']})"
    budget = proto.get("budget") if isinstance(proto.get("budget"), Mapping) else proto
    train = proto.get("train") if isinstance(proto.get("train"), Mapping) else {}
    steps = [s for s in (budget.get("steps"), train.get("steps")) if isinstance(s, (int, float))]
    if isinstance(budget.get("epochs"), (int, float)):
        length = f"{int(budget['epochs']):,} epochs"
    else:
        length = f"{int(steps[0]):,} steps" if steps else None
    return ", ".join(x for x in (name, length) if x)


def _track_text(track: str, info: Mapping) -> str:
    """`classification: MLP, 400 steps · 3 seeds` from a provenance track (seeds: the track's and
    its protocols' own)."""
    budgets = info.get("budget") or {}
    protos = [b for b in budgets.values() if isinstance(b, Mapping)]
    if not protos and isinstance(budgets, Mapping) and budgets:
        protos = [{"budget": budgets}]  # a flat budget {steps, ...}
    described = list(dict.fromkeys(t for t in map(_protocol_text, protos) if t))
    seeds = set(info.get("seeds") or [])
    for p in protos:
        seeds |= set(p.get("seeds") or [])
    parts = [f"{track}: {' / '.join(described)}" if described else track]
    if seeds:
        parts.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
    return " · ".join(parts)


def _axis_info(prov_tracks: Mapping, pseudo: str) -> Mapping | None:
    """A provenance track for an optimizer-axis pseudo-track `<track>:<loss>` (report/optimizers.py):
    the track's budgets and seeds with the axis's model."""
    track = pseudo.split(":", 1)[0]
    info = prov_tracks.get(track) if ":" in pseudo else None
    axis = info.get("optimizer_axis") if isinstance(info, Mapping) else None
    if not isinstance(axis, Mapping):
        return None
    budgets = {k: ({**b, "model": axis["model"]} if isinstance(b, Mapping) and axis.get("model") else b)
               for k, b in (info.get("budget") or {}).items()}
    return {**info, "budget": budgets}


def evidence_head(provenance: Mapping | None, set_name: str | None = None) -> str:
    """`smoke profile`, `full_cpu profile (study)` or `published set <name> (study)`."""
    prov = provenance or {}
    level, profile = evidence_level(prov), prov.get("profile")
    if set_name:
        return f"published set {set_name} ({level})"
    if not profile:
        return f"{level} evidence"
    return f"{profile} profile" if profile == level else f"{profile} profile ({level})"


def evidence_text(provenance: Mapping | None, tracks, set_name: str | None = None,
                  seeds_seen: int | None = None) -> str:
    """What a verdict rests on, e.g. `smoke profile · classification: MLP, 400 steps · 3 seeds`:
    the results' source and level, then per track the model, budget and seeds from provenance.
    `seeds_seen` (the most paired seeds of the row) stands in where provenance names no seeds."""
    prov_tracks = (provenance or {}).get("tracks") or {}
    parts = [evidence_head(provenance, set_name)]
    for track in tracks:
        info = prov_tracks.get(track)
        if not isinstance(info, Mapping):
            info = _axis_info(prov_tracks, track)
        if isinstance(info, Mapping):
            text = _track_text(track, info)
        else:  # not in provenance: ran without provenance (then n says how many seeds), or not at all
            text = track if seeds_seen else f"{track}: no runs in this {'set' if set_name else 'profile'}"
        if "seed" not in text and seeds_seen:
            text += f" · {seeds_seen} paired seed{'s' if seeds_seen != 1 else ''}"
        parts.append(text)
    if len(parts) == 1 and seeds_seen:
        parts.append(f"{seeds_seen} paired seed{'s' if seeds_seen != 1 else ''}")
    return " · ".join(parts[:1]) + ("" if len(parts) == 1 else " · " + "; ".join(parts[1:]))


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
    """One paired difference per (track, dataset) of the test; n = 0 where nothing was run.
    `p` is the paired t-test's p-value (NaN below 2 paired seeds); evaluate adds `p_holm` and `sig`."""
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
                          "high": r.get("diff_ci_high", np.nan), "p": r.get("diff_p", np.nan)})
    return cells


def adjust(cells: list[dict], level: float) -> list[dict]:
    """Holm over one family of cells (evaluate: every cell with runs of one claims entry): sets each
    cell's `p_holm` (NaN without a test: fewer than 2 paired seeds) and `sig` = p_holm < 1 − level."""
    ran = [c for c in cells if c.get("n", 0) > 0]
    adjusted = holm([c.get("p", np.nan) for c in ran])
    family = max(1, int(np.sum(~np.isnan(adjusted))))
    for c, p in zip(ran, adjusted):
        c["p_holm"] = float(p)
        c["sig"] = bool(p < 1 - level)  # NaN compares False: no test, not significant
        c["mde"] = cell_mde(c, level, family)
    return cells


POWER = 0.8  # the power at which a claims row's minimum detectable effect (MDE) is stated


def cell_mde(cell: Mapping, level: float, family: int = 1) -> float:
    """The smallest paired difference (raw metric units) this cell's seeds detect with POWER, at
    Holm's strictest threshold (1 − level) / family (so whatever its rank in the family), from the
    paired standard deviation measured here (recovered from the uncorrected CI). NaN below 2 seeds."""
    n = int(cell.get("n", 0))
    half = (float(cell["high"]) - float(cell["low"])) / 2 if n >= 2 else float("nan")
    return min_detectable_effect(float(sd_from_halfwidth(half, n, level)), n, (1 - level) / family, POWER)


def _names(cells: list[dict]) -> str:
    return ", ".join(c["dataset"] for c in cells)


def _sides(cells: list[dict], sign: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: significant on the claimed / the opposite side of `sign`. A cell with `sig` (set by
    `adjust`: Holm) is read with its mean's sign; a cell without it by its own CI (a family of one)."""
    better, worse = [], []
    for c in cells:
        if "sig" in c:
            side = float(c["mean"]) * sign
            better.append(bool(c["sig"]) and side > 0)
            worse.append(bool(c["sig"]) and side < 0)
        else:
            b, w = better_worse(c["low"], c["high"], sign)
            better.append(bool(b))
            worse.append(bool(w))
    return np.array(better, dtype=bool), np.array(worse, dtype=bool)


def verdict(cells: list[dict], direction: str, margin: float | None = None,
            fmt=lambda x: f"{x:g}", evidence: str = "study") -> tuple[str, str]:
    """(verdict, reason) from per-dataset differences {dataset, track, n, mean, low, high[, sig]}.

    `fmt` prints the equivalence margin in display units. `evidence` is the evidence level: at
    smoke the direction check (consistent / inconsistent / no signal, rule("smoke")), else the four
    verdicts of rule("study"). Significance: a cell's `sig` (Holm, see `adjust`), else its CI.
    """
    ran = [c for c in cells if c["n"] > 0]
    if not ran:
        # rows without finite values (metric undefined, runs diverged) are not "no runs"
        return (NOT_TESTABLE,
                "no finite values" if any(c.get("track") for c in cells) else "no runs")
    cells = ran
    if evidence == "smoke":
        return _direction_check(cells, direction, margin or 0.0, fmt)
    low = np.array([c["low"] for c in cells], dtype=float)
    high = np.array([c["high"] for c in cells], dtype=float)
    if direction == "equal":
        return _verdict_equal(cells, low, high, margin or 0.0, fmt)
    sign = 1 if direction == "higher" else -1
    better, worse = _sides(cells, sign)
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
    better, worse = _sides(cells, 1)
    differs = [c for c, b, w in zip(cells, better, worse) if b or w]
    if differs:
        return NOT_REPRODUCED, f"significant difference on {_names(differs)}"
    wide = [c for c, lo, hi in zip(cells, low, high) if not (lo >= -margin and hi <= margin)]
    if not wide:
        return REPRODUCED, f"all CIs within ±{fmt(margin)} of the baseline"
    return PARTLY, (f"no significant difference, but the CI reaches beyond ±{fmt(margin)} on "
                    f"{_names(wide)} (inconclusive)")


def _direction_check(cells: list[dict], direction: str, margin: float, fmt) -> tuple[str, str]:
    """The smoke level's verdict (rule("smoke")) on cells that ran: consistent / inconsistent / no signal.
    Only a significant (Holm) difference is a signal: with few seeds a mean's sign alone is noise."""
    means = np.array([c["mean"] for c in cells], dtype=float)
    if direction == "equal":
        better, worse = _sides(cells, 1)
        differs = [c for c, b, w in zip(cells, better, worse) if b or w]
        if differs:
            return INCONSISTENT, f"significant difference on {_names(differs)}"
        wide = [c for c in cells if not (c["low"] >= -margin and c["high"] <= margin)]
        if not wide:
            return CONSISTENT, f"every CI within ±{fmt(margin)} of the baseline, none significantly different"
        return NO_SIGNAL, f"no significant difference, but the CI reaches beyond ±{fmt(margin)} on {_names(wide)}"
    sign = 1 if direction == "higher" else -1
    better, worse = _sides(cells, sign)
    sig = [c for c, b in zip(cells, better) if b]
    opposite = [c for c, w in zip(cells, worse) if w]
    if sig and opposite:
        return NO_SIGNAL, f"significant both ways: the claimed direction on {_names(sig)}, opposite on {_names(opposite)}"
    if sig:
        return CONSISTENT, f"significant in the claimed direction on {_names(sig)}, opposite on none"
    if opposite:
        return INCONSISTENT, f"significantly opposite on {_names(opposite)}, in the claimed direction on none"
    toward = [c for c, m in zip(cells, means) if m * sign > 0]
    return NO_SIGNAL, ("nothing significant either way; the means point the claimed direction on "
                       f"{_names(toward) if toward else 'no dataset'} of {_names(cells)}")


def _mark(c: Mapping, direction: str) -> str:
    """✓ / ✗: significant (Holm where `adjust` ran) on the claimed / the opposite side; ≠ for an "equal" claim."""
    better, worse = _sides([c], -1 if direction == "lower" else 1)
    if direction == "equal":
        return " ≠" if better[0] or worse[0] else ""
    return " ✓" if better[0] else " ✗" if worse[0] else ""


def _p_text(p: float) -> str:
    return "p_Holm < 0.001" if p < 0.001 else f"p_Holm {p:.2g}"


def measured_text(cells: list[dict], meta: Mapping, direction: str) -> list[str]:
    """`dataset: +5.4 ± 2.1 pp (n=3, p_Holm 0.012) ✓` per cell, in the metric's display units: the
    uncorrected CI, the Holm-adjusted p where `adjust` gave one, the mark of the corrected test."""
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
        p = c.get("p_holm", np.nan)
        n += "" if p is None or np.isnan(p) else f", {_p_text(p)}"
        mde = c.get("mde", np.nan)
        n += "" if mde is None or np.isnan(mde) else f", MDE {fmt_number(mde, meta)}{unit}"
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
         metrics: Mapping, provenance: Mapping | None = None, cells: list[dict] | None = None,
         set_name: str | None = None, grade: str | None = None) -> dict:
    """One claims-table row: the measured differences of `method` for one test, the verdict at the
    provenance's evidence level, and the evidence it rests on. `cells`: already computed and
    Holm-adjusted over the entry's family (evaluate); else computed here (a family of one test).
    `grade`: the evidence level (default evidence_level(provenance))."""
    direction = test.get("direction", "higher")
    meta = metrics.get(test["metric"], {})
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    grade = grade or evidence_level(provenance)
    smoke = grade == "smoke"
    if cells is None:
        cells = adjust(_cells(summary, method, test, level), level)
    label, reason = verdict(cells, direction, test.get("margin"),
                            fmt=lambda x: fmt_number(x, meta) + unit, evidence=grade)
    short = _short_budget(test, provenance or {})
    if entry.get("not_testable_reason"):
        label, reason = NOT_TESTABLE, entry["not_testable_reason"]
    elif label == NOT_TESTABLE and reason == "no finite values" and meta.get("undefined_when"):
        # a time-to-event metric is undefined (NaN) for a run the event never reached: censored at the budget
        reason = f"{meta['undefined_when']}: the event lies beyond this scale's budget"
    elif short and (smoke or label != REPRODUCED):  # a short run that already shows the effect still counts
        label, reason = NOT_TESTABLE, f"{short} (measured: {label}, {reason})"
    elif label != NOT_TESTABLE and reason not in ("no runs", "no finite values"):
        reason += "".join(f"; {text}" for text in measured_text(cells, meta, direction)
                          if text.endswith(("no runs", "no finite values")))
    if label in (NOT_REPRODUCED, PARTLY, INCONSISTENT, NO_SIGNAL) and test.get("paper_effect") is not None:
        reason += power_note(cells, float(test["paper_effect"]), meta, unit)
    tracks = list(dict.fromkeys(c["track"] for c in cells if c["n"] > 0 and c["track"]))
    tracks = tracks or ([test["track"]] if test.get("track") else [])
    seen = max((c["n"] for c in cells), default=0)
    return {"method": method, "baseline": test["baseline"], "direction": direction,
            "metric": meta.get("display", test["metric"]),
            "measured": measured_text(cells, meta, direction), "verdict": label, "reason": reason,
            "verdict_class": VERDICT_CLASS[label], "evidence_level": grade,
            "evidence": evidence_text(provenance, tracks, set_name, seen or None)}


def power_note(cells: list[dict], effect: float, meta: Mapping, unit: str) -> str:
    """Whether the seeds could have seen the paper's effect (`paper_effect`, raw units, a magnitude):
    `; powered for the paper's effect (4.2 pp ≥ MDE on every dataset run)` or which datasets were not."""
    ran = [c for c in cells if c.get("n", 0) > 0]
    if not ran:
        return ""
    size = f"{fmt_number(abs(effect), meta)}{unit}"
    short = [c for c in ran if not (c.get("mde", np.nan) <= abs(effect))]  # NaN MDE: not powered
    if not short:
        return f"; powered for the paper's effect ({size} ≥ MDE at {POWER:.0%} power on every dataset run)"
    worst = ", ".join(f"{c['dataset']} MDE {fmt_number(c['mde'], meta) if np.isfinite(c.get('mde', np.nan)) else '—'}{unit}"
                      for c in short)
    return f"; underpowered for the paper's effect ({size} < {worst})"


def _kernel_evidence(provenance: Mapping | None, kernels: pd.DataFrame | None, test: Mapping,
                     set_name: str | None) -> str:
    """`kernels_cpu profile (study) · kernels: linear_ce on cpu, 4 grid points`."""
    head = evidence_head(provenance, set_name)
    track = test.get("track", "kernels")
    if kernels is None or kernels.empty:
        return f"{head} · no {track} benchmark"
    rows = kernels[(kernels["bench"] == test["bench"]) & kernels["track"].eq(track) & kernels["status"].eq("ok")]
    devices = ", ".join(sorted({str(d) for d in rows.get("device", pd.Series(dtype=str)).dropna()})) or "?"
    points = rows[[k for k in ("slice", "dtype", "n", "v", "d", "reduction", "ignore_frac") if k in rows]]
    return f"{head} · {track}: {test['bench']} on {devices}, a {len(points.drop_duplicates())}-point grid"


def evaluate(claims: list[dict], summary: pd.DataFrame, level: float,
             metrics: Mapping, kernels: pd.DataFrame | None = None,
             provenance: Mapping | None = None, set_name: str | None = None) -> list[dict]:
    """Per claim: its text plus one row per (test, method) with the measured cells, the verdict at
    the evidence level of `provenance` (evidence_level) and the evidence it rests on (`evidence`,
    naming the published set `set_name` when given). Significance is Holm-adjusted over every
    (method, dataset) paired test of one entry. A test with a `bench` key reads the kernels
    benchmark's table (report/kernels.py)."""
    from lossbench.report import kernels as kernel_claims

    grade = evidence_level(provenance)
    out = []
    for entry in claims:
        url = check_url(entry)  # the entry's own paper; no fallback to a method's url
        tests = entry.get("tests") or ([entry["test"]] if entry.get("test") else [])
        pairs = [(t, m) for t in tests for m in entry["methods"]]
        cells = {i: _cells(summary, m, t, level) for i, (t, m) in enumerate(pairs) if "bench" not in t}
        adjust([c for cs in cells.values() for c in cs], level)  # one family: the whole entry
        rows = []
        for i, (t, m) in enumerate(pairs):
            if "bench" in t:
                row = kernel_claims.claim_row(m, t, entry, kernels, evidence=grade)
                row = row | {"verdict_class": VERDICT_CLASS[row["verdict"]], "evidence_level": grade,
                             "evidence": _kernel_evidence(provenance, kernels, t, set_name)}
            else:
                row = _row(m, t, entry, summary, level, metrics, provenance, cells[i], set_name, grade)
            rows.append(row)
        if not tests:  # a claim with nothing to measure at all
            label = NOT_TESTABLE
            rows = [{"method": m, "baseline": "", "direction": "", "metric": "", "measured": [],
                     "verdict": label, "reason": entry.get("not_testable_reason", "no test"),
                     "verdict_class": VERDICT_CLASS[label], "evidence_level": grade,
                     "evidence": evidence_head(provenance, set_name)}
                    for m in entry["methods"]]
        out.append({**{k: entry.get(k, "") for k in ("paper", "claim", "source")},
                    "url": url, "rows": rows})
    return out
