"""Command line: list what is registered, validate a config, run one training run by hand.

    lossbench list [methods|datasets|tracks] [--config config/smoke.yaml]
    lossbench validate config/full.yaml
    lossbench run --dataset mnist1d_lt100 --method focal --seed 0 [--config ...] [--track ...]
                  [--set gamma=1.0] [--out DIR] [--device cpu]
    lossbench publish results/full full_2026_11 --config config/full.yaml [--note "..."]
    lossbench plan [config/full.yaml] [--table config/throughput.yaml] [--format json]
    lossbench verify results/smoke [--strict]      (or results/published, one set, one run folder)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

import data
import methods
from lossbench import config as lbconfig

DEFAULT_CONFIG = lbconfig.ROOT / "config" / "smoke.yaml"


def _list(args):
    if args.what in ("methods", "all"):
        print("methods:")
        for name in methods.REGISTRY:
            spec = methods.get(name)
            print(f"  {name:18s} {spec.kind:10s} {spec.card:4s} {spec.paper} — {spec.summary}")
    if args.what in ("datasets", "all"):
        print("datasets:")
        for name in data.names():
            print(f"  {name:16s} {data.describe(name)}")
    if args.what in ("tracks", "all"):
        cfg, tracks = lbconfig.load_profile(args.config)
        print(f"tracks in {args.config} (profile {cfg['profile']}):")
        for name, t in tracks.items():
            ds = [d for p in t["protocols"].values() for d in p["datasets"]]
            print(f"  {name}: {len(ds)} datasets x {len(t['methods'])} methods x {len(t['seeds'])} seeds")
            print(f"    datasets: {', '.join(ds)}")


def _validate(args):
    """The profile, its tracks and benchmarks, the dataset registry and every run's resolved protocol;
    anything else that escapes the checks is still one line (and a bug in them: please report it)."""
    try:
        lbconfig.load_profile(args.config)
    except (lbconfig.ConfigError, KeyError):
        raise
    except Exception as e:  # noqa: BLE001 (one line, never a traceback, for a config)
        raise lbconfig.ConfigError(f"{args.config}: {type(e).__name__}: {e} (a config the checks missed: "
                                   "please report it)") from None
    print(f"{args.config}: ok")


def _parse_sets(pairs):
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _run(args):
    import torch

    from lossbench import runner

    cfg, tracks = lbconfig.load_profile(args.config)
    track_name = args.track or next(iter(tracks))
    if track_name not in tracks:
        raise SystemExit(f"unknown track {track_name!r}; tracks in {args.config}: {', '.join(tracks)}")
    track = dict(tracks[track_name])
    if args.method not in track["methods"]:
        track["methods"] = track["methods"] + [args.method]
        lbconfig.check_track(track, "--method")
    overrides = _parse_sets(args.set)
    if overrides:
        track["method_hparams"] = {**track.get("method_hparams", {}), args.method: overrides}
        lbconfig.check_track(track, "--set")
    if track["task"] != "classification":  # its runs need the track's stages (SFT model, samples)
        raise SystemExit(f"`lossbench run` trains classification runs only; a {track['task']} run depends on its "
                         f"stages, so ask Snakemake for it, e.g. snakemake results/smoke/runs/{track_name}/"
                         f"<dataset>/<method>/<variant>/seed<seed>/run.json")
    run = lbconfig.resolve_run(track, args.dataset, args.method, args.seed)
    source = data.source_of(args.dataset)
    prepared = lbconfig.ROOT / "resources" / "data" / source / "prepared.npz"
    if not prepared.exists():
        entry = data.source_entry(source)
        raw = None
        if entry["kind"] == "download":
            raw = lbconfig.ROOT / "resources" / "downloads" / source
            data.download_source(source, raw / entry["archive"])
        runner.prepare_source(source, prepared, raw_dir=raw)
    out = Path(args.out or lbconfig.ROOT / "results" / "manual" / track_name / args.dataset / args.method / f"seed{args.seed}")
    torch.set_num_threads(args.threads)
    info = runner.train_run(run, {"data": prepared}, out, device=args.device or cfg["device"])
    metrics = runner.evaluate_run(out)
    print(json.dumps({"run_dir": str(out), "status": info["status"], "hparams": run["hparams"],
                      "metrics": dict(zip(metrics.metric, metrics.value))}, indent=2))


BENCHMARK_FILES = ("kernels.csv", "kernels.json")  # where the profile ran a benchmark track


def _publish(args):
    """Freeze a profile's tidy results (plus the configs that made them) into results/published/<name>
    and render them with the report builder; published numbers are never edited afterwards."""
    import shutil

    from report.build import build_report

    src, dest = Path(args.results), Path(args.into) / args.name
    if dest.exists():
        raise SystemExit(f"{dest} exists: published results are frozen; choose a new name")
    prov = json.loads((src / "provenance.json").read_text())
    if prov.get("git_dirty"):
        raise SystemExit("these results come from a dirty working tree; rerun from a clean commit to publish")
    (dest / "config").mkdir(parents=True)
    from lossbench.runner import TIDY_FILES

    for name in TIDY_FILES + tuple(n for n in BENCHMARK_FILES if (src / n).exists()):
        shutil.copy2(src / name, dest / name)
    shutil.copy2(args.config, dest / "config" / Path(args.config).name)
    cfg = lbconfig.load_profile(args.config)[0]
    for track_path in [*(cfg.get("tracks") or {}).values(), *(cfg.get("benchmarks") or {}).values()]:
        shutil.copy2(lbconfig.ROOT / track_path, dest / "config" / Path(track_path).name)
    from lossbench import verify

    verify.write_manifest(dest)  # SHA256SUMS: `lossbench verify` proves the set was never edited
    build_report(dest, dest / "report", title=f"lossbench — published: {args.name}", note=args.note)
    print(f"published {src} -> {dest}; report {dest / 'report' / 'index.html'}")


def _plan(args):
    from lossbench import plan

    try:
        p = plan.plan(args.config, args.table)
    except plan.PlanError as e:
        raise lbconfig.ConfigError(str(e)) from None
    print(json.dumps(p, indent=2) if args.format == "json" else plan.format_text(p))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lossbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="list registered methods, datasets, tracks")
    p.add_argument("what", nargs="?", default="all", choices=["all", "methods", "datasets", "tracks"])
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=_list)
    p = sub.add_parser("validate", help="validate a profile config and its tracks")
    p.add_argument("config")
    p.set_defaults(func=_validate)
    p = sub.add_parser("run", help="train and evaluate one run outside Snakemake")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--track")
    p.add_argument("--dataset", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="HP=VALUE", help="override a hyperparameter")
    p.add_argument("--device")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out")
    p.set_defaults(func=_run)
    p = sub.add_parser("publish", help="freeze a profile's results into results/published/<name>")
    p.add_argument("results", help="e.g. results/full")
    p.add_argument("name")
    p.add_argument("--config", required=True, help="the profile config that produced the results")
    p.add_argument("--note", help="shown at the top of the published report")
    p.add_argument("--into", default=lbconfig.ROOT / "results" / "published", help="parent folder")
    p.set_defaults(func=_publish)
    p = sub.add_parser("plan", help="jobs per track and rule (Snakemake's dry run) and their estimated device-hours")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="a profile or tier config, or a profiles/<name> folder")
    p.add_argument("--table", default=lbconfig.ROOT / "config" / "throughput.yaml", help="the throughput table")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=_plan)
    from lossbench import verify

    p = sub.add_parser("verify", help="re-check a results folder (profile, published set, run) against its checksums")
    verify.add_arguments(p)
    p.set_defaults(func=verify.run)
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
        if isinstance(rc, int):
            return rc
    except (lbconfig.ConfigError, KeyError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
