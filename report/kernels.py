"""The kernels benchmark's report section and claims (lossbench/kernels/registry.py).

Reads results/<profile>/kernels.csv (lossbench.runner.aggregate_kernels: the benchmark's tidy
rows, one per grid point × implementation × metric) and kernels.json (baselines and each slice's
provenance). Tables: one row per (point, implementation) with time, memory, traffic and error;
each implementation's distance from the physical bound; what did not run and why. Figures: time
and peak memory against the vocabulary size V with the bound drawn in. Claims: ratios against
the config's baseline implementation at a named grid point, with the medians' CIs.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from lossbench.report import plots
from lossbench.report.tables import md_row, md_text

POINT = ["bench", "dtype", "n", "v", "d", "reduction", "ignore_frac"]
plt = plots.plt


def load(results_dir: Path | str) -> tuple[pd.DataFrame | None, dict]:
    """(kernels table, its provenance), or (None, {}) when the profile ran no benchmark."""
    d = Path(results_dir)
    if not (d / "kernels.csv").exists():
        return None, {}
    df = pd.read_csv(d / "kernels.csv", dtype={"reduction": str, "note": str, "slice": str})
    meta = json.loads((d / "kernels.json").read_text()) if (d / "kernels.json").exists() else {}
    return df, meta


def wide(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (track, slice, point, impl) that ran, one column per metric."""
    ok = df[(df["status"] == "ok") & (df["bench"] != "device")]
    keys = ["track", "slice", *POINT, "impl"]
    # softmax points have no d / reduction / ignore_frac: a placeholder keeps them as keys
    out = ok.fillna({k: "" for k in keys}).pivot_table(index=keys, columns="metric", values="value", sort=False)
    return out.reset_index().replace({k: {"": np.nan} for k in ("d", "reduction", "ignore_frac")})


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:,.0f}" if abs(x) >= 10**digits else f"{x:.{digits}g}"  # 28,000 rather than 2.8e+04


def _pct(x) -> str:
    return "—" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def _ratio_to_baseline(rows: pd.DataFrame, baseline: str, metric: str) -> pd.Series:
    """metric / the baseline's metric at the same point (NaN where the baseline did not run)."""
    keys = ["track", "slice", *POINT]
    base = rows.loc[rows["impl"] == baseline, keys + [metric]].rename(columns={metric: "_base"})
    merged = rows[keys + [metric]].merge(base, on=keys, how="left")
    return pd.Series((merged[metric] / merged["_base"]).to_numpy(), index=rows.index)


def _point_label(r: Mapping) -> str:
    if r["bench"] == "softmax":
        return f"{int(r['n'])} × {int(r['v'])} {r['dtype']}"
    extra = "" if r["reduction"] == "mean" else f", {r['reduction']} + weights"
    extra += f", {float(r['ignore_frac']):.0%} ignored" if float(r["ignore_frac"] or 0) else ""
    return f"N {int(r['n'])}, V {int(r['v'])}, D {int(r['d'])}, {r['dtype']}{extra}"


LINEAR_CE_HEADERS = ["point", "implementation", "fw+bw ms (CI)", "× baseline", "fw ms", "peak MB",
                     "excess MB", "× baseline mem", "TFLOP/s (of GEMM)", "bound ms", "bound / time",
                     "loss rel. err", "cos dE", "cos dC"]
SOFTMAX_HEADERS = ["point", "implementation", "passes", "ms (CI)", "× baseline", "GB/s (model)",
                   "of copy BW", "bound ms", "bound / time", "max rel. err", "max |Σy − 1|"]


def _ci(r, prefix) -> str:
    return (f"{_fmt(r[f't_{prefix}_ms'])} ({_fmt(r.get(f't_{prefix}_ci_low_ms'))}–"
            f"{_fmt(r.get(f't_{prefix}_ci_high_ms'))})")


def linear_ce_rows(w: pd.DataFrame, baseline: str) -> list[dict]:
    rows = w[w["bench"] == "linear_ce"].copy()
    if rows.empty:
        return []
    rows["_t"] = _ratio_to_baseline(rows, baseline, "t_fwbw_ms")
    rows["_m"] = _ratio_to_baseline(rows, baseline, "op_mem_mb")
    out = []
    for _, r in rows.iterrows():
        tfl = f"{_fmt(r.get('tflops'))} ({_pct(r.get('flops_frac', math.nan))})"
        out.append({"impl": r["impl"], "baseline": r["impl"] == baseline, "cells": [
            _point_label(r), r["impl"], _ci(r, "fwbw"), _fmt(r["_t"]), _fmt(r.get("t_fw_ms")),
            _fmt(r.get("op_mem_mb")), _fmt(r.get("excess_mem_mb")), _fmt(r["_m"]), tfl,
            _fmt(r.get("t_bound_ms")), _pct(r.get("roofline_eff", math.nan)), _fmt(r.get("err_loss_rel"), 2),
            f"{r.get('cos_dE', math.nan):.7f}", f"{r.get('cos_dC', math.nan):.7f}"]})
    return out


def softmax_rows(w: pd.DataFrame, baseline: str) -> list[dict]:
    from lossbench.kernels import registry

    rows = w[w["bench"] == "softmax"].copy()
    if rows.empty:
        return []
    rows["_t"] = _ratio_to_baseline(rows, baseline, "t_fw_ms")
    out = []
    for _, r in rows.iterrows():
        impl = registry.IMPLS.get(r["impl"])
        passes = "—" if impl is None or impl.passes is None else f"{impl.passes[0]} r + {impl.passes[1]} w"
        out.append({"impl": r["impl"], "baseline": r["impl"] == baseline, "cells": [
            _point_label(r), r["impl"], passes, _ci(r, "fw"), _fmt(r["_t"]), _fmt(r.get("gbps")),
            _pct(r.get("bw_frac", math.nan)), _fmt(r.get("t_bound_ms")), _pct(r.get("roofline_eff", math.nan)),
            _fmt(r.get("err_rel"), 2), _fmt(r.get("err_rowsum"), 2)]})
    return out


def distance_rows(w: pd.DataFrame) -> list[list[str]]:
    """Per (bench, dtype, impl): how far the measured times sit from the physical floor."""
    out = []
    for (bench, dtype, impl), part in w.groupby(["bench", "dtype", "impl"], sort=False):
        eff = part["roofline_eff"].dropna()
        bw = part["bw_frac"].dropna()
        fl = part["flops_frac"].dropna() if "flops_frac" in part else pd.Series(dtype=float)
        out.append([bench, dtype, impl, str(len(part)),
                    _fmt(float((1 / eff).median())) + "×" if len(eff) else "—",
                    _pct(float(eff.max())) if len(eff) else "—", _pct(float(eff.min())) if len(eff) else "—",
                    _pct(float(bw.median())) if len(bw) else "—", _pct(float(fl.median())) if len(fl) else "—"])
    return out


DISTANCE_HEADERS = ["bench", "dtype", "implementation", "points", "median time / bound", "best bound / time",
                    "worst bound / time", "median of copy BW", "median of GEMM peak"]


def not_run_rows(df: pd.DataFrame) -> list[list[str]]:
    bad = df[(df["status"] != "ok") & (df["bench"] != "device")]
    grouped = bad.groupby(["impl", "status", "note"], dropna=False).size().reset_index(name="points")
    return [[r.impl, r.status, str(r.note), str(r.points)] for r in grouped.itertuples()]


def ceilings_rows(df: pd.DataFrame, meta: Mapping) -> list[list[str]]:
    dev = df[df["bench"] == "device"]
    out = []
    for (track, sl), part in dev.groupby(["track", "slice"], sort=False):
        info = (meta.get("slices") or {}).get(track, {}).get(sl, {})
        vals = {(r.metric, r.dtype if isinstance(r.dtype, str) else ""): r.value for r in part.itertuples()}
        gemm = ", ".join(f"{dt}: {_fmt(v)}" for (m, dt), v in vals.items() if m == "gemm_tflops")
        sheet = (f"{_fmt(vals.get(('datasheet_gbps', '')))} GB/s, {_fmt(vals.get(('datasheet_tflops', 'bfloat16')))} "
                 f"TFLOP/s" if ("datasheet_gbps", "") in vals else "—")
        out.append([sl, str(info.get("device_name") or part["device"].iloc[0]), str(info.get("torch_threads", "?")),
                    _fmt(vals.get(("copy_gbps", ""))), gemm, sheet, _fmt(info.get("wall_s"))])
    return out


CEILING_HEADERS = ["slice", "device", "torch threads", "copy GB/s", "GEMM TFLOP/s", "datasheet", "job s"]


# ---------------------------------------------------------------------------------------- figures

def _groups(w: pd.DataFrame):
    """(bench, dtype, reduction, ignore_frac, N, rows) with ≥ 2 vocabulary sizes at that N: the
    N nearest 8,192 (the CCE benchmark's) where a group has several."""
    keys = ["bench", "dtype", "reduction", "ignore_frac"]
    for key, part in w.groupby(keys, sort=False, dropna=False):
        ns = sorted(part["n"].unique())
        n = min(ns, key=lambda x: (abs(math.log(x / 8192)), x))
        at = part[part["n"] == n]
        if at["v"].nunique() >= 2:
            yield (*key, n, at)


def _impl_lines(ax, at: pd.DataFrame, metric: str, colors, baseline, low=None, high=None):
    for impl, part in plots._by_method(at.rename(columns={"impl": "method"}), colors):
        part = part.sort_values("v")
        style = plots.line_style(impl, baseline, colors)
        ax.plot(part["v"], part[metric], marker="o", ms=3, **style)
        if low and high and low in part and high in part:
            ax.fill_between(part["v"], part[low], part[high], color=style["color"], alpha=0.2, lw=0)


def figures(w: pd.DataFrame, baselines: Mapping, out_dir: Path) -> list[tuple[str, str]]:
    """[(caption, path relative to out_dir)]: time and memory against V per group, bounds dashed."""
    drawn = []
    impls = list(dict.fromkeys(w["impl"]))
    for bench, dtype, red, ign, n, at in _groups(w):
        baseline = baselines.get(bench)
        colors = plots.method_colors([i for i in impls if i in set(at["impl"])], baseline)
        t = "t_fwbw_ms" if bench == "linear_ce" else "t_fw_ms"
        bound = at.groupby("v")[["t_bound_ms", "out_mem_mb"]].first().sort_index()
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        _impl_lines(axes[0], at, t, colors, baseline, f"{t[:-3]}_ci_low_ms", f"{t[:-3]}_ci_high_ms")
        axes[0].plot(bound.index, bound["t_bound_ms"], "k--", lw=1, label="bound")
        axes[0].set(xscale="log", yscale="log", xlabel="vocabulary size V",
                    ylabel="fw+bw ms" if bench == "linear_ce" else "ms", title="time: median and CI band")
        _impl_lines(axes[1], at, "op_mem_mb", colors, baseline)
        axes[1].plot(bound.index, bound["out_mem_mb"], "k--", lw=1, label="outputs (floor)")
        axes[1].set(xscale="log", yscale="log", xlabel="vocabulary size V", ylabel="peak MB above inputs",
                    title="peak memory")
        for ax in axes:
            ax.legend(loc="upper left", frameon=False)
        d = "" if bench == "softmax" else ", D " + "/".join(str(int(x)) for x in sorted(at["d"].unique()))
        extra = "" if bench == "softmax" or red == "mean" else f", reduction {red} + per-token weights"
        extra += f", {float(ign):.0%} ignored" if bench != "softmax" and float(ign or 0) else ""
        fig.suptitle(f"{bench}: N {int(n)}{d}, {dtype}{extra}", fontsize=9)
        slug = "_".join(str(x) for x in (bench, dtype, red, ign, int(n)) if isinstance(x, str) or not np.isnan(x))
        slug = slug.replace(".", "p")
        path = plots.save_figure(fig, out_dir / "figures" / f"kernels__{slug}.png")
        floor = "dE, dC and the loss" if bench == "linear_ce" else "y"
        drawn.append((f"{bench}, {dtype}{extra}, N = {int(n)}: time and peak memory against V. Dashed: the "
                      f"bound max(traffic / copy bandwidth, FLOPs / GEMM throughput) and the outputs ({floor}), "
                      "the memory no implementation can avoid",
                      path.relative_to(out_dir).as_posix()))
    return drawn


def section(df: pd.DataFrame, meta: Mapping, out_dir: Path) -> dict:
    """The template's context of the kernels section."""
    w = wide(df)
    baselines = {}
    for per_track in (meta.get("baselines") or {}).values():
        baselines.update(per_track)
    return {
        "baselines": baselines,
        "ceilings": {"headers": CEILING_HEADERS, "rows": ceilings_rows(df, meta)},
        "linear_ce": {"headers": LINEAR_CE_HEADERS, "rows": linear_ce_rows(w, baselines.get("linear_ce"))},
        "softmax": {"headers": SOFTMAX_HEADERS, "rows": softmax_rows(w, baselines.get("softmax"))},
        "distance": {"headers": DISTANCE_HEADERS, "rows": distance_rows(w)},
        "not_run": {"headers": ["implementation", "status", "why", "points"], "rows": not_run_rows(df)},
        "figures": figures(w, baselines, out_dir),
    }


def markdown(ctx: Mapping) -> str:
    """tables/kernels.md: the same tables as the HTML."""
    def table(t, cells=lambda r: r["cells"]):
        lines = [md_row(t["headers"]), "|" + "---|" * len(t["headers"])]
        return "\n".join(lines + [md_row(cells(r)) for r in t["rows"]])

    parts = ["# Kernels benchmark", "## Ceilings", table(ctx["ceilings"], list)]
    for name in ("linear_ce", "softmax"):
        if ctx[name]["rows"]:
            parts += [f"## {name} (baseline {md_text(ctx['baselines'].get(name))})", table(ctx[name])]
    parts += ["## Distance from the bound", table(ctx["distance"], list)]
    if ctx["not_run"]["rows"]:
        parts += ["## Not run", table(ctx["not_run"], list)]
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------- claims

def _matches(w: pd.DataFrame, where: Mapping) -> pd.DataFrame:
    mask = pd.Series(True, index=w.index)
    for k, v in where.items():
        col = w[k]
        mask &= np.isclose(col.astype(float), float(v)) if k in ("n", "v", "d", "ignore_frac") else col.eq(v)
    return w[mask]


def claim_row(method: str, test: Mapping, entry: Mapping, df: pd.DataFrame | None,
              evidence: str = "study") -> dict:
    """One claims-table row of a kernels test: {bench, where, metric, baseline, direction, factor}.

    Per matching grid point: ratio = baseline / method for "lower" (method / baseline for
    "higher"). Times carry distribution-free CIs of their medians: significant = the two CIs do
    not overlap. Verdict at evidence study / full: reproduced = every point significant (memory:
    exact) in the claimed direction with ratio ≥ factor; partly = the direction holds somewhere;
    not reproduced = nowhere. At evidence smoke, a direction check (claims.rule("smoke")):
    consistent = the direction holds on the medians at every point and none is significantly
    opposite; inconsistent = significantly opposite somewhere, or the direction fails at every
    point; no signal = otherwise; not testable at this scale (every level) = nothing to compare.
    """
    from lossbench.report.claims import NOT_TESTABLE

    direction, factor, metric = test.get("direction", "lower"), float(test.get("factor", 1.0)), test["metric"]
    row = {"method": method, "baseline": test["baseline"], "direction": direction,
           "metric": f"{test['bench']} {metric}" + (f" (×{factor:g})" if factor != 1 else ""), "measured": []}
    if df is None:
        return row | {"verdict": NOT_TESTABLE, "reason": "no kernels benchmark in this profile"}
    points = df[(df["bench"] == test["bench"]) & df["track"].eq(test.get("track", "kernels"))]
    why_not = points[(points["impl"] == method) & (points["status"] != "ok")]["note"].dropna().unique()
    w = _matches(wide(points), test.get("where", {})) if not points.empty else points
    have = {i: w[w["impl"] == i] for i in (method, test["baseline"])}
    if w.empty or have[method].empty or have[test["baseline"]].empty:
        missing = method if have[method].empty else test["baseline"]
        reason = (f"{missing} did not run: {'; '.join(why_not)}" if len(why_not) and missing == method
                  else f"no {test['bench']} point with {_where_text(test.get('where', {}))} for {missing} in this grid")
        return row | {"verdict": NOT_TESTABLE, "reason": entry.get("not_testable_reason") or reason}
    keys = ["slice", *POINT]
    m = have[method].merge(have[test["baseline"]], on=keys, suffixes=("", "_base"))
    sign = 1 if direction == "lower" else -1
    lo, hi = f"{metric[:-3]}_ci_low_ms", f"{metric[:-3]}_ci_high_ms"
    seen = {"sig_all": True, "sig_any": False, "opposite_any": False, "toward_any": False, "toward_all": True}
    for _, r in m.iterrows():
        ratio = (r[f"{metric}_base"] / r[metric]) ** sign
        if lo in m:  # a time: CIs
            better = r[hi] < r[f"{lo}_base"] if sign == 1 else r[lo] > r[f"{hi}_base"]
            worse = r[lo] > r[f"{hi}_base"] if sign == 1 else r[hi] < r[f"{lo}_base"]
        else:  # a deterministic measurement (memory): the ratio itself
            better, worse = ratio > 1, ratio < 1
        ok = better and ratio >= factor
        mark = " ✓" if ok else " ✗" if worse else ""
        row["measured"].append(f"{_point_label(r)}: {_fmt(r[metric], 4)} vs {_fmt(r[f'{metric}_base'], 4)} "
                               f"(baseline/method {_fmt(ratio)}×){mark}")
        seen["sig_all"] &= bool(ok)
        seen["sig_any"] |= bool(ok)
        seen["opposite_any"] |= bool(worse)
        seen["toward_any"] |= bool(ratio > 1)
        seen["toward_all"] &= bool(ratio > 1)
    if entry.get("not_testable_reason"):
        return row | {"verdict": NOT_TESTABLE, "reason": entry["not_testable_reason"]}
    return row | dict(zip(("verdict", "reason"), (_direction_check(seen, factor) if evidence == "smoke"
                                                  else _kernel_verdict(seen, factor))))


def _kernel_verdict(seen: Mapping, factor: float) -> tuple[str, str]:
    """claim_row's verdict at evidence study / full."""
    from lossbench.report.claims import NOT_REPRODUCED, PARTLY, REPRODUCED

    if seen["sig_all"]:
        return REPRODUCED, f"at every point run, by ≥ {factor:g}×"
    if seen["sig_any"] or seen["toward_any"]:
        short = "the CIs overlap" + (f" or the ratio is below {factor:g}×" if factor != 1 else "")
        return PARTLY, f"the claimed direction holds on the medians, but {short} at some point"
    return NOT_REPRODUCED, ("the claimed direction does not hold"
                            + ("; significantly opposite" if seen["opposite_any"] else ""))


def _direction_check(seen: Mapping, factor: float) -> tuple[str, str]:
    """claim_row's verdict at evidence smoke: consistent / inconsistent / no signal."""
    from lossbench.report.claims import CONSISTENT, INCONSISTENT, NO_SIGNAL

    if seen["opposite_any"]:
        return INCONSISTENT, "significantly opposite at some point"
    if not seen["toward_any"]:
        return INCONSISTENT, "the claimed direction fails on the medians at every point, none significantly"
    if seen["toward_all"]:
        how = (f"significantly and by ≥ {factor:g}× at every point" if seen["sig_all"] else
               "not significantly (or below the claimed factor) at some point")
        return CONSISTENT, f"the claimed direction holds on the medians at every point; {how}"
    return NO_SIGNAL, "mixed: the claimed direction holds on the medians at some points only, none significantly opposite"


def _where_text(where: Mapping) -> str:
    return ", ".join(f"{k} {v}" for k, v in where.items()) or "any shape"
