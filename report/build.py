"""Build the static report: index.html, tables/<track>.{md,csv} and figures/*.png.

    python -m lossbench.report.build RESULTS_DIR OUT_DIR [--title T] [--note N] [--level 0.95]

Reads only the tidy files the pipeline writes under results/<profile>/ (summary.csv, curves.csv,
per_class.csv — gzipped, .csv.gz, in a published set — runs.json, provenance.json, methods.json, and
kernels.csv/json where a benchmark ran) plus report/leaderboard.yaml and
report/claims.yaml; no number is typed by hand (conventions §7).
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import jinja2
import pandas as pd

from lossbench import io
from lossbench.stats import leaderboard
from lossbench.report import claims as claims_mod
from lossbench.report import optimizers
from lossbench.report import plots
from lossbench.report import glance, grokking, kernels, lm_pretraining, overopt, preference, selection
from lossbench.report.tables import (LAYOUT_PATH, bad_statuses, dataset_layout, fmt_mapping, legend, load_layout,
                                    markdown_extra, markdown_table, md_text, table_rows, track_layout)

TEMPLATES = Path(__file__).with_name("templates")
CURVE_COLUMNS = ["track", "dataset", "method", "seed", "step", "epoch", "tokens", "metric", "value"]
RUN_KEYS = ["track", "dataset", "method", "seed"]
PER_CLASS_COLUMNS = ["track", "dataset", "method", "seed", "class", "train_count", "test_recall"]


def _read_csv(d: Path, name: str, columns: list[str]) -> pd.DataFrame:
    """An optional table (plain or .gz); an absent or empty file (no task wrote rows: per-class
    results of a preference-only profile) reads as empty, so a partial run still renders."""
    try:
        return pd.read_csv(io.tidy_path(d, name))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=columns)


def _read_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


def load_results(results_dir: Path | str) -> dict:
    d = Path(results_dir)
    return {
        "summary": pd.read_csv(io.tidy_path(d, "summary.csv")),
        "curves": _read_csv(d, "curves.csv", CURVE_COLUMNS),
        "per_class": _read_csv(d, "per_class.csv", PER_CLASS_COLUMNS),
        "runs": _read_json(d / "runs.json", []),
        "provenance": _read_json(d / "provenance.json", {}),
        "methods": _read_json(d / "methods.json", {}),
        "overopt": overopt.load(d),  # the preference track's best-of-n curves, where the profile made them
    }


def _write(path: Path, text: str) -> None:
    """Write via a temp name, so a killed build never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def hparams_text(runs: list[dict]) -> dict[tuple, str]:
    """(track, dataset, method) -> its hyperparameters; per seed if tuning picked different ones."""
    by_key: dict[tuple, dict] = {}
    for r in runs:
        key = (r["track"], r["dataset"], r["method"])
        by_key.setdefault(key, {})[r["seed"]] = fmt_mapping(r.get("hparams") or {})
    out = {}
    for key, per_seed in by_key.items():
        distinct = set(per_seed.values())
        out[key] = distinct.pop() if len(distinct) == 1 else "; ".join(
            f"seed {s}: {h}" for s, h in sorted(per_seed.items()))
    return out


def track_info(track: str, data: Mapping) -> dict:
    """What the track's numbers come from: version, baseline, seeds, datasets, budget."""
    info = dict((data["provenance"].get("tracks") or {}).get(track) or {})
    rows = data["summary"][data["summary"]["track"] == track]
    present = set(rows["dataset"])
    described = info.get("datasets") or {}
    if "version" not in info and "track_version" in rows:
        info["version"] = rows["track_version"].iloc[0]
    return {
        "name": track, "version": info.get("version", "?"),
        "baseline": info.get("baseline", "erm"),
        "seeds": info.get("seeds") or sorted(rows["seed"].unique().tolist()),
        "budget": fmt_mapping(info.get("budget")),
        # provenance order first; datasets without any row have no table
        "datasets": [(d, described.get(d, ""))
                     for d in dict.fromkeys([*described, *sorted(present)]) if d in present],
    }


def without_diverged(df: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Rows of `df` not from a diverged run: a blown-up loss curve would swamp the axes."""
    if "status" not in summary or df.empty:
        return df
    bad = summary.loc[summary["status"] == "diverged", RUN_KEYS].drop_duplicates()
    flagged = df[RUN_KEYS].merge(bad.assign(_bad=True), on=RUN_KEYS, how="left")["_bad"]
    return df[flagged.isna().to_numpy()]


def _method_order(track: str, data: Mapping, board: pd.DataFrame) -> list[str]:
    """Registry order (methods.json), so variants of one family get neighbouring colours."""
    present = set(board.loc[board["track"] == track, "method"])
    return [m for m in data["methods"] if m in present] + sorted(present - set(data["methods"]))


@dataclass
class TrackContext:
    """What every table and figure of one track shares."""
    info: dict
    layout: dict  # the track's entry of leaderboard.yaml
    metrics: dict  # metric metadata
    colors: dict
    level: float
    out_dir: Path


def _figures(ctx: TrackContext, dataset: str, order: list[str], rows: pd.DataFrame,
             data: Mapping) -> list[tuple[str, str]]:
    """Write the (track, dataset) figures; return [(caption, path relative to out_dir)]. Figures with
    one line per method draw the baseline and the best of `order` (the table order), at most
    plots.MAX_SERIES, in colours fixed for this (track, dataset); the bar chart shows every method."""
    track, baseline, main = ctx.info["name"], ctx.info["baseline"], ctx.layout["main_metric"]
    if "raw_summary" in data and track in data["raw_summary"]:  # a preference track's view
        drawn = preference.figures(ctx, dataset, data, lambda kind: ctx.out_dir / "figures" / f"{kind}.png", order)
        return [(cap, p.relative_to(ctx.out_dir).as_posix()) for cap, p in drawn if p is not None]
    ctx = replace(ctx, colors=plots.method_colors(order, baseline))

    def pick(df):
        return without_diverged(df[(df["track"] == track) & (df["dataset"] == dataset)],
                                data["summary"])

    def path(kind):
        return ctx.out_dir / "figures" / f"{track}__{dataset}__{kind}.png"

    bars = rows[rows["metric"] == main].set_index("method").reindex(order).reset_index()
    per_class, curves, panels = pick(data["per_class"]), pick(data["curves"]), ctx.layout.get("curves", [])
    relative = () if lm_pretraining.is_lm(data, track) else plots.OWN_LOSS_CURVES  # LM losses: plain CE
    note = plots.not_drawn_note(order, ctx.colors, ctx.metrics.get(main, {}).get("display", main))
    drawn = [
        (f"Main metric of every method in table order (baseline black), mean ± {plots.ci_text(ctx.level)} over "
         f"{plots.seeds_text(bars, n_column='n')}.",
         plots.bar_main(bars, ctx.metrics.get(main, {}), baseline, path("bar"), ctx.level)),
        (f"Per-class test recall (against training count if imbalanced), mean over "
         f"{plots.seeds_text(per_class, ctx.colors)}." + note,
         plots.per_class(per_class, baseline, ctx.colors, path("per_class"))),
        ("Training curves (diverged runs left out), "
         f"{plots.curves_caption(curves, panels, ctx.colors, ctx.level, relative)}." + note,
         plots.curves(curves, panels, ctx.metrics, baseline, ctx.colors, ctx.level, path("curves"),
                      x=ctx.layout.get("curves_x", "step"), log_x=ctx.layout.get("curves_log_x", False),
                      relative=relative)),
    ]
    if lm_pretraining.is_lm(data, track):
        drawn += lm_pretraining.figures(ctx, pick(data["summary"]), curves, path, note)
    if grokking.is_grokking(data, track):
        drawn += grokking.figures(ctx, curves, path, note)
    return [(cap, p.relative_to(ctx.out_dir).as_posix()) for cap, p in drawn if p is not None]


def track_section(track: str, board: pd.DataFrame, data: Mapping, layout: Mapping, level: float,
                  out_dir: Path) -> dict:
    """Tables (md, csv) and figures for one track, and its context for the HTML template."""
    info = track_info(track, data)
    ctx = TrackContext(info, track_layout(layout, track), layout["metrics"],
                       plots.method_colors(_method_order(track, data, board), info["baseline"]),
                       level, out_dir)
    view_columns = ctx.layout.get("view_columns", {})
    headers_of = lambda cols: [ctx.metrics.get(c, {}).get("display", c) for c in cols]  # noqa: E731
    headers = headers_of(ctx.layout["columns"])
    hp = hparams_text(data["runs"])
    urls = {m: (v or {}).get("url") for m, v in data["methods"].items()}
    datasets, md = [], [_md_header(info, data["provenance"], level)]
    for dataset, description in info["datasets"]:
        rows = board[(board["track"] == track) & (board["dataset"] == dataset)]
        view = preference.split_view(dataset)[1]
        own = replace(ctx, layout=dataset_layout(ctx.layout, dataset))  # e.g. retrieval columns
        cols = view_columns.get(view, own.layout["columns"])
        main = cols[0] if view in view_columns else own.layout["main_metric"]
        measured = set(rows.loc[rows["n"] > 0, "metric"])  # e.g. robust accuracy only where there is an attack
        cols = [c for c in cols if c in measured or c == main]
        table = table_rows(rows, cols, main, ctx.metrics)
        for r in table:
            r["url"] = urls.get(r["method"])
            r["hparams"] = hp.get((track, dataset, r["method"]), "")
        statuses = bad_statuses(table)
        md += [f"## {md_text(dataset)}", md_text(description),
               markdown_table(table, headers_of(cols), info["baseline"], statuses)]
        extra = []  # a track's own tables under the leaderboard (grokking: steps to grok)
        chosen = selection_table(track, dataset, [r["method"] for r in table], data)
        if chosen:
            extra.append(chosen)
            md.append(markdown_extra(chosen))
        tuned = selection.tuning_table(track, dataset, [r["method"] for r in table], data)
        if tuned:  # a tuned track: what each method's equal budget chose
            extra.append(tuned)
            md.append(markdown_extra(tuned))
        for pseudo, a in (data.get("axis") or {}).items():
            if a["track"] == track:
                cols_o = ctx.layout.get("optimizer_columns", cols)
                x = optimizers.table(data["axis_board"], pseudo, a, dataset, cols_o, ctx.metrics,
                                     lambda part, opt, c: _text_row(part, opt, c, a["baseline"], ctx.metrics))
                if x:
                    extra.append(x)
                    md.append(markdown_extra(x))
        if grokking.is_grokking(data, track):
            summary = data["summary"]
            extra.append(grokking.steps_table(summary[(summary["track"] == track) & (summary["dataset"] == dataset)],
                                              [r["method"] for r in table]))
            md.append(markdown_extra(extra[-1]))
        datasets.append({"name": dataset, "description": description, "rows": table, "headers": headers_of(cols),
                         "statuses": statuses, "extra_tables": extra,
                         "figures": _figures(own, dataset, [r["method"] for r in table], rows,
                                             data)})
    _write(out_dir / "tables" / f"{track}.md", "\n\n".join(s for s in md if s) + "\n")
    _write(out_dir / "tables" / f"{track}.csv",
           board[board["track"] == track].to_csv(index=False, float_format="%.6g"))
    at_a_glance = glance.track_glance(track, board, data["summary"], [d for d, _ in info["datasets"]],
                                      ctx.layout["main_metric"], ctx.metrics, info["baseline"], level,
                                      out_dir / "figures" / f"{track}__critical_difference.png")
    if at_a_glance and at_a_glance["figure"]:
        at_a_glance["figure"] = Path(at_a_glance["figure"]).relative_to(out_dir).as_posix()
    return {**info, "headers": headers, "datasets_ctx": datasets, "glance": at_a_glance,
            "described": described_once(info["datasets"])}


def described_once(datasets: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(dataset, description) with each underlying dataset once: a preference track's views
    (`synthpref @best`, `synthpref @matched-kl`, ...) share their dataset's description."""
    out: dict[str, str] = {}
    for name, desc in datasets:
        base = preference.split_view(name)[0]
        if not out.get(base):
            out[base] = desc
    return list(out.items())


def selection_table(track: str, dataset: str, order: list[str], data: Mapping) -> dict | None:
    """Which variant each method of a swept track runs at on `dataset`, and what it was chosen on
    (report/selection.py), optimizer-axis picks (`<loss> × <optimizer>`) after the methods."""
    chosen = data.get("selection") or {}
    parts = [chosen[track]] if track in chosen else []
    for pseudo, a in (data.get("axis") or {}).items():
        if a["track"] == track and pseudo in chosen:
            parts.append(chosen[pseudo].assign(method=[f"{a['loss']} × {o}" for o in chosen[pseudo]["method"]]))
    if not parts:
        return None
    return selection.table(pd.concat(parts, ignore_index=True), dataset, order)


def _text_row(part: pd.DataFrame, method: str, columns: list[str], baseline: str, metrics: Mapping) -> list[str]:
    """One row of an extra table as strings: name (baseline labelled), then `mean ± hw (n) ▲`."""
    (row,) = [r for r in table_rows(part[part["method"] == method], columns, columns[0], metrics)]
    cells = [f"{c['text']} {c['marker']}".strip() for c in row["cells"]]
    return [method + (" (baseline)" if method == baseline else ""), *cells]


def _md_header(info: Mapping, provenance: Mapping, level: float) -> str:
    dirty = " (dirty)" if provenance.get("git_dirty") else ""
    return "\n".join([
        f"# Leaderboard: {md_text(info['name'])} (track version {md_text(info['version'])})", "",
        f"- commit: {md_text(provenance.get('git_commit', '?'))}{dirty}; profile: "
        f"{md_text(provenance.get('profile', '?'))}",
        f"- seeds: {', '.join(map(str, info['seeds']))}; baseline: {md_text(info['baseline'])}; "
        f"budget: {md_text(info['budget'] or '?')}",
        f"- {legend(level)}",
    ])


def failed_runs(runs: list[dict]) -> list[dict]:
    """Runs that raised (lossbench.runner.record_failure): what, why, and where the traceback is."""
    return [{"run": "/".join(str(r[k]) for k in ("track", "dataset", "method", "variant")) + f"/seed{r['seed']}",
             "error": f"{(r.get('error') or {}).get('type', '?')}: {(r.get('error') or {}).get('message', '')}",
             "log": r.get("log") or "?"} for r in runs if r.get("status") == "failed"]


def devices_used(runs: list[dict]) -> list[str]:
    """'<device> on <host>: <n> runs', most used first (a failed run may not have reached a device)."""
    counts = pd.Series([f"{r.get('device') or 'unknown'} on {r.get('host') or 'unknown host'}" for r in runs])
    return [f"{name}: {n} runs" for name, n in counts.value_counts().items()] if len(counts) else []


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    return next((p for p in here.parents if (p / "pyproject.toml").exists()), here.parent.parent)


def docs_links(method_meta: Mapping, out_dir: Path, docs_base: str | None = None) -> dict[str, str]:
    """method -> link to its reference page (docs/methods/<page>.md). The page is the methods.json
    entry's `docs`, or for a methods.json written before that field, the registered spec's. With
    `docs_base` (e.g. a repository URL, or LOSSBENCH_DOCS_BASE) the link is `<docs_base>/<page>`,
    else a path relative to the report folder, which resolves inside a checkout."""
    docs_base = docs_base if docs_base is not None else os.environ.get("LOSSBENCH_DOCS_BASE")
    links = {}
    for name, m in method_meta.items():
        page = (m or {}).get("docs")
        if not page:
            from lossbench import methods as registry

            try:
                page = registry.get(name).docs_path
            except (KeyError, ImportError):
                continue
        links[name] = (f"{docs_base.rstrip('/')}/{page}" if docs_base
                       else Path(os.path.relpath(_repo_root() / page, Path(out_dir).resolve())).as_posix())
    return links


def attach_records(claims: list[dict], out_dir: Path, published: Path | None = None) -> None:
    """Give each claims row its verdict of record from the published sets (`of_record`: verdict, set,
    level, link relative to `out_dir`) where `<published>/verdicts_of_record.json` (written with the
    published leaderboard site; default: this checkout's results/published) has one."""
    from lossbench.report import site

    published = Path(published) if published else _repo_root() / "results" / "published"
    path = published / site.RECORD_FILE
    if not path.exists():
        return
    records = json.loads(path.read_text())
    base = Path(os.path.relpath(published.resolve(), Path(out_dir).resolve())).as_posix()
    for c in claims:
        for r in c["rows"]:
            rec = (records.get(c["slug"]) or {}).get(site.row_key(r))
            if rec:
                r["of_record"] = {**rec, "link": f"{base}/{rec['link']}"}


def site_link(out_dir: Path) -> str | None:
    """Relative link from a report folder to the published leaderboard site (results/published/index.html
    of this checkout), or None where that page does not exist (a report built outside a checkout)."""
    site = _repo_root() / "results" / "published" / "index.html"
    if not site.exists():
        return None
    return Path(os.path.relpath(site, Path(out_dir).resolve())).as_posix()


@dataclass
class Analysis:
    """Everything one results folder's report shows, before rendering (the published site reads it too)."""
    data: dict
    layout: dict
    level: float
    tracks: list[str]
    board: pd.DataFrame
    claims: list[dict]
    evidence: str
    failed: list[dict]
    devices: list[str]
    kernel_rows: pd.DataFrame | None
    kernel_meta: dict | None


def analyse(results_dir: Path | str, level: float | None = None, layout_path: Path | str = LAYOUT_PATH,
            claims_path: Path | str = claims_mod.CLAIMS_PATH, set_name: str | None = None) -> Analysis:
    """Read a results folder and compute its leaderboards and claim verdicts (no files written)."""
    data, layout = load_results(results_dir), load_layout(layout_path)
    where = Path(results_dir).resolve()
    set_name = set_name or (where.name if where.parent.name == "published" else None)  # a published set
    failed, devices = failed_runs(data["runs"]), devices_used(data["runs"])  # before any view drops runs
    level = level or layout.get("ci_level", 0.95)
    axis = optimizers.split(data)  # optimizer-axis runs leave the main boards for their own tables
    for t in data["summary"]["track"].unique():  # variant selection on validation data (fair tuning)
        if preference.is_preference(data, t):
            preference.expand_views(data, t)  # per view, by the same rule
        else:
            selection.apply(data, t)  # a track without a sweep is left as it is
        if lm_pretraining.is_lm(data, t):
            lm_pretraining.add_time_to_target(data, t)  # against the baseline's selected variant
    for pseudo, a in axis.items():  # each optimizer at its own best grid point of the loss's sweep
        selection.apply(data, pseudo, selection.task_of(data, a["track"]), tables=("axis_summary",))
    summary, prov = data["summary"], data["provenance"]
    tracks = list(dict.fromkeys([*(prov.get("tracks") or {}), *summary["track"].unique()]))
    tracks = [t for t in tracks if (summary["track"] == t).any()]
    baselines = {t: track_info(t, data)["baseline"] for t in tracks}
    expected = {}
    for r in data["runs"]:  # methods that ran (or failed) anywhere in the track get a row
        expected.setdefault(r["track"], []).append(r["method"])
    board = (preference.trim_board(leaderboard(summary, baselines, level, layout["metrics"], expected), data)
             if tracks else pd.DataFrame(columns=["track", "dataset", "method"]))
    if axis and not data["axis_summary"].empty:
        data["axis_board"] = leaderboard(data["axis_summary"], {p: a["baseline"] for p, a in axis.items()},
                                         level, layout["metrics"])
        data["axis"] = axis
    kernel_rows, kernel_meta = kernels.load(results_dir)
    evidence = claims_mod.evidence_level(prov)
    claims = claims_mod.evaluate(claims_mod.load_claims(claims_path),
                                 pd.concat([summary, data["axis_summary"], overopt.summary_rows(data["overopt"])],
                                           ignore_index=True), level,
                                 layout["metrics"], kernel_rows, prov, set_name=set_name)
    seen: dict[str, int] = {}
    for c in claims:  # every claims.yaml entry is evaluated, in file order: the same anchors in every set
        slug = claim_slug(c)
        seen[slug] = seen.get(slug, 0) + 1
        c["slug"] = slug if seen[slug] == 1 else f"{slug}-{seen[slug]}"
    return Analysis(data, layout, level, tracks, board, claims, evidence, failed, devices, kernel_rows, kernel_meta)


def claim_slug(claim: Mapping) -> str:
    """A stable anchor for a claims.yaml entry (`claim-<paper words>`), so other pages can link to its row."""
    words = "".join(ch if ch.isascii() and ch.isalnum() else " " for ch in f"{claim['paper']} {claim['claim'][:40]}".lower()).split()
    return "claim-" + "-".join(words[:12])


def build_report(results_dir: Path | str, out_dir: Path | str, title: str = "lossbench report",
                 note: str | None = None, level: float | None = None,
                 layout_path: Path | str = LAYOUT_PATH,
                 claims_path: Path | str = claims_mod.CLAIMS_PATH, set_name: str | None = None) -> Path:
    """Build the report from a results folder; returns the path of index.html. `set_name` names a
    published set in the claims' evidence column."""
    a, out = analyse(results_dir, level, layout_path, claims_path, set_name), Path(out_dir)
    kernel_ctx = None
    if a.kernel_rows is not None:
        kernel_ctx = kernels.section(a.kernel_rows, a.kernel_meta, out)
        _write(out / "tables" / "kernels.md", kernels.markdown(kernel_ctx))
        _write(out / "tables" / "kernels.csv", kernels.wide(a.kernel_rows).to_csv(index=False, float_format="%.6g"))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    data = a.data
    if a.evidence == "smoke":  # a smoke report points each claim to its verdict of record
        attach_records(a.claims, out)
    html = env.get_template("index.html.j2").render(
        title=title, note=note, level=a.level, provenance=data["provenance"], evidence=a.evidence,
        site_link=site_link(out),
        tracks=[track_section(t, a.board, data, a.layout, a.level, out) for t in a.tracks], kernels=kernel_ctx,
        methods=data["methods"], docs=docs_links(data["methods"], out), fmt_mapping=fmt_mapping,
        legend=legend(a.level), claims=a.claims, claims_rule=claims_mod.rule(a.evidence), failed=a.failed,
        devices=a.devices)
    _write(out / "index.html", html)
    return out / "index.html"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lossbench.report.build", description=__doc__.split("\n")[0])
    p.add_argument("results_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--title", default="lossbench report")
    p.add_argument("--note", default=None, help="a sentence shown under the title")
    p.add_argument("--level", type=float, default=None, help="CI level (default: leaderboard.yaml)")
    a = p.parse_args(argv)
    print(build_report(a.results_dir, a.out_dir, title=a.title, note=a.note, level=a.level))


if __name__ == "__main__":
    main()
