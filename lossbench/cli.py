"""lossbench command line: list what is registered, validate a profile, run a subset of a profile's
runs through the Snakemake DAG, rebuild a report, publish, plan and verify results.

    lossbench list [methods|datasets|tracks] [--config config/smoke.yaml] [--format json]
    lossbench validate config/full.yaml
    lossbench run --dataset mnist1d_lt100 --method focal [--seed 0] [--set gamma=1.0] [--name NAME]
                  [--config config/smoke.yaml] [--track TRACK] [--device cpu] [--cores N] [--dry-run]
    lossbench report results/smoke [--out DIR] [--title ...] [--note ...]
    lossbench publish results/full full_2026_11 --config config/full.yaml [--note "..."]
    lossbench publish --compress-existing results/published/<set>   (gzip a set published plain)
    lossbench plan [config/full.yaml] [--table config/throughput.yaml] [--format json]
    lossbench verify results/smoke [--strict]      (or results/published, one set, one run folder)
    lossbench --version

`lossbench run` runs any track's runs (classification, preference, lm_pretraining, grokking): it finds
the track of each --dataset in the profile (--config, default config/smoke.yaml; --track when a dataset
is in several tracks), writes a subset profile to results/<name>/subset.yaml (name: --name, default
run_<track>_<dataset>_<method>) and runs `python -m snakemake --configfile results/<name>/subset.yaml
--workflow-profile none --force-use-threads --cores N`, so the stages a run needs (preference: SFT
model, samples; LM: reference model) are built as in the full DAG, into results/<name>/ only. It prints
each run's metrics (results/<name>/summary.csv) and the report's path. Running the same name again
reruns only what changed (another seed, --set values). --dry-run prints the subset profile and
Snakemake's plan and writes nothing.

Subsets in the DAG (config/schema/config.schema.yaml, lossbench/config.py select): a profile may hold
`only_tracks` (track and benchmark names), `datasets` and `methods` (glob filters; one that selects
nothing is an error), `seeds` (replace the tracks' seeds) and `method_hparams` ({method: {key: value}}).
Results go to results/<profile>/, so a subset gets its own profile name; given with --config it must
name it there too, or Snakemake stops with a config error before any job (it would otherwise replace
results/<profile>/'s tables and report with the subset's):

    snakemake --cores 2 --config profile=focal_only only_tracks=[classification] \\
        datasets=[mnist1d_lt100] methods=[erm,focal] seeds=[0]         # -> results/focal_only/

Rerun one run of a profile whose files are up to date (Snakemake 9): the targets first, then
--forcerun and the rule (--forcerun takes any number of values, so a target after it is read as a rule
name and the whole DAG is planned, ~730 jobs for the smoke profile):

    snakemake --cores 2 results/smoke/runs/classification/mnist1d_lt100/focal/default/seed0/run.json \\
        --forcerun train_run
    # or every run of one method: lossbench run --dataset mnist1d_lt100 --method focal --seed 0 1 2

Exit status: 0 ok; 1 a run or Snakemake failed (or verify found problems); 2 usage or config error
(unknown name, missing file); 3 the device asked for cannot be used (e.g. --device cuda without CUDA);
141 stdout closed early (`lossbench list | head`); 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "smoke.yaml"

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DEVICE = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE (what a shell reports)


class CLIError(Exception):
    """A one-line error and the exit status it ends with."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def version() -> str:
    """The installed distribution's version, else the package's __version__."""
    try:
        from importlib.metadata import PackageNotFoundError, version as dist_version

        return dist_version("lossbench")
    except PackageNotFoundError:
        import lossbench

        return getattr(lossbench, "__version__", "unknown")


# ---------------------------------------------------------------- list, validate
def _list(args):
    from lossbench import data, methods

    what = args.what
    out = {}
    if what in ("methods", "all"):
        out["methods"] = [{"name": n, "kind": methods.get(n).kind, "docs": methods.get(n).docs_path,
                           "paper": methods.get(n).paper, "summary": methods.get(n).summary} for n in methods.REGISTRY]
    if what in ("datasets", "all"):
        out["datasets"] = [{"name": n, "description": data.describe(n)} for n in data.names()]
    if what in ("tracks", "all"):
        from lossbench.config import track_datasets

        cfg, tracks = _load_profile(args.config)
        out["profile"] = {"config": str(args.config), "name": cfg["profile"]}
        out["tracks"] = {name: {"task": t["task"], "datasets": track_datasets(t), "methods": t["methods"],
                                "seeds": t["seeds"]} for name, t in tracks.items()}
    if args.format == "json":
        print(json.dumps(out, indent=2))
        return EXIT_OK
    if "methods" in out:
        print("methods:")
        for m in out["methods"]:
            print(f"  {m['name']:18s} {m['kind']:10s} {m['docs']:32s} {m['paper']} — {m['summary']}")
    if "datasets" in out:
        print("datasets:")
        for d in out["datasets"]:
            print(f"  {d['name']:16s} {d['description']}")
    if "tracks" in out:
        print(f"tracks in {args.config} (profile {out['profile']['name']}):")
        for name, t in out["tracks"].items():
            print(f"  {name}: {len(t['datasets'])} datasets x {len(t['methods'])} methods x {len(t['seeds'])} seeds")
            print(f"    datasets: {', '.join(t['datasets'])}")
    return EXIT_OK


def _load_profile(path):
    from lossbench import config as lbconfig

    return lbconfig.load_profile(path)


def _validate(args):
    """The profile, its tracks and benchmarks, the dataset registry and every run's resolved protocol;
    anything else that escapes the checks is still one line (and a bug in them: please report it)."""
    from lossbench import config as lbconfig

    try:
        lbconfig.load_profile(args.config)
    except (lbconfig.ConfigError, KeyError):
        raise
    except Exception as e:  # noqa: BLE001 (one line, never a traceback, for a config)
        raise lbconfig.ConfigError(f"{args.config}: {type(e).__name__}: {e} (a config the checks missed: "
                                   "please report it)") from None
    print(f"{args.config}: ok")
    return EXIT_OK


# ---------------------------------------------------------------- run (a subset through Snakemake)
SUBSET_FILE = "subset.yaml"  # a results folder lossbench run wrote holds its subset profile


def _parse_sets(pairs) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise CLIError(f"--set expects HP=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def infer_tracks(tracks: dict, datasets: list[str], track: str | None, where: str) -> dict[str, list[str]]:
    """{track: [datasets]} for the chosen datasets: each dataset's track is the profile's track whose
    protocols list it (--track when several do). CLIError (exit 2) naming the valid choices."""
    from lossbench import config as lbconfig
    from lossbench import data

    if track is not None and track not in tracks:
        raise lbconfig.unknown_name("track", track, tracks, f"{where}: --track")
    owners = {name: lbconfig.track_datasets(t) for name, t in tracks.items()}
    valid = [d for ds in owners.values() for d in ds]
    out: dict[str, list[str]] = {}
    for d in datasets:
        having = [name for name, ds in owners.items() if d in ds]
        if track is not None:
            if d not in owners[track]:
                hint = f" (it is in track {', '.join(having)})" if having else ""
                raise lbconfig.unknown_name(f"dataset of track {track}{hint}", d, owners[track], where)
            having = [track]
        if not having:
            if d in data.names():
                raise CLIError(f"{where}: no track of this profile runs dataset {d!r} (a registered "
                               f"{data.dataset_entry(d).get('task', 'classification')} dataset); pass --config with "
                               f"a profile that does. Datasets here: {', '.join(valid)}")
            raise lbconfig.unknown_name("dataset", d, valid, where)
        if len(having) > 1:
            raise CLIError(f"{where}: dataset {d!r} is in tracks {', '.join(having)}; choose one with --track")
        out.setdefault(having[0], []).append(d)
    return out


def _default_name(selected: dict[str, list[str]], chosen_methods: list[str]) -> str:
    import hashlib

    parts = ["run", *selected, *(d for ds in selected.values() for d in ds), *chosen_methods]
    name = "_".join(parts)
    if len(name) > 80:  # many datasets or methods: a short readable head and a hash of the rest
        name = f"{name[:60]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return name


def _check_device(device: str) -> None:
    """The device a run asks for exists (exit 3 otherwise); torch is imported only for a GPU."""
    if device == "cpu":
        return
    from lossbench import devices

    try:
        devices.resolve(device)
    except devices.DeviceError as e:
        raise CLIError(f"device: {e}", EXIT_DEVICE) from None


def subset_profile(args) -> tuple[dict, Path]:
    """The subset profile `lossbench run` writes (validated) and its results folder."""
    import re

    from lossbench import config as lbconfig

    cfg, tracks = lbconfig.load_profile(args.config)
    where = str(args.config)
    selected = infer_tracks(tracks, args.dataset, args.track, where)
    name = args.name or _default_name(selected, args.method)
    if not re.match(lbconfig.NAME_PATTERN, name):
        raise CLIError(f"--name {name!r} is not a valid profile name: use lower-case letters, digits and _ only")
    results = ROOT / "results" / name
    if name == cfg["profile"] or (results.exists() and not (results / SUBSET_FILE).exists()):
        raise CLIError(f"--name {name}: results/{name}/ holds results not written by `lossbench run` "
                       f"(a profile's or a published set's); choose another --name")
    device = args.device or cfg["device"]
    sub = {"profile": name, "device": device,
           "tracks": {t: cfg["tracks"][t] for t in selected},
           "datasets": [d for ds in selected.values() for d in ds],
           "methods": list(args.method)}
    if cfg.get("evidence"):  # a subset of a profile carries the profile's evidence level
        sub["evidence"] = cfg["evidence"]
    if args.seed:
        sub["seeds"] = list(dict.fromkeys(args.seed))
    overrides = _parse_sets(args.set)
    if overrides:
        sub["method_hparams"] = {m: overrides for m in args.method}
    if cfg.get("device_slots"):
        sub["device_slots"] = cfg["device_slots"]
    lbconfig.validate_schema(sub, "config", f"{where} (subset)")
    chosen, _ = lbconfig.select(sub, lbconfig.load_tracks(sub, where), {}, where)
    if not chosen:
        raise CLIError(f"{where}: the subset selects no runs")
    return sub, results


def _subset_runs(sub: dict) -> list[tuple]:
    from lossbench import config as lbconfig

    tracks, _ = lbconfig.select(sub, lbconfig.load_tracks(sub, "subset"), {}, "subset")
    return lbconfig.runs(tracks, sub.get("datasets"), sub.get("methods"))


def _write_subset(sub: dict, path: Path, argv: list[str]) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    head = (f"# Written by: lossbench {' '.join(argv)}\n"
            f"# Rerun: snakemake --configfile {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
            "--workflow-profile none --force-use-threads --cores N\n")
    path.write_text(head + yaml.safe_dump(sub, sort_keys=False))


def snakemake_command(configfile: Path, cores: int, dry_run: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "--configfile", str(configfile), "--cores", str(cores),
           "--workflow-profile", "none", "--force-use-threads", "--scheduler", "greedy", "--keep-going",
           "--rerun-incomplete", "--show-failed-logs"]
    return cmd + (["--dry-run", "--quiet", "rules"] if dry_run else [])


def _run_direct(args):
    """--direct: one classification run in this process, no Snakemake, no report (~2.5x faster for a
    tiny run: no DAG start, no report build); prints the run's JSON."""
    import torch

    from lossbench import config as lbconfig
    from lossbench import data, runner

    if len(args.dataset) > 1 or len(args.method) > 1 or len(args.seed) > 1:
        raise CLIError("--direct trains one run: give one --dataset, one --method and at most one --seed")
    cfg, tracks = lbconfig.load_profile(args.config)
    (track_name, _), = infer_tracks(tracks, args.dataset, args.track, str(args.config)).items()
    track = dict(tracks[track_name])
    if track["task"] != "classification":  # its runs need the track's stages (SFT model, samples, reference)
        raise CLIError(f"--direct trains classification runs only; {args.dataset[0]!r} is a {track['task']} dataset "
                       f"(track {track_name}): drop --direct to run it and its stages through Snakemake")
    method, seed = args.method[0], (args.seed or [0])[0]
    if method not in track["methods"]:
        track["methods"] = track["methods"] + [method]
        lbconfig.check_track(track, "--method")
    overrides = _parse_sets(args.set)
    if overrides:
        track["method_hparams"] = {**track.get("method_hparams", {}), method: overrides}
        lbconfig.check_track(track, "--set")
    device = args.device or cfg["device"]
    _check_device(device)
    run = lbconfig.resolve_run(track, args.dataset[0], method, seed)
    source = data.source_of(args.dataset[0])
    prepared = ROOT / "resources" / "data" / source / "prepared.npz"
    if not prepared.exists():
        entry = data.source_entry(source)
        raw = None
        if entry["kind"] == "download":
            raw = ROOT / "resources" / "downloads" / source
            data.download_source(source, raw / entry["archive"])
        runner.prepare_source(source, prepared, raw_dir=raw)
    out = Path(args.out or ROOT / "results" / "manual" / track_name / args.dataset[0] / method / f"seed{seed}")
    torch.set_num_threads(args.cores)
    info = runner.train_run(run, {"data": prepared}, out, device=device)
    metrics = runner.evaluate_run(out)
    print(json.dumps({"run_dir": str(out), "status": info["status"], "hparams": run["hparams"],
                      "metrics": dict(zip(metrics.metric, metrics.value))}, indent=2))
    return EXIT_OK if info["status"] == "ok" else EXIT_FAILED


def _run(args):
    if args.direct:
        return _run_direct(args)
    if args.out:
        raise CLIError("--out goes with --direct; a Snakemake run writes to results/<name>/ (--name)")
    sub, results = subset_profile(args)
    _check_device(sub["device"])
    argv = ["run", *sys.argv[2:]] if args.argv is None else ["run", *args.argv[1:]]
    if args.dry_run:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / SUBSET_FILE
            _write_subset(sub, path, argv)
            print(f"# subset profile (results/{sub['profile']}/{SUBSET_FILE}; not written: dry run)")
            print(path.read_text(), end="")
            for run in _subset_runs(sub):
                print(f"# would run: results/{sub['profile']}/runs/{'/'.join(map(str, run[:4]))}/seed{run[4]}")
            cmd = snakemake_command(path, args.cores, dry_run=True)
            print(f"# {' '.join(cmd)}", flush=True)
            done = subprocess.run(cmd, cwd=ROOT)
        if done.returncode:
            raise CLIError(f"snakemake --dry-run failed (exit {done.returncode}); see its message above", EXIT_FAILED)
        return EXIT_OK
    path = results / SUBSET_FILE
    _write_subset(sub, path, argv)
    cmd = snakemake_command(path, args.cores)
    print(f"lossbench: {' '.join(cmd)}", file=sys.stderr, flush=True)
    try:  # Snakemake's log on stderr; stdout: the metrics
        log_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced sys.stderr (pytest's capsys)
        log_fd = 2
    done = subprocess.run(cmd, cwd=ROOT, stdout=log_fd)
    summary = results / "summary.csv"
    rows = _print_metrics(summary, args.format) if summary.exists() else []
    report = results / "report" / "index.html"
    if report.exists():
        print(f"report: {report}", file=sys.stderr if args.format == "json" else sys.stdout)
    if done.returncode:
        raise CLIError(f"snakemake failed (exit {done.returncode}); its log is above, the runs' logs under "
                       f"results/{sub['profile']}/logs/", EXIT_FAILED)
    failed = sorted({r["run"] for r in rows if r["status"] not in ("ok",)})
    if failed:
        raise CLIError(f"{len(failed)} run(s) did not finish ok: {', '.join(failed)} (results/{sub['profile']}/logs/)",
                       EXIT_FAILED)
    return EXIT_OK


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _print_metrics(summary: Path, fmt: str) -> list[dict]:
    import pandas as pd

    df = pd.read_csv(summary)
    keys = [k for k in ("track", "dataset", "method", "variant", "seed") if k in df.columns]
    rows = []
    for key, g in df.groupby(keys, sort=False):
        run = "/".join(map(str, key))
        status = str(g["status"].iloc[0]) if "status" in g else "ok"
        rows.append({"run": run, **dict(zip(keys, (k.item() if hasattr(k, "item") else k for k in key))),
                     "status": status, "metrics": {m: (None if pd.isna(v) else float(v))
                                                   for m, v in zip(g["metric"], g["value"])}})
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return rows
    for r in rows:
        print(f"{r['run']}  ({r['status']})")
        for m, v in r["metrics"].items():
            print(f"  {m:32s} {'nan' if v is None else f'{v:.4g}'}")
    return rows


# ---------------------------------------------------------------- report, publish, plan
def _report(args):
    from lossbench import io
    from lossbench.report.build import build_report

    results = Path(args.results)
    if io.tidy_path(results, "summary.csv", missing_ok=True) is None:
        raise CLIError(f"{results}: no summary.csv(.gz) here; give a results folder (results/<profile>, "
                       f"results/published/<name>)")
    out = Path(args.out) if args.out else results / "report"
    title = args.title or f"lossbench — {results.resolve().name}"
    index = build_report(results, out, title=title, note=args.note)
    print(index)
    return EXIT_OK


# tables beside the runs' where the profile made them: a benchmark track's, the preference track's
# best-of-n overoptimisation curves
BENCHMARK_FILES = ("kernels.csv", "kernels.json", "overopt.csv")


def _publish(args):
    """Freeze a profile's tidy results (plus the configs that made them) into results/published/<name>
    and render them with the report builder; published numbers are never edited afterwards."""
    import shutil

    from lossbench import config as lbconfig
    from lossbench import io, verify
    from lossbench.report.build import build_report
    from lossbench.report.site import build_site
    from lossbench.runner import GZIPPED, TIDY_FILES

    if args.compress_existing:
        if args.results or args.name or args.config:
            raise CLIError("--compress-existing takes a published set only (no RESULTS, NAME or --config)")
        try:
            names = verify.compress_tables(args.compress_existing)
        except io.IntegrityError as e:
            raise CLIError(str(e), EXIT_FAILED) from None
        print(f"{args.compress_existing}: " + (f"{', '.join(names)} gzipped; {io.MANIFEST} rewritten" if names
                                               else "its tables are gzipped already"))
        return EXIT_OK
    if not (args.results and args.name and args.config):
        raise CLIError("publish needs RESULTS, NAME and --config (or --compress-existing SET)")
    src, dest = Path(args.results), Path(args.into) / args.name
    if dest.exists():
        raise CLIError(f"{dest} exists: published results are frozen; choose a new name", EXIT_FAILED)
    if not (src / "provenance.json").is_file():
        raise CLIError(f"{src}: no provenance.json here; give a profile's results folder (results/<profile>)")
    prov = json.loads((src / "provenance.json").read_text())
    if prov.get("git_dirty"):
        raise CLIError("these results come from a dirty working tree; rerun from a clean commit to publish",
                       EXIT_FAILED)
    cfg = lbconfig.load_profile(args.config)[0]
    (dest / "config").mkdir(parents=True)
    for name in TIDY_FILES + tuple(n for n in BENCHMARK_FILES if (src / n).exists()):
        if name in GZIPPED:  # the large tables, compressed (readers take either form: io.tidy_path)
            io.write_gzip(dest / (name + io.GZ), src / name)
        else:
            shutil.copy2(src / name, dest / name)
    shutil.copy2(args.config, dest / "config" / Path(args.config).name)
    for track_path in [*(cfg.get("tracks") or {}).values(), *(cfg.get("benchmarks") or {}).values()]:
        shutil.copy2(lbconfig.ROOT / track_path, dest / "config" / Path(track_path).name)
    verify.write_manifest(dest)  # SHA256SUMS: `lossbench verify` proves the set was never edited
    build_report(dest, dest / "report", title=f"lossbench — published: {args.name}", note=args.note)
    site = build_site(Path(args.into))  # the leaderboard site lists every set, this one included
    print(f"published {src} -> {dest}; report {dest / 'report' / 'index.html'}; site {site}")
    return EXIT_OK


def _plan(args):
    from lossbench import config as lbconfig
    from lossbench import plan

    try:
        p = plan.plan(args.config, args.table)
    except plan.PlanError as e:
        raise lbconfig.ConfigError(str(e)) from None
    print(json.dumps(p, indent=2) if args.format == "json" else plan.format_text(p))
    return EXIT_OK


def _verify(args):
    from lossbench import verify

    return verify.run(args)


# ---------------------------------------------------------------- parser
class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' line breaks and shows defaults (not a None one, nor one the help states)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, []) or "default" in text:
            return text
        return super()._get_help_string(action)


def _sub(sub, name, help_, epilog, description=None):
    return sub.add_parser(name, help=help_, description=description or help_[:1].upper() + help_[1:] + ".",
                          epilog="examples:\n" + epilog, formatter_class=_Formatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossbench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="lossbench: a reproducible benchmark suite for training objectives (Snakemake DAG).",
        epilog="examples:\n"
               "  lossbench list methods\n"
               "  lossbench run --dataset mnist1d_lt100 --method focal --seed 0\n"
               "  lossbench report results/smoke\n"
               "run `lossbench COMMAND --help` for a command's options; the module docstring of lossbench/cli.py\n"
               "documents subsets and exit codes (0 ok, 1 failed run, 2 usage/config, 3 device).")
    parser.add_argument("--version", action="version", version=f"lossbench {version()}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = _sub(sub, "list", "list registered methods and datasets, and a profile's tracks",
             "  lossbench list\n  lossbench list methods\n  lossbench list tracks --config config/full.yaml\n"
             "  lossbench list datasets --format json | python -c 'import json,sys; print(len(json.load(sys.stdin)[\"datasets\"]))'")
    p.add_argument("what", nargs="?", default="all", choices=["all", "methods", "datasets", "tracks"],
                   help="what to list")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="profile whose tracks are listed")
    p.add_argument("--format", choices=("text", "json"), default="text", help="json: one object for scripts")
    p.set_defaults(func=_list)

    p = _sub(sub, "validate", "validate a profile config, its tracks and every run's resolved protocol",
             "  lossbench validate config/full.yaml\n  lossbench validate results/run_x/subset.yaml")
    p.add_argument("config", help="profile config (YAML)")
    p.set_defaults(func=_validate)

    p = _sub(sub, "run", "run chosen datasets, methods and seeds of a profile through Snakemake, into "
                         "results/<name>/",
             "  lossbench run --dataset mnist1d_lt100 --method focal --seed 0 --set gamma=1.0\n"
             "  lossbench run --dataset synthpref --method dpo --dry-run          # preference: SFT + samples too\n"
             "  lossbench run --dataset shakespeare_mix --method prior --seed 0 1  # LM: reference model too\n"
             "  lossbench run --dataset mod113_add_f40 --method orthograd --name grok_try --cores 2\n"
             "  lossbench run --config config/full.yaml --dataset cifar10_lt100 --method logit_adjust --device cuda\n"
             "  lossbench run --dataset mnist1d_sym40 --method focal --seed 1 --direct --out /tmp/r  # no Snakemake",
             description="Write a subset profile (the datasets' tracks, the datasets, methods, seeds and --set "
                         "values) to results/<name>/subset.yaml and run Snakemake on it: the run and every stage "
                         "it needs (preference: SFT model, samples; LM: reference model) are built into "
                         "results/<name>/ only. Prints each run's metrics and the report's path.")
    p.add_argument("--dataset", nargs="+", required=True, metavar="DATASET",
                   help="dataset(s); the track is the profile's track that runs each")
    p.add_argument("--method", nargs="+", required=True, metavar="METHOD", help="method(s) of that track")
    p.add_argument("--seed", nargs="+", type=int, default=[], metavar="SEED",
                   help="seed(s) to run (default: the track's seeds)")
    p.add_argument("--set", action="append", default=[], metavar="HP=VALUE",
                   help="override a hyperparameter of the chosen method(s); repeatable (values are YAML)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="profile whose tracks and protocols the runs follow")
    p.add_argument("--track", help="the track, when a dataset is in several of the profile's tracks")
    p.add_argument("--name", help="profile name of the subset, i.e. results/<name>/ "
                                  "(default run_<track>_<dataset>_<method>)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="device (default: the profile's)")
    p.add_argument("--cores", type=int, default=_cpus(), help="Snakemake --cores")
    p.add_argument("--dry-run", "-n", action="store_true", help="print the subset profile and the jobs Snakemake "
                                                                  "would run; write nothing")
    p.add_argument("--format", choices=("text", "json"), default="text", help="how the metrics are printed")
    p.add_argument("--direct", action="store_true", help="classification only: train one run in this process "
                                                         "(no Snakemake, no report), print its JSON")
    p.add_argument("--out", help="with --direct: the run folder (default results/manual/<track>/<dataset>/"
                                 "<method>/seed<seed>)")
    p.set_defaults(func=_run)

    p = _sub(sub, "report", "rebuild the HTML report of a results folder",
             "  lossbench report results/smoke\n"
             "  lossbench report results/published/full_2026_11 --out /tmp/report --note 'draft'")
    p.add_argument("results", help="a results folder with summary.csv (results/<profile>, results/published/<name>)")
    p.add_argument("--out", help="where index.html and its plots go (default RESULTS/report)")
    p.add_argument("--title", help="the report's title (default: lossbench — <folder name>)")
    p.add_argument("--note", help="a sentence shown under the title")
    p.set_defaults(func=_report)

    p = _sub(sub, "publish", "freeze a profile's results into results/published/<name>",
             "  lossbench publish results/full full_2026_11 --config config/full.yaml --note 'first full run'\n"
             "  lossbench publish --compress-existing results/published/full_2026_11  # a set published plain")
    p.add_argument("results", nargs="?", help="e.g. results/full")
    p.add_argument("name", nargs="?", help="name of the published set")
    p.add_argument("--config", help="the profile config that produced the results (required)")
    p.add_argument("--compress-existing", metavar="SET",
                   help="instead: gzip the tidy CSVs of a set published before publish did, checked against "
                        "its SHA256SUMS, and rewrite that")
    p.add_argument("--note", help="shown at the top of the published report")
    p.add_argument("--into", default=ROOT / "results" / "published", help="parent folder")
    p.set_defaults(func=_publish)

    p = _sub(sub, "plan", "jobs per track and rule (Snakemake's dry run) and their estimated device-hours",
             "  lossbench plan config/full.yaml\n  lossbench plan profiles/full --format json")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="a profile or tier config, or a profiles/<name> folder")
    p.add_argument("--table", default=ROOT / "config" / "throughput.yaml", help="the throughput table")
    p.add_argument("--format", choices=("text", "json"), default="text", help="json: one object for scripts")
    p.set_defaults(func=_plan)

    from lossbench import verify

    p = _sub(sub, "verify", "re-check a results folder (profile, published set, run) against its checksums",
             "  lossbench verify results/smoke\n  lossbench verify results/published --strict")
    verify.add_arguments(p)
    p.set_defaults(func=_verify)
    return parser


def _stdout_closed() -> int:
    """stdout's reader went away (`lossbench list | head -1`): the standard handling
    (docs.python.org/3/library/signal.html#note-on-sigpipe): point stdout at devnull so the
    interpreter's final flush cannot fail again, and exit as a process killed by SIGPIPE would."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def main(argv=None):
    # first: run inside another checkout than the installed code's, exit with one line saying so
    import lossbench

    lossbench.check_checkout()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    from lossbench import config as lbconfig

    try:
        rc = args.func(args)
        sys.stdout.flush()
        return rc if isinstance(rc, int) else EXIT_OK
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print("lossbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except (lbconfig.ConfigError, KeyError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        print(f"error: {e.strerror}: {e.filename}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
