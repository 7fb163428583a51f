"""Config loading and validation: JSON Schema first, then the name checks a schema can't do.

The Snakefile validates with `snakemake.utils.validate` against the same schema files; the CLI
uses `jsonschema` directly. Every error names the offending key and lists the valid choices.
"""
from __future__ import annotations

import difflib
import fnmatch
import hashlib
import itertools
import json
from pathlib import Path

import yaml

import data
import methods
from lossbench import tasks
from lossbench.seeding import derive_seed

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "config" / "schema"


class ConfigError(ValueError):
    pass


def _load_yaml(path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def schema(name: str) -> dict:
    return _load_yaml(SCHEMA_DIR / f"{name}.schema.yaml")


def validate_schema(cfg: dict, name: str, where: str) -> None:
    _validate_part(cfg, schema(name), where)


def _validate_part(cfg: dict, subschema: dict, where: str) -> None:
    """jsonschema validation with the error's path, message and, for an unknown key, the valid keys."""
    import jsonschema

    try:
        jsonschema.validate(cfg, subschema)
    except jsonschema.ValidationError as e:
        path = "/".join(map(str, e.absolute_path)) or "(top level)"
        hint = ""
        if e.validator == "additionalProperties" and "properties" in e.schema:
            hint = f"; valid keys: {', '.join(e.schema['properties'])}"
        raise ConfigError(f"{where}: {path}: {e.message}{hint}") from None


def require_dataset_task(proto: dict, where: str, task: str) -> None:
    """Raise ConfigError for the first dataset of a protocol registered for another task."""
    for d in proto["datasets"]:
        own = data.dataset_entry(d).get("task", "classification")
        if own != task:
            raise ConfigError(f"{where}/datasets: {d!r} is a {own} dataset, not {task}")


def unknown_name(kind: str, name: str, valid, where: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(valid), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"{where}: unknown {kind} {name!r}.{hint} Valid: {', '.join(sorted(valid))}")


def check_track(track: dict, where: str = "track") -> None:
    """Checks beyond the schema: registered names, baseline in methods, valid hyperparameters."""
    for m in track["methods"]:
        if m not in methods.REGISTRY:
            raise unknown_name("method", m, methods.REGISTRY, f"{where}: methods")
    if track["baseline"] not in track["methods"]:
        raise ConfigError(f"{where}: baseline {track['baseline']!r} is not in methods {track['methods']}")
    for m, overrides in track.get("method_hparams", {}).items():
        if m not in track["methods"]:
            raise unknown_name("method in method_hparams", m, track["methods"], where)
        try:
            methods.get(m).hparams(overrides)
        except ValueError as e:
            raise ConfigError(f"{where}: method_hparams: {e}") from None
    try:
        task = tasks.get(track["task"])
    except KeyError as e:
        raise ConfigError(f"{where}: task: {e.args[0]}") from None
    for m in track["methods"]:
        spec = methods.get(m)
        if spec.kind not in task.METHOD_KINDS:
            raise ConfigError(f"{where}: method {m!r} is a {spec.kind!r} method; task {track['task']!r} runs "
                              f"kinds {', '.join(task.METHOD_KINDS)}")
        if spec.optimizer_hparams and not getattr(task, "METHOD_OPTIMIZER", False):
            raise ConfigError(f"{where}: method {m!r} sets the optimiser ({', '.join(spec.optimizer_hparams)}); "
                              f"task {track['task']!r} trains every method with the protocol's optimiser")
    _check_sweep(track, where)
    _check_optimizer_axis(track, where, task)
    for d, subset in track.get("dataset_methods", {}).items():
        for m in subset:
            if m not in track["methods"]:
                raise unknown_name(f"method in dataset_methods/{d}", m, track["methods"], where)
    seen = {}
    for pname, proto in track["protocols"].items():
        validate_schema(proto, task.PROTOCOL_SCHEMA, f"{where}: protocols/{pname}")
        for d in proto["datasets"]:
            if d not in data.names():
                raise unknown_name("dataset", d, data.names(), f"{where}: protocols/{pname}/datasets")
            if d in seen:
                raise ConfigError(f"{where}: dataset {d!r} is in protocols {seen[d]!r} and {pname!r}")
            seen[d] = pname
        view = protocol_track(track, pname)
        if view is not track:  # its own sweep: fair tuning among the methods its datasets run
            _check_sweep(view, f"{where}: protocols/{pname}", protocol_methods(track, pname))
        task.check_protocol(proto, f"{where}: protocols/{pname}", view)
    for d in track.get("dataset_methods", {}):
        if d not in seen:
            raise unknown_name("dataset in dataset_methods", d, seen, where)
    for pat in track.get("optimizer_axis", {}).get("datasets", []):
        if not any(_matches(d, [pat]) for d in seen):
            raise unknown_name("dataset in optimizer_axis/datasets", pat, seen, where)


DEFAULT_VARIANT = "default"
# Track keys a protocol may replace for its own datasets: a pretrained LM wants learning rates ~100x
# below a from-scratch toy's, and a GPU-heavy protocol may afford fewer seeds than a CPU one.
PROTOCOL_OVERRIDES = ("sweep", "seeds")
SWEEP_LR = "lr"  # a sweep key that sets the protocol's learning rate instead of a method hyperparameter
OPTIMIZER_KEY = "optimizer"  # a variant key naming an optimizer_axis entry (replaces the protocol's optimizer)
NOT_HPARAMS = (SWEEP_LR, OPTIMIZER_KEY)  # variant keys that configure the run, not the method


def variant_slug(point: dict) -> str:
    """`beta0.1-lr0.0003` for {beta: 0.1, lr: 3e-4}: a readable, path-safe name of a grid point."""
    if not point:
        return DEFAULT_VARIANT
    return "-".join(f"{k}{str(v).lower()}" for k, v in sorted(point.items()))


def variants(track: dict, method: str, dataset: str | None = None) -> dict[str, dict]:
    """{slug: grid point} of `method`: its sweep (or the default only), and for a method on the
    track's optimizer_axis each of those once more per axis optimizer (key OPTIMIZER_KEY) — on
    `dataset` only if it matches the axis's `datasets` globs (all datasets without the key)."""
    base = sweep_variants(track, method)
    axis = track.get("optimizer_axis")
    if not axis or method not in axis["methods"] or not _on_axis(axis, dataset):
        return base
    out = dict(base)
    for name in axis["optimizers"]:
        for point in base.values():
            point = {**point, OPTIMIZER_KEY: name}
            out[variant_slug(point)] = point
    return out


def _on_axis(axis: dict, dataset: str | None) -> bool:
    return dataset is None or _matches(dataset, axis.get("datasets", ["*"]))


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


def sweep_variants(track: dict, method: str) -> dict[str, dict]:
    """{slug: grid point} of `method`'s sweep, or the default only. A sweep entry is a mapping
    (hyperparameter -> values, product taken) or a list of explicit points."""
    grid = track.get("sweep", {}).get(method)
    if not grid:
        return {DEFAULT_VARIANT: {}}
    if isinstance(grid, list):  # explicit points, for hyperparameters that move together
        return {variant_slug(p): p for p in grid}
    keys = sorted(grid)
    return {variant_slug(p): p for p in (dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys)))}


def protocol_track(track: dict, pname: str) -> dict:
    """The track as protocol `pname`'s datasets see it: the protocol's own PROTOCOL_OVERRIDES keys
    replace the track's (the track itself when it has none)."""
    proto = track["protocols"][pname]
    own = {k: proto[k] for k in PROTOCOL_OVERRIDES if k in proto}
    return {**track, **own} if own else track


def methods_on(track: dict, dataset: str) -> list[str]:
    """The methods that run on `dataset`: its dataset_methods entry, else all the track's."""
    return track.get("dataset_methods", {}).get(dataset, track["methods"])


def protocol_methods(track: dict, pname: str) -> list[str]:
    """The methods that run on at least one of protocol `pname`'s datasets (dataset_methods)."""
    ran = {m for d in track["protocols"][pname]["datasets"] for m in methods_on(track, d)}
    return [m for m in track["methods"] if m in ran]


def _check_sweep(track: dict, where: str, names: list[str] | None = None) -> None:
    """Fair tuning: with a sweep, every method (of `names`, default the track's) has a grid and all
    grids have the same size."""
    sweep = track.get("sweep")
    if not sweep:
        return
    names = track["methods"] if names is None else names
    for m in sweep:
        if m not in track["methods"]:
            raise unknown_name("method in sweep", m, track["methods"], where)
    missing = [m for m in names if m not in sweep]
    if missing:
        raise ConfigError(f"{where}: sweep: every method needs a grid (fair tuning); missing {missing}")
    sizes = {m: len(sweep_variants(track, m)) for m in names}
    if len(set(sizes.values())) > 1:
        raise ConfigError(f"{where}: sweep: grids must have the same size for every method (fair tuning); got {sizes}")
    for m in names:
        for slug, point in sweep_variants(track, m).items():
            try:
                methods.get(m).hparams({**track.get("method_hparams", {}).get(m, {}),
                                        **{k: v for k, v in point.items() if k not in NOT_HPARAMS}})
            except ValueError as e:
                raise ConfigError(f"{where}: sweep/{m} ({slug}): {e}") from None


def _check_optimizer_axis(track: dict, where: str, task) -> None:
    axis = track.get("optimizer_axis")
    if not axis:
        return
    if not getattr(task, "OPTIMIZER_AXIS", False):
        raise ConfigError(f"{where}: optimizer_axis: task {track['task']!r} has no optimizer axis")
    for m in axis["methods"]:
        if m not in track["methods"]:
            raise unknown_name("method in optimizer_axis", m, track["methods"], where)
    if axis["baseline"] not in axis["optimizers"]:
        raise unknown_name("optimizer_axis baseline", axis["baseline"], axis["optimizers"], where)
    from lossbench.optim import OPTIMIZERS

    for name, cfg in axis["optimizers"].items():
        if cfg["name"] not in OPTIMIZERS:
            raise unknown_name(f"optimizer in optimizer_axis/{name}", cfg["name"], OPTIMIZERS, where)
        _validate_part(cfg, schema(task.PROTOCOL_SCHEMA)["properties"]["optimizer"],
                       f"{where}: optimizer_axis/optimizers/{name}")


EXTENDS = "extends"  # a track file's key naming the track file it starts from


def track_yaml(path) -> dict:
    """A track file's mapping. With `extends: <track file>` (relative to the repository) it starts
    from that file's mapping, its own top-level keys replacing the base's (a key set to null removes
    it): a tier runs a subset of a track's methods or seeds without copying its protocols, which stay
    identical to the base's."""
    track = _load_yaml(path)
    base = track.pop(EXTENDS, None)
    merged = {**track_yaml(ROOT / base), **track} if base else track
    return {k: v for k, v in merged.items() if v is not None}


def load_track(path) -> dict:
    track = track_yaml(path)
    validate_schema(track, "track", str(path))
    check_track(track, str(path))
    return track


def _load_named(cfg: dict, key: str, loader, where: str) -> dict:
    """{name: loader(path)} for a profile's `key` mapping (tracks, benchmarks); each file must name
    the track it is listed as."""
    out = {}
    for name, path in (cfg.get(key) or {}).items():
        track = loader(ROOT / path)
        if track["track"] != name:
            raise ConfigError(f"{where}: {key}/{name} points at a file for track {track['track']!r}")
        out[name] = track
    return out


def load_tracks(cfg: dict, where: str = "config") -> dict:
    """{track name: validated track config} for a validated profile config."""
    return _load_named(cfg, "tracks", load_track, where)


def load_profile(path) -> tuple[dict, dict]:
    """(profile config, {track name: track config}) with everything validated."""
    cfg = _load_yaml(path)
    validate_schema(cfg, "config", str(path))
    load_benchmarks(cfg, str(path))  # validated here too; the DAG reads them itself
    return cfg, load_tracks(cfg, str(path))


def runs(tracks: dict, dataset_filter=None) -> list[tuple[str, str, str, str, int]]:
    """Every (track, dataset, method, variant, seed) the profile asks for; `dataset_filter` (glob
    patterns, the profile's optional `datasets` key) keeps only matching datasets."""
    out = []
    for t, track in tracks.items():
        for pname, proto in track["protocols"].items():
            view = protocol_track(track, pname)
            for d in proto["datasets"]:
                if dataset_filter and not _matches(d, dataset_filter):
                    continue
                for m in methods_on(track, d):
                    for v in variants(view, m, d):
                        for s in view["seeds"]:
                            out.append((t, d, m, v, s))
    return out


def protocol_name(track: dict, dataset: str) -> str:
    for pname, proto in track["protocols"].items():
        if dataset in proto["datasets"]:
            return pname
    raise unknown_name("dataset for this track", dataset, [d for p in track["protocols"].values() for d in p["datasets"]], track["track"])


def protocol_for(track: dict, dataset: str) -> dict:
    """The protocol a run of `dataset` follows, without what selects runs (datasets, overrides)."""
    proto = track["protocols"][protocol_name(track, dataset)]
    return {k: v for k, v in proto.items() if k not in ("datasets", *PROTOCOL_OVERRIDES)}


def data_seed(track_name: str, dataset: str, seed: int) -> int:
    """The data seed of every run of (track, dataset, seed), whatever the method: paired runs, and
    per-seed stages (reference models, SFT) derive theirs from it."""
    return derive_seed(track_name, dataset, seed, "data")


def resolve_run(track: dict, dataset: str, method: str, seed: int, variant: str = DEFAULT_VARIANT) -> dict:
    """Everything that determines a run's numbers, with its hash as `run_id`."""
    spec = methods.get(method)
    name = track["track"]
    grid = variants(protocol_track(track, protocol_name(track, dataset)), method, dataset)
    if variant not in grid:
        raise unknown_name(f"variant of {method}", variant, grid, name)
    point = grid[variant]
    protocol = protocol_for(track, dataset)
    if OPTIMIZER_KEY in point:
        axis = track["optimizer_axis"]
        protocol = {**protocol, "optimizer": dict(axis["optimizers"][point[OPTIMIZER_KEY]]),
                    "model": dict(axis.get("model", protocol["model"]))}
    if SWEEP_LR in point:
        protocol = json.loads(json.dumps(protocol))
        protocol.setdefault("optimizer", {})["lr"] = point[SWEEP_LR]
    run = {
        "track": name, "track_version": track["version"], "task": track["task"], "dataset": dataset,
        "method": method, "method_version": spec.version, "seed": seed, "variant": variant,
        "hparams": spec.hparams({**track.get("method_hparams", {}).get(method, {}),
                                 **{k: v for k, v in point.items() if k not in NOT_HPARAMS}}),
        "protocol_name": protocol_name(track, dataset), "protocol": protocol,
        "seeds": {
            "data": data_seed(name, dataset, seed),  # same for every method: paired runs
            "init": derive_seed(name, dataset, method, seed, "init"),
            "order": derive_seed(name, dataset, method, seed, "order"),
        },
    }
    blob = json.dumps(run, sort_keys=True, default=str).encode()
    run["run_id"] = hashlib.sha256(blob).hexdigest()[:12]
    return run


def load_benchmark(path) -> dict:
    """A validated benchmark track (config/schema/benchmark_kernels.schema.yaml): schema, then the
    implementation names and baselines against the kernels registry."""
    from lossbench.kernels import registry

    track = track_yaml(path)
    validate_schema(track, "benchmark_kernels", str(path))
    impls = track.get("impls") or registry.names()
    for name in impls:
        if name not in registry.IMPLS:
            raise unknown_name("kernel implementation", name, registry.IMPLS, f"{path}: impls")
    for bench, name in track["baselines"].items():
        if name not in impls or registry.IMPLS[name].kind != bench:
            raise unknown_name(f"{bench} baseline", name, [n for n in impls if registry.IMPLS[n].kind == bench],
                               f"{path}: baselines")
    for sname, spec in track["slices"].items():
        where = f"{path}: slices/{sname}"
        if spec["bench"] == "linear_ce" and "vd" not in spec and not ("v" in spec and "d" in spec):
            raise ConfigError(f"{where}: a linear_ce slice needs vd pairs, or both v and d")
        if spec["bench"] == "softmax" and ("v" not in spec or {"d", "vd", "reduction", "ignore_frac"} & set(spec)):
            raise ConfigError(f"{where}: a softmax slice takes n, v and dtype only")
    return track


def load_benchmarks(cfg: dict, where: str = "config") -> dict:
    """{benchmark name: validated benchmark config} of a profile's optional `benchmarks`."""
    return _load_named(cfg, "benchmarks", load_benchmark, where)
