"""Leaderboard tables: formatting of the tidy leaderboard into rows shared by HTML and Markdown.

Every number comes from `lossbench.stats.leaderboard`; this module only orders and formats it
using the metric metadata in `report/leaderboard.yaml`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd
import yaml

from lossbench.stats import BAD_STATUSES, direction

LAYOUT_PATH = Path(__file__).with_name("leaderboard.yaml")
MISSING = "—"
BEATS, WORSE = "▲", "▼"


def load_layout(path: Path | str = LAYOUT_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


def track_layout(layout: Mapping, track: str) -> dict:
    """The track's layout entry, falling back to `default`."""
    return layout["tracks"].get(track) or layout["tracks"]["default"]


def dataset_layout(track_layout: Mapping, dataset: str) -> dict:
    """The track layout as one dataset's leaderboard uses it: a `datasets` entry whose glob matches
    (a dataset scored otherwise, e.g. open-world retrieval) replaces its keys, and its first column
    is then the main metric."""
    import fnmatch

    for pattern, own in (track_layout.get("datasets") or {}).items():
        if fnmatch.fnmatchcase(dataset, pattern):
            return {**track_layout, "main_metric": own["columns"][0], **own}
    return dict(track_layout)


def fmt_number(x: float, meta: Mapping) -> str:
    """A value in display units: multiplied by `scale`, rounded to `digits`."""
    return f"{x * meta.get('scale', 1):.{meta.get('digits', 3)}f}"


def fmt_mapping(d) -> str:
    """`a=1, b=2` for hyperparameters and budgets, nested as `k (a=1, b=2)`; strings pass."""
    if not isinstance(d, Mapping):
        return "" if d is None else str(d)
    return ", ".join(f"{k} ({fmt_mapping(v)})" if isinstance(v, Mapping) else f"{k}={v}"
                     for k, v in d.items())


def cell_parts(row: Mapping | None, meta: Mapping) -> dict:
    """{mean, hw, n} as display strings; empty when no seed has a value, no hw when n < 2."""
    if not row or row["n"] == 0:
        return {}
    hw = "" if pd.isna(row["half_width"]) else fmt_number(row["half_width"], meta)
    return {"mean": fmt_number(row["mean"], meta), "hw": hw, "n": str(row["n"])}


def fmt_cell(parts: Mapping) -> str:
    """`mean ± half-width (n)`, or `—`."""
    if not parts:
        return MISSING
    return parts["mean"] + (f" ± {parts['hw']}" if parts["hw"] else "") + f" ({parts['n']})"


def method_order(part: pd.DataFrame, main_metric: str, metrics: Mapping) -> list[str]:
    """Methods of one (track, dataset), best main-metric mean first; no value last, by name."""
    sign = direction(metrics, main_metric) or 1  # unknown direction: higher first
    score = part[part["metric"] == main_metric].set_index("method")["mean"] * sign

    def key(method):
        s = score.get(method, float("nan"))
        return (pd.isna(s), 0.0 if pd.isna(s) else -s, method)

    return sorted(part["method"].unique(), key=key)


def table_cell(r: Mapping | None, meta: Mapping) -> dict:
    """One leaderboard cell from its board row (None: no row): {text, mean, hw, n (display strings;
    absent when missing), marker (▲/▼/''), best}."""
    marker = BEATS if r and r["beats_baseline"] else WORSE if r and r["worse_than_baseline"] else ""
    parts = cell_parts(r, meta)
    return {"text": fmt_cell(parts), **parts, "marker": marker, "best": bool(r and r["best"])}


def table_rows(part: pd.DataFrame, columns: list[str], main_metric: str,
               metrics: Mapping) -> list[dict]:
    """Rows of one (track, dataset) table: method, n_diverged, n_failed and one cell per column.

    A cell is {text, mean, hw, n (display strings; absent when missing), marker (▲/▼/''), best}.
    """
    by_key = {(r["method"], r["metric"]): r for r in part.to_dict("records")}
    bad = {s: part.groupby("method")[f"n_{s}"].max() for s in BAD_STATUSES}
    rows = []
    for method in method_order(part, main_metric, metrics):
        cells = []
        for metric in columns:
            cells.append(table_cell(by_key.get((method, metric)), metrics.get(metric, {})))
        rows.append({"method": method, "cells": cells, **{f"n_{s}": int(n.get(method, 0)) for s, n in bad.items()}})
    return rows


def bad_statuses(rows: list[dict]) -> list[str]:
    """The run statuses (diverged, failed) some row of a table has: each gets a count column."""
    return [s for s in BAD_STATUSES if any(r.get(f"n_{s}") for r in rows)]


def md_text(text) -> str:
    """Text from config or results as Markdown prose: HTML escaped (a description `<b>` or `<script>`
    shows as written, as the HTML report shows it), newlines joined. `&` and `<` are enough to stop a
    tag or an entity; a lone `>` stays as written."""
    return " ".join(str(text).splitlines()).replace("&", "&amp;").replace("<", "&lt;")


def md_cell(text) -> str:
    """md_text for a table cell: a `|` would end the cell."""
    return md_text(text).replace("|", "\\|")


def md_row(cells) -> str:
    return "| " + " | ".join(md_cell(c) for c in cells) + " |"


def markdown_table(rows: list[dict], headers: list[str], baseline: str, statuses: list[str] = ()) -> str:
    """A GitHub-flavoured table; best cells bold, the baseline labelled, a seed count per bad status."""
    head = ["method", *headers, *statuses]
    lines = [md_row(head), "| --- |" + " ---: |" * (len(head) - 1)]
    for row in rows:
        name = md_cell(row["method"]) + (" (baseline)" if row["method"] == baseline else "")
        cells = []
        for c in row["cells"]:
            text = md_cell(f"{c['text']} {c['marker']}".strip())
            cells.append(f"**{text}**" if c["best"] else text)
        extra = [str(row[f"n_{s}"]) for s in statuses]
        lines.append("| " + " | ".join([name, *cells, *extra]) + " |")
    return "\n".join(lines)


def markdown_extra(table: Mapping) -> str:
    """An extra table ({title, caption, headers, rows of strings}: steps to grok, optimizer axis,
    variant selection) as a Markdown section."""
    lines = [f"### {md_text(table['title'])}", md_text(table["caption"]), "",
             md_row(table["headers"]), "| --- |" + " ---: |" * (len(table["headers"]) - 1)]
    return "\n".join(lines + [md_row(r) for r in table["rows"]])


def legend(level: float, n_methods: int | None = None) -> str:
    """The leaderboard legend. `n_methods`: the size of the Holm family of one table (its methods
    compared with the baseline); without it the text speaks of each table's methods in general."""
    pct = f"{level * 100:g}%"
    family = (f"the {n_methods} method{'s' if n_methods != 1 else ''} of the table"
              if n_methods is not None else "the methods of each table")
    return (f"Cells: mean over seeds ± half-width of the {pct} Student-t CI (n = seeds with a "
            f"value); {MISSING} = no value. {BEATS}/{WORSE}: better/worse than the baseline by a "
            f"paired t-test over shared seeds, Holm-corrected across {family} (baseline excluded) "
            f"at level α = {1 - level:.3g}; the ± shown is the uncorrected CI (with a missing run a "
            f"marker can disagree with the means). Bold: best mean and every method whose paired "
            f"CI against it includes zero or cannot be formed (n < 2).")
