"""What a published set changed: its claims rows beside the smoke profile's, for a study's closing note.

    python -m lossbench.report.compare results/published/<set> [--against results/smoke]
    python -m lossbench.report.compare --record [results/published]

The first form prints, for every claims row the set measured, the smoke verdict (a direction check:
consistent / inconsistent / no signal), the set's verdict (reproduced / partly / not reproduced / not
testable at this scale), the set's measurement with its minimum detectable effect (MDE), and whether
the verdict changed. The two vocabularies answer different questions, so "changed" means they
disagree about the evidence: a smoke direction (consistent or inconsistent) the set contradicts or
does not confirm, a set verdict that found a significant effect where smoke had no signal, or a row
smoke measured that the set calls not testable. Rows smoke did not run are "new". The second form
counts every claims row by its verdict of record (the largest-scale published set with runs for it,
as the site and the reports use), so a closing note can state how many rows stay not testable and why.
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path
from typing import Mapping

from lossbench.report import build, site

# (smoke verdict, set verdict) pairs that agree about the evidence; any other measured pair changed
AGREE = {("consistent", "reproduced"), ("consistent", "partly"), ("inconsistent", "not reproduced"),
         ("no signal", "partly"), ("no signal", "not reproduced")}


def _rows(a: build.Analysis) -> dict[tuple[str, str], dict]:
    return {(c["slug"], site.row_key(r)): {**r, "paper": c["paper"]} for c in a.claims for r in c["rows"]}


def change(smoke_row: Mapping | None, set_row: Mapping) -> str:
    """"new", "changed" or "" (agrees) for one claims row (module docstring)."""
    if smoke_row is None or not site._has_runs(smoke_row):
        return "new"
    return "" if (smoke_row["verdict"], set_row["verdict"]) in AGREE else "changed"


def compare(set_dir: Path, against: Path) -> tuple[list[dict], collections.Counter]:
    """(one dict per claims row the set measured, the set's verdict counts over those rows)."""
    mine, smoke = _rows(build.analyse(set_dir, set_name=set_dir.name)), _rows(build.analyse(against))
    out = []
    for key, r in mine.items():
        if site._has_runs(r):
            s = smoke.get(key)
            out.append({"paper": r["paper"].split(" — ")[0], "row": site._label(r, [r]), "metric": r["metric"],
                        "baseline": r["baseline"], "smoke": s["verdict"] if s and site._has_runs(s) else "no runs",
                        "set": r["verdict"], "measured": "; ".join(r["measured"]), "change": change(s, r)})
    return out, collections.Counter(r["set"] for r in out)


def record_counts(published: Path, smoke: Path) -> tuple[collections.Counter, list[dict]]:
    """(verdict-of-record counts over every claims row, the rows whose record is not testable).
    A row without runs in any published set takes the smoke profile's verdict: `smoke only` where the
    smoke profile measured it, else the smoke report's own verdict and reason (a row with nothing to
    run: theory, a method not implemented, a benchmark the profile lacks)."""
    analyses = {p.name: build.analyse(p, set_name=p.name) for p in site.discover(published)}
    record = site.of_record(analyses)
    counts, rest = collections.Counter(), []
    for c in build.analyse(smoke).claims:
        for r in c["rows"]:
            rec = record.get(c["slug"], {}).get(site.row_key(r))
            if rec is None:
                verdict = "smoke only" if site._has_runs(r) else r["verdict"]
                counts[verdict] += 1
                if verdict != "smoke only":
                    rest.append({"paper": c["paper"].split(" — ")[0], "method": r["method"], "verdict": verdict,
                                 "reason": r["reason"], "set": f"smoke ({smoke.name})"})
                continue
            counts[rec["verdict"]] += 1
            if rec["verdict"].startswith("not testable"):
                reason = next(x["reason"] for y in analyses[rec["set"]].claims if y["slug"] == c["slug"]
                              for x in y["rows"] if site.row_key(x) == site.row_key(r))
                rest.append({"paper": c["paper"].split(" — ")[0], "method": r["method"], "verdict": rec["verdict"],
                             "reason": reason, "set": rec["set"]})
    return counts, rest


def _table(rows: list[dict], cols: list[str]) -> str:
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lossbench.report.compare", description=__doc__.split("\n")[0])
    p.add_argument("set", type=Path, nargs="?", help="a published set (or any results folder)")
    p.add_argument("--against", type=Path, default=build._repo_root() / "results" / "smoke")
    p.add_argument("--record", type=Path, nargs="?", const=site.PUBLISHED,
                   help="count every claims row by its verdict of record in this published folder")
    p.add_argument("--all", action="store_true", help="list agreeing rows too (default: changed and new only)")
    a = p.parse_args(argv)
    if a.record:
        counts, rest = record_counts(a.record, a.against)
        print("Verdicts of record over", sum(counts.values()), "claims rows:", dict(counts.most_common()))
        print(_table(rest, ["paper", "method", "verdict", "set", "reason"]))
    if a.set:
        rows, counts = compare(a.set, a.against)
        print(f"{a.set.name}: {len(rows)} claims rows measured; verdicts {dict(counts.most_common())}; "
              f"{sum(r['change'] == 'changed' for r in rows)} changed from {a.against}, "
              f"{sum(r['change'] == 'new' for r in rows)} new")
        shown = rows if a.all else [r for r in rows if r["change"]]
        print(_table(shown, ["paper", "row", "metric", "baseline", "smoke", "set", "change", "measured"]))
    if not (a.set or a.record):
        p.error("give a set, --record, or both")


if __name__ == "__main__":
    main()
