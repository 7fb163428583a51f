"""The published leaderboard site: results/published/index.html, built from the committed sets only.

    python -m lossbench.report.site [results/published]

One page: every published set (track, evidence level, hardware, commit, date, command, a link to its
report), per track the at-a-glance leaderboard of each set holding it, and the claims scoreboard — one
row per paper with its verdict at each evidence level, each verdict linking to the claims row of the
set it rests on. Everything is computed by the report builder (build.analyse) from the sets' tidy files;
nothing is typed by hand.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Mapping

import jinja2

from lossbench import io
from lossbench.report import build, glance
from lossbench.report.tables import legend

PUBLISHED = build._repo_root() / "results" / "published"
RECORD_FILE = "verdicts_of_record.json"  # beside index.html
LEVELS = ("study", "full")  # evidence levels a published set may carry, smallest scale first


def discover(published: Path) -> list[Path]:
    """The set folders under `published` (a folder with summary.csv(.gz) and provenance.json), by name."""
    return sorted(p for p in published.iterdir() if p.is_dir() and (p / "provenance.json").is_file()
                  and io.tidy_path(p, "summary.csv", missing_ok=True))


def set_row(name: str, a: build.Analysis) -> dict:
    """One row of the sets table."""
    prov = a.data["provenance"]
    tracks = list(a.tracks) + (["kernels (benchmark)"] if a.kernel_rows is not None else [])
    seeds = sorted({int(s) for s in a.data["summary"]["seed"].dropna().unique()}) if len(a.data["summary"]) else []
    return {"name": name, "link": f"{name}/report/index.html", "tracks": tracks, "evidence": a.evidence,
            "methods": int(a.data["summary"]["method"].nunique()), "seeds": seeds,
            "hardware": prov.get("hardware") or "?", "commit": (prov.get("git_commit") or "?")[:10],
            "created": (prov.get("created") or "?")[:10], "command": prov.get("command") or "?",
            "profile": prov.get("profile") or "?"}


def _has_runs(row: Mapping) -> bool:
    """Whether a claims row measured anything in this set (not only "no runs" cells)."""
    measured = row.get("measured") or []
    return any(not str(m).endswith("no runs") for m in measured)


def _label(row: Mapping, rows: list[Mapping]) -> str:
    """The method, with its test where the claim tests it more than once (`cooldown (Many (%) vs temp_sample)`)."""
    if sum(r["method"] == row["method"] for r in rows) < 2:
        return row["method"]
    return f"{row['method']} ({row.get('metric') or 'test'} vs {row.get('baseline') or '?'})"


def scoreboard(analyses: Mapping[str, build.Analysis]) -> tuple[list[dict], list[str]]:
    """(one row per claims.yaml entry, the evidence levels shown as columns). A row's cell for a level
    lists, per set of that level with runs for the claim, each method's verdict and a link to the row."""
    levels = [lv for lv in LEVELS if any(a.evidence == lv for a in analyses.values())]
    levels += sorted({a.evidence for a in analyses.values()} - set(levels))
    rows: dict[str, dict] = {}
    for name, a in analyses.items():
        for c in a.claims:
            row = rows.setdefault(c["slug"], {"paper": c["paper"], "url": c["url"], "claim": c["claim"],
                                              "cells": {lv: [] for lv in levels}})
            measured = [r for r in c["rows"] if _has_runs(r)]
            if measured:
                row["cells"][a.evidence].append({
                    "set": name, "link": f"{name}/report/index.html#{c['slug']}",
                    "verdicts": [(_label(r, measured), r["verdict"]) for r in measured],
                    "evidence": next((r.get("evidence") for r in measured if r.get("evidence")), "")})
    return list(rows.values()), levels


def row_key(row: Mapping) -> str:
    """One claims row across sets: method, metric and baseline (a claim may test a method twice)."""
    return f"{row['method']}|{row.get('metric') or ''}|{row.get('baseline') or ''}"


def of_record(analyses: Mapping[str, build.Analysis]) -> dict[str, dict[str, dict]]:
    """{claim slug: {row_key: {verdict, set, level, evidence}}}: each claims row's verdict from the
    largest-scale set with runs for it (full before study; among sets of one level, the first by name)."""
    rank = {lv: i for i, lv in enumerate(LEVELS)}
    out: dict[str, dict[str, dict]] = {}
    for name, a in sorted(analyses.items(), key=lambda kv: (-rank.get(kv[1].evidence, -1), kv[0])):
        for c in a.claims:
            for r in c["rows"]:
                if _has_runs(r):
                    out.setdefault(c["slug"], {}).setdefault(row_key(r), {
                        "verdict": r["verdict"], "set": name, "level": a.evidence,
                        "evidence": r.get("evidence") or "", "link": f"{name}/report/index.html#{c['slug']}"})
    return out


def track_boards(analyses: Mapping[str, build.Analysis]) -> list[dict]:
    """Per track (first-seen order): the glance leaderboard of each set that holds it."""
    out: dict[str, dict] = {}
    for name, a in analyses.items():
        for t in a.tracks:
            info = build.track_info(t, a.data)
            layout = build.track_layout(a.layout, t)
            g = glance.track_glance(t, a.board, a.data["summary"], [d for d, _ in info["datasets"]],
                                    layout["main_metric"], a.layout["metrics"], info["baseline"], a.level, None)
            if g:
                out.setdefault(t, {"name": t, "sets": []})["sets"].append(
                    {"set": name, "evidence": a.evidence, "link": f"{name}/report/index.html#track-{t}",
                     "baseline": info["baseline"], "seeds": info["seeds"], "budget": info["budget"], "glance": g})
    return list(out.values())


def build_site(published: Path | str = PUBLISHED, out: Path | str | None = None) -> Path:
    """Write `<published>/index.html` (or `out`) from the sets under `published`; returns its path."""
    published = Path(published)
    out = Path(out) if out else published / "index.html"
    analyses = {p.name: build.analyse(p, set_name=p.name) for p in discover(published)}
    if not analyses:
        raise FileNotFoundError(f"{published}: no published sets (folders with summary.csv(.gz) and provenance.json)")
    claims, levels = scoreboard(analyses)
    level = next(iter(analyses.values())).level
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(build.TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("site.html.j2").render(
        sets=[set_row(n, a) for n, a in analyses.items()], tracks=track_boards(analyses),
        claims=claims, levels=levels, legend=legend(level),
        rules={lv: build.claims_mod.rule(lv) for lv in levels})
    build._write(out, html)
    # the verdicts of record, for reports built elsewhere (build.records_for): small, read without analysing
    build._write(out.with_name(RECORD_FILE), json.dumps(of_record(analyses), indent=1, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lossbench.report.site", description=__doc__.split("\n")[0])
    p.add_argument("published", type=Path, nargs="?", default=PUBLISHED)
    p.add_argument("--out", type=Path, default=None, help="default: <published>/index.html")
    a = p.parse_args(argv)
    print(build_site(a.published, a.out))


if __name__ == "__main__":
    main()
