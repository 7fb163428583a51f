"""`lossbench verify RESULTS`: re-check a results folder against the checksums recorded when its
files were written (lossbench.io), and the tables against each other.

RESULTS may be
  a profile's results folder (results/<profile>/): its SHA256SUMS (the tidy tables, written by
      aggregate), and every run listed in runs.json: train.json's artefacts (`outputs_sha256`) and
      inputs (`inputs_sha256`, where the input files are still there, and a prepared source against
      its sidecar), run.json's evaluation files (`evaluation_sha256`), run.json's metrics against
      metrics.csv, and summary.csv's rows against each run's metrics.csv;
  a published set (results/published/<name>/, tables and provenance only, no run folders): its
      SHA256SUMS (every file but the rendered report, written by publish: `write_manifest`) and the
      tables' consistency (one row per key and metric, the same runs in summary.csv and runs.json);
      its CSVs are gzipped (summary.csv.gz: the manifest records the .gz), or plain in a set
      published before publish compressed them (`compress_tables` converts one);
  a folder of published sets (results/published/): each set;
  one run folder (holding train.json).

A problem (a checksum mismatch, a missing or unreadable file, tables that disagree) makes the exit
status 1; a warning (something that cannot be checked, e.g. a set published before manifests, or a
run recorded before runs recorded their artefacts' checksums) only with --strict.

Wiring (lossbench/cli.py): `verify.add_arguments(subparser)` and `subparser.set_defaults(func=verify.run)`
where `run(args) -> int` is the exit status; or call `verify.main(argv) -> int` directly.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lossbench import io

RUN_KEYS = ["track", "dataset", "method", "variant", "seed"]
REPORT_DIR = "report"  # rendered from the tables (rebuilt at will): not in a published set's manifest


@dataclass
class Report:
    """What verify found in one folder."""
    path: Path
    kind: str = "?"
    files_checked: int = 0  # files whose sha256 was compared with a record
    runs: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    legacy: list[str] = field(default_factory=list)  # files recorded before checksums were (one line in the output)
    parts: list["Report"] = field(default_factory=list)  # the sets of a folder of published sets

    def ok(self, strict: bool = False) -> bool:
        return not self.all_problems() and not (strict and self.all_warnings())

    def all_problems(self) -> list[str]:
        return self.problems + [p for r in self.parts for p in r.all_problems()]

    def all_warnings(self) -> list[str]:
        return self.warnings + self.legacy + [w for r in self.parts for w in r.all_warnings()]

    def format(self, strict: bool = False) -> str:
        if self.parts:
            return "\n".join(r.format(strict) for r in self.parts)
        state = "OK" if self.ok(strict) else "FAILED"
        what = f"{self.runs} runs, " if self.runs else ""
        lines = [f"{self.path} ({self.kind}): {what}{self.files_checked} checksums checked: {state}"
                 f" ({len(self.problems)} problems, {len(self.warnings) + len(self.legacy)} warnings)"]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.legacy:
            lines.append(f"  warning: {len(self.legacy)} files were recorded before lossbench recorded checksums "
                         f"(their contents cannot be checked), e.g. {self.legacy[0]}")
        return "\n".join(lines)


def _check(rep: Report, fn, *args, **kwargs):
    """Run one check, recording a mismatch, a missing or an unreadable file as a problem; returns
    fn's result, or None after a problem."""
    try:
        out = fn(*args, **kwargs)
    except (io.IntegrityError, io.CorruptFile) as e:
        rep.problems.append(str(e))
    except FileNotFoundError as e:
        rep.problems.append(f"{e.filename}: missing")
    except FileExistsError as e:  # a table both plain and gzipped (io.tidy_path)
        rep.problems.append(str(e))
    else:
        return out
    return None


def _check_recorded(rep: Report, folder: Path, recorded: dict, recorded_in: Path) -> None:
    for name, sha in sorted(recorded.items()):
        if _check(rep, io.check_sha256, folder / name, sha, recorded_in) is not None:
            rep.files_checked += 1


def _workdir(run_dir: Path) -> Path | None:
    """The Snakemake working directory of a run folder .../results/<profile>/runs/...: where the
    paths it recorded (resources/data/..., results/<profile>/stages/...) are relative to."""
    for parent in run_dir.resolve().parents:
        if parent.name == "results":
            return parent.parent
    return None


def _same_values(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        try:
            x, y = float(x), float(y)
        except (TypeError, ValueError):
            if x != y:
                return False
            continue
        if not (x == y or (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-12)):
            return False
    return True


def verify_run(run_dir, rep: Report | None = None) -> Report:
    """Check one run folder against what its train.json and run.json recorded."""
    from lossbench import runner

    run_dir = Path(run_dir)
    rep = rep or Report(run_dir, "run")
    rep.runs += 1
    info = _check(rep, io.read_json, run_dir / "train.json")
    if info is None:
        return rep
    if "outputs_sha256" in info:
        _check_recorded(rep, run_dir, info["outputs_sha256"], run_dir / "train.json")
    else:
        rep.legacy.append(f"{run_dir / 'train.json'}: no `outputs_sha256`")
    workdir = _workdir(run_dir)
    paths = info.get("inputs") or {}
    for name, sha in sorted((info.get("inputs_sha256") or {}).items()):
        path = Path(paths[name]) if name in paths else None
        if path is None:
            continue
        path = path if path.is_absolute() or workdir is None else workdir / path
        if not path.exists():
            rep.warnings.append(f"{run_dir / 'train.json'}: input {name} ({path}) is no longer there: not checked")
            continue
        if _check(rep, io.check_sha256, path, sha, run_dir / "train.json",
                  "the input changed after the run trained on it: retrain") is not None:
            rep.files_checked += 1
            if not str(path).endswith(io.SIDECAR) and _check(rep, io.check_sidecar, path, sha):
                rep.files_checked += 1
    for stage in ("train_run", "evaluate_run"):
        if runner.attempt_open(run_dir, stage):
            rep.warnings.append(f"{run_dir}: a {stage} attempt started and never finished; the next invocation "
                                "retries it")
    if not (run_dir / "run.json").exists():
        rep.problems.append(f"{run_dir / 'run.json'}: missing (the run was never evaluated, or its evaluation was "
                            "deleted)")
        return rep
    run = _check(rep, io.read_json, run_dir / "run.json")
    if run is None:
        return rep
    if "evaluation_sha256" in run:
        _check_recorded(rep, run_dir, run["evaluation_sha256"], run_dir / "run.json")
    else:
        rep.legacy.append(f"{run_dir / 'run.json'}: no `evaluation_sha256`")
    metrics = _check(rep, io.read_csv, run_dir / "metrics.csv")
    if metrics is not None and not _same_values(dict(zip(metrics.metric, metrics.value)), run.get("metrics", {})):
        rep.problems.append(f"{run_dir / 'metrics.csv'}: its values differ from the metrics recorded in "
                            f"{run_dir / 'run.json'}")
    return rep


def _read_table(folder: Path, name: str):
    return io.read_csv(io.tidy_path(folder, name), empty_ok=True)


def _read_tables(rep: Report, folder: Path) -> tuple:
    summary = _check(rep, _read_table, folder, "summary.csv")
    runs = _check(rep, io.read_json, folder / "runs.json")
    for name in ("curves.csv", "per_class.csv"):
        _check(rep, _read_table, folder, name)
    for name in ("methods.json", "provenance.json"):
        _check(rep, io.read_json, folder / name)
    return summary, runs


def _check_tables(rep: Report, folder: Path, summary, runs) -> None:
    """summary.csv has one row per run key and metric, and the runs of runs.json, with their status."""
    if summary is None or runs is None or summary.empty and not runs:
        return
    missing = [c for c in ["track", "dataset", "method", "seed", "metric", "value"] if c not in summary.columns]
    if missing:
        rep.problems.append(f"{folder / 'summary.csv'}: no column {missing}")
        return
    keys = [k for k in RUN_KEYS if k in summary.columns]  # sets published before variants have none
    dup = summary.duplicated(keys + ["metric"])
    if dup.any():
        rep.problems.append(f"{folder / 'summary.csv'}: {int(dup.sum())} duplicate rows (same run and metric), e.g. "
                            f"{summary[dup].iloc[0][keys + ['metric']].tolist()}")
    status = summary["status"] if "status" in summary.columns else None
    first = summary.drop_duplicates(keys)
    in_summary = {tuple(str(v) for v in row[keys]): (str(row["status"]) if status is not None else None)
                  for _, row in first.iterrows()}
    in_runs = {tuple(str(r.get(k)) for k in keys): (str(r.get("status")) if status is not None else None)
               for r in runs}
    if set(in_summary) != set(in_runs):
        only_s, only_r = sorted(set(in_summary) - set(in_runs)), sorted(set(in_runs) - set(in_summary))
        rep.problems.append(f"{folder}: summary.csv and runs.json list different runs (only in summary.csv: "
                            f"{only_s[:3]}{'...' if len(only_s) > 3 else ''}; only in runs.json: "
                            f"{only_r[:3]}{'...' if len(only_r) > 3 else ''})")
    differ = [k for k in set(in_summary) & set(in_runs) if in_summary[k] != in_runs[k]]
    if differ:
        rep.problems.append(f"{folder}: summary.csv and runs.json disagree on the status of {len(differ)} runs, "
                            f"e.g. {sorted(differ)[0]}")


def _check_manifest(rep: Report, folder: Path, published: bool) -> None:
    manifest = _check(rep, io.read_manifest, folder)
    if manifest is None:
        if (folder / io.MANIFEST).exists():
            return  # unreadable: already a problem
        rep.warnings.append(f"{folder / io.MANIFEST}: none (written before publish/aggregate wrote one): the tables "
                            "were checked for consistency only, not against checksums")
        return
    _check_recorded(rep, folder, manifest, folder / io.MANIFEST)
    if published:
        unlisted = sorted(set(manifest_files(folder)) - set(manifest))
        if unlisted:
            rep.warnings.append(f"{folder}: files not in {io.MANIFEST}: {unlisted[:5]}"
                                f"{'...' if len(unlisted) > 5 else ''}")


def _cross_check_runs(rep: Report, folder: Path, summary, runs) -> None:
    """Each run listed in runs.json: its folder verifies, and summary.csv holds its metrics.csv."""
    groups = {}
    if summary is not None and set(RUN_KEYS) <= set(summary.columns):
        groups = {tuple(str(v) for v in k): g for k, g in summary.groupby(RUN_KEYS, sort=False)}
    for r in runs or []:
        run_dir = folder / "runs" / r["track"] / r["dataset"] / r["method"] / r["variant"] / f"seed{r['seed']}"
        before = len(rep.problems)
        verify_run(run_dir, rep)
        if len(rep.problems) > before:
            continue
        metrics = _check(rep, io.read_csv, run_dir / "metrics.csv")
        rows = groups.get(tuple(str(r[k]) for k in RUN_KEYS))
        if metrics is not None and (rows is None or not _same_values(dict(zip(metrics.metric, metrics.value)),
                                                                     dict(zip(rows.metric, rows.value)))):
            rep.problems.append(f"{folder / 'summary.csv'}: the rows of {run_dir.relative_to(folder)} differ from "
                                f"{run_dir / 'metrics.csv'}")


def verify_results(folder, rep: Report | None = None) -> Report:
    """A profile's results folder (with runs/) or a published set (tables only)."""
    folder = Path(folder)
    published = not (folder / "runs").is_dir()
    rep = rep or Report(folder, "published set" if published else "profile results")
    _check_manifest(rep, folder, published)
    summary, runs = _read_tables(rep, folder)
    _check_tables(rep, folder, summary, runs)
    if not published:
        _cross_check_runs(rep, folder, summary, runs)
    return rep


def _has_summary(folder: Path) -> bool:
    try:
        return io.tidy_path(folder, "summary.csv", missing_ok=True) is not None
    except FileExistsError:  # both forms: a set all the same, whose check reports it
        return True


def verify(path) -> Report:
    """Verify a run folder, a profile's results, a published set, or a folder of published sets."""
    path = Path(path)
    if not path.is_dir():
        rep = Report(path, "missing")
        rep.problems.append(f"{path}: no such folder")
        return rep
    if (path / "train.json").exists():
        return verify_run(path)
    if _has_summary(path) or (path / "runs").is_dir() or (path / io.MANIFEST).exists():
        return verify_results(path)
    sets = sorted(p for p in path.iterdir() if p.is_dir() and _has_summary(p))
    rep = Report(path, "folder of result sets")
    if not sets:
        rep.problems.append(f"{path}: neither a run folder, a results folder nor a folder of published sets")
        return rep
    rep.parts = [verify_results(p) for p in sets]
    return rep


def manifest_files(folder) -> list[str]:
    """The files a published set's manifest covers: all but the manifest and the rendered report."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != io.MANIFEST and p.relative_to(folder).parts[0] != REPORT_DIR
                  and not p.name.startswith("."))


def write_manifest(folder) -> Path:
    """SHA256SUMS of a published set (call at the end of `lossbench publish`): every file but the
    rendered report, which `snakemake results/published/<name>/report/index.html` may rebuild."""
    return io.write_manifest(folder, manifest_files(folder))


def compress_tables(folder) -> list[str]:
    """Store the tidy CSVs of a set published before `lossbench publish` gzipped them as <name>.gz
    (io.write_gzip), and rewrite its SHA256SUMS: every file must first match the old manifest, and each
    .gz's decompressed bytes the sha256 it recorded for the plain file, before that file is removed.
    Returns the names compressed (none for a set already compressed; rerun after an interruption)."""
    from lossbench.runner import GZIPPED

    folder = Path(folder)
    old = io.read_manifest(folder)
    if old is None:
        raise FileNotFoundError(2, "no manifest to check the tables against", str(folder / io.MANIFEST))
    todo = [n for n in GZIPPED if n in old]
    hint = "decompressed, it is not the table the set published"
    done = [n for n in todo if not (folder / n).exists() and (folder / (n + io.GZ)).exists()]  # by an interrupted call
    for name in done:
        io.check_sha256(folder / (name + io.GZ), old[name], folder / io.MANIFEST, hint, decompressed=True)
    io.check_recorded(folder, {n: sha for n, sha in old.items() if n not in done}, folder / io.MANIFEST,
                      "the set changed since it was published: not compressed")
    for name in todo:
        if name not in done:
            packed = io.write_gzip(folder / (name + io.GZ), folder / name)
            io.check_sha256(packed, old[name], folder / io.MANIFEST, hint, decompressed=True)
            (folder / name).unlink()
    if todo:
        io.write_manifest(folder, [n + io.GZ if n in todo else n for n in old])
    return todo


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("results", nargs="+", help="results/<profile>, results/published/<name>, results/published, "
                                                   "or a run folder")
    parser.add_argument("--strict", action="store_true", help="warnings (what cannot be checked) fail too")
    parser.add_argument("--quiet", action="store_true", help="print problems only")
    return parser


def run(args) -> int:
    """The command: print what each folder holds and what failed; 0 when all verify, else 1."""
    ok = True
    for path in args.results:
        rep = verify(path)
        ok &= rep.ok(args.strict)
        if args.quiet:
            for p in rep.all_problems():
                print(f"problem: {p}")
        else:
            print(rep.format(args.strict))
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="lossbench verify", description=__doc__,
                                                   formatter_class=argparse.RawDescriptionHelpFormatter))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
