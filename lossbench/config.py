"""Config loading and validation: JSON Schema first, then the name checks a schema can't do.

The Snakefile validates with `snakemake.utils.validate` against the same schema files; the CLI
uses `jsonschema` directly. Every error names the offending key and lists the valid choices.

Everything a config can get wrong is a ConfigError of one line (file, key, value, valid choices) before
any job: unreadable YAML (read_yaml), the schema with integers that are ints, every run's protocol as
resolved after its sweep and optimizer-axis overrides (check_resolved, check_models), the dataset
registry (data.check_registry) and a `datasets` filter that selects nothing (check_dataset_filter).

Subsets (select, check_overrides): a profile may keep only some of its tracks (`only_tracks`), datasets
(`datasets`, globs), methods (`methods`, globs) and seeds (`seeds`: replaces the tracks' own), and override
hyperparameters (`method_hparams: {method: {key: value}}`); results go to results/<profile>/, so a subset
gets its own profile name. A subset given with Snakemake's --config must name its profile there too
(`--config profile=NAME ...`): without it, it would overwrite the named profile's results with the subset.
tests/configs/test_broken_configs.py holds the corpus of broken configs this is held to.
"""
from __future__ import annotations

import copy
import difflib
import fnmatch
import functools
import hashlib
import itertools
import json
import re
from pathlib import Path

import yaml

from lossbench import data
from lossbench import methods
from lossbench import tasks
from lossbench.seeding import derive_seed

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "config" / "schema"


class ConfigError(ValueError):
    pass


NAME_PATTERN = r"^[a-z0-9_]+$"  # track, dataset, method, protocol and profile names (they become paths)
VARIANT_PATTERN = r"^[a-z0-9_.+\-]+$"  # a variant slug (the Snakefile's `variant` wildcard); no `..`


def paths_note(of: str = "profile") -> str:
    return f"paths resolve against the repository root ({ROOT}), not the {of}'s folder"


def _load_yaml(path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def read_yaml(path, what: str = "config", where: str | None = None) -> dict:
    """The mapping in YAML file `path`; ConfigError (one line: file, line, column, problem) for a
    missing file, a folder, a syntax error, an empty file or a file that is not a mapping. `what`
    names the file's role (profile, track...) in the message; `where` prefixes it (default the path)."""
    where = where or str(path)
    named = "" if where == str(path) else f" {path}"
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{where}: is a folder, not a {what} file")
    try:
        with open(path) as f:
            doc = yaml.load(f, Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such {what} file{named}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read the {what} file {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: {_yaml_problem(e)}") from None
    if doc is None:
        raise ConfigError(f"{where}: the {what} file{named} is empty")
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: a {what} file holds a mapping of keys, got a {type(doc).__name__}: {doc!r:.60}")
    return doc


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last silently: a
    second `seeds:` further down a track would replace the first without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line)
            except TypeError:  # an unhashable key: the constructor below reports it
                continue
            if first != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (first at line {first + 1})",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep)


def _yaml_problem(e) -> str:
    """`YAML syntax error at line L, column C: <problem>` of a yaml.YAMLError, with a hint for tabs."""
    mark = getattr(e, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(getattr(e, "problem", None) or e).split())
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and context not in problem:
        started = f" started at line {cmark.line + 1}, column {cmark.column + 1}" if cmark is not None else ""
        problem = f"{problem} ({context}{started})"
    if "\\t" in problem or "\t" in problem:
        problem += "; YAML indents with spaces, never tabs"
    return f"YAML syntax error{at}: {problem}"


def schema(name: str) -> dict:
    return copy.deepcopy(_schema(name))


@functools.lru_cache(maxsize=None)
def _schema(name: str) -> dict:
    return _load_yaml(SCHEMA_DIR / f"{name}.schema.yaml")


def validate_schema(cfg: dict, name: str, where: str) -> None:
    _validate_part(cfg, schema(name), where)


def _validator(subschema: dict):
    """A jsonschema validator whose `integer` is a Python int: JSON Schema counts 64.0 as an integer,
    but a float batch size or seed fails only once a job runs (or names a `seed0.0` folder)."""
    import jsonschema

    return _strict(jsonschema.validators.validator_for(subschema))(subschema)


@functools.lru_cache(maxsize=None)
def _strict(cls):
    import jsonschema

    checker = cls.TYPE_CHECKER.redefine("integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool))
    return jsonschema.validators.extend(cls, type_checker=checker)


def _validate_part(cfg: dict, subschema: dict, where: str) -> None:
    """jsonschema validation; the first error as one line: where, the key's path, what is wrong and
    the valid choices (keys, enum values) with close matches."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(subschema).iter_errors(cfg))
    if error is not None:
        path = "/".join(map(str, error.absolute_path)) or "(top level)"
        raise ConfigError(f"{where}: {path}: {_schema_message(error)}")


def _close_matches(name, valid) -> list[str]:
    return difflib.get_close_matches(str(name), [str(v) for v in valid], n=3)


def _did_you_mean(name, valid) -> str:
    """` Did you mean a, b?` (a sentence of its own) or ''."""
    close = _close_matches(name, valid)
    return f" Did you mean {', '.join(close)}?" if close else ""


def _close_hint(name, valid) -> str:
    """` (did you mean a, b?)` (inside a sentence) or ''."""
    close = _close_matches(name, valid)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _describe(value) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return f"the string {value!r}"
        if re.fullmatch(r"[+-]?\d+[eE][+-]?\d+", value):
            return f"the string {value!r} (YAML reads {value} as text: write it with a dot, e.g. 1.0e-3)"
        return f"the string {value!r} (quoted: write it without quotes)"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, float) and value.is_integer():
        return f"{value!r} (a float; write {int(value)})"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} ({json.dumps(value, default=str):.60})"
    return repr(value)


def _schema_message(e) -> str:
    """One readable sentence for a jsonschema error (valid keys and values listed)."""
    v, schema_ = e.validator, e.schema
    if v == "additionalProperties" and isinstance(e.instance, dict):
        known = list(schema_.get("properties", {}))
        extra = [k for k in e.instance if k not in known]
        if extra and known:
            return f"{e.message}{_close_hint(extra[0], known)}; valid keys: {', '.join(known)}"
    if v == "enum":
        return f"{e.message}{_close_hint(e.instance, e.validator_value)}"
    if v == "const":
        return f"{e.instance!r} is not valid here; expected {e.validator_value!r}"
    if v == "type":
        words = {"array": "list", "object": "mapping", "boolean": "true or false"}
        want = " or ".join(words.get(t, t) for t in ([e.validator_value] if isinstance(e.validator_value, str)
                                                      else e.validator_value))
        article = "" if want.startswith("true") else "an " if want[0] in "aeiou" else "a "
        return f"expected {article}{want}, got {_describe(e.instance)}"
    if v == "pattern" and e.validator_value == NAME_PATTERN:
        return f"{e.instance!r} is not a valid name: use lower-case letters, digits and _ only ({NAME_PATTERN})"
    if v == "propertyNames" and e.validator_value.get("pattern") == NAME_PATTERN:
        bad = next((k for k in e.instance if not re.match(NAME_PATTERN, k)), None)
        return f"{bad!r} is not a valid name: use lower-case letters, digits and _ only ({NAME_PATTERN})"
    if v == "oneOf" and all(set(s) == {"required"} for s in e.validator_value):
        options = [k for s in e.validator_value for k in s["required"]]
        given = [k for k in options if isinstance(e.instance, dict) and k in e.instance]
        if len(given) > 1:
            return f"set exactly one of {', '.join(options)}; got {' and '.join(given)}"
        return f"set one of {', '.join(options)}"
    if v == "minProperties" and not e.instance:
        return "is empty; it needs at least one entry"
    if v == "minItems" and not e.instance:
        return "is an empty list; it needs at least one item"
    if v == "uniqueItems":
        return f"has repeated items: {e.instance}"
    return e.message


def require_dataset_task(proto: dict, where: str, task: str) -> None:
    """Raise ConfigError for the first dataset of a protocol registered for another task."""
    for d in proto["datasets"]:
        own = data.dataset_entry(d).get("task", "classification")
        if own != task:
            raise ConfigError(f"{where}/datasets: {d!r} is a {own} dataset, not {task}")


def unknown_name(kind: str, name: str, valid, where: str) -> ConfigError:
    return ConfigError(f"{where}: unknown {kind} {name!r}.{_did_you_mean(name, valid)} Valid: {', '.join(sorted(valid))}")


def method_hparams(method: str, overrides: dict, where: str) -> dict:
    """`methods.get(method).hparams(overrides)`, a ConfigError for anything wrong: unknown keys and
    the method's own checks, and a value whose type differs from the default's (a quoted "2" for a
    float) before the method's checks compare it with a number."""
    spec = methods.get(method)
    for key, value in overrides.items():
        default = spec.defaults.get(key)
        if key not in spec.defaults or default is None:
            continue
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, (int, float)):
            ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif isinstance(default, str):
            ok, want = isinstance(value, str), "a string"
        elif isinstance(default, (list, tuple)):
            ok, want = isinstance(value, (list, tuple)), "a list"
        else:
            continue
        if not ok:
            raise ConfigError(f"{where}: {key}: expected {want} (default {default!r}), got {_describe(value)}")
    try:
        return spec.hparams(overrides)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


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
        method_hparams(m, overrides, f"{where}: method_hparams/{m}")
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
        if "tuning" in proto:
            _validate_part(proto["tuning"], schema("track")["properties"]["tuning"], f"{where}: protocols/{pname}/tuning")
        _check_tuning(view, f"{where}: protocols/{pname}" if "tuning" in proto else where, protocol_methods(track, pname),
                      proto["datasets"][0])
        task.check_protocol(proto, f"{where}: protocols/{pname}", view)
    for d in track.get("dataset_methods", {}):
        if d not in seen:
            raise unknown_name("dataset in dataset_methods", d, seen, where)
    for pat in track.get("optimizer_axis", {}).get("datasets", []):
        if not any(_matches(d, [pat]) for d in seen):
            raise unknown_name("dataset in optimizer_axis/datasets", pat, seen, where)
    check_resolved(track, where, task)


def check_resolved(track: dict, where: str, task) -> None:
    """Every run's protocol as it trains (resolve_run: after its sweep's `lr` and its optimizer_axis
    entry replaced the protocol's), for every variant of every method on every dataset, against the
    task's protocol schema and the model checks: a sweep lr of -1e-3 or an axis model typo fails
    here, not when its job runs. Runs that resolve to the same protocol are checked once."""
    full = schema(task.PROTOCOL_SCHEMA)
    done = set()
    for pname, proto in track["protocols"].items():
        view = protocol_track(track, pname)
        for d in proto["datasets"]:
            for m in methods_on(track, d):
                for slug in variants(view, m, d):
                    run = resolve_run(track, d, m, view["seeds"][0], slug)
                    resolved = {**run["protocol"], "datasets": [d]}
                    key = json.dumps(resolved, sort_keys=True, default=str)
                    if key in done:
                        continue
                    done.add(key)
                    at = f"{where}: protocols/{pname}" + (f" (as run by {m}, variant {slug})" if slug != DEFAULT_VARIANT
                                                          else "")
                    _validate_part(resolved, full, at)
                    check_models(resolved, at, d)


# Models a block may name: where a protocol keeps them (`teacher` and `reference` blocks train their own).
MODEL_BLOCKS = (("model",), ("teacher", "model"), ("reference", "model"))


def check_models(proto: dict, where: str, dataset: str | None = None) -> None:
    """What a model block's schema can't say: attention heads divide d_model (llama: into an even
    head size, for rotary embeddings), a ResNet's depth is 6n+2, and an LM's context holds the
    corpus's chunks."""
    for keys in MODEL_BLOCKS:
        model = proto
        for k in keys:
            model = model.get(k) if isinstance(model, dict) else None
        if not isinstance(model, dict):
            continue
        at = f"{where}/{'/'.join(keys)}"
        d_model, heads = model.get("d_model"), model.get("heads")
        if isinstance(d_model, int) and isinstance(heads, int) and heads > 0:
            ok = [h for h in range(1, d_model + 1) if d_model % h == 0]
            if d_model % heads:
                raise ConfigError(f"{at}: heads: {heads} attention heads do not divide d_model {d_model}; "
                                  f"valid heads for d_model {d_model}: {', '.join(map(str, ok))}")
            if model.get("arch") == "llama" and (d_model // heads) % 2:
                even = [h for h in ok if (d_model // h) % 2 == 0]
                raise ConfigError(f"{at}: heads: llama's rotary embeddings need an even head size, d_model {d_model} / "
                                  f"heads {heads} = {d_model // heads}; valid heads: {', '.join(map(str, even))}")
        depth = model.get("depth")
        if model.get("name") == "resnet32" and isinstance(depth, int) and (depth < 8 or (depth - 2) % 6):
            raise ConfigError(f"{at}: depth: a CIFAR ResNet's depth is 6n+2, got {depth}; e.g. 20, 32, 44, 56, 110")
        context = model.get("context")
        if dataset and "arch" in model and isinstance(context, int):
            entry = data.dataset_entry(dataset)
            seq_len = data.source_entry(entry["source"]).get("params", {}).get("seq_len")
            if entry.get("task") == "lm_pretraining" and isinstance(seq_len, int) and context < seq_len:
                raise ConfigError(f"{at}: context: {context} positions are fewer than the {seq_len}-token chunks of "
                                  f"dataset {dataset!r} (registry source {entry['source']!r}); set context >= {seq_len}")


DEFAULT_VARIANT = "default"
# Track keys a protocol may replace for its own datasets: a pretrained LM wants learning rates ~100x
# below a from-scratch toy's, and a GPU-heavy protocol may afford fewer seeds than a CPU one.
PROTOCOL_OVERRIDES = ("sweep", "seeds", "tuning")
SWEEP_LR = "lr"  # a sweep key that sets the protocol's learning rate instead of a method hyperparameter
OPTIMIZER_KEY = "optimizer"  # a variant key naming an optimizer_axis entry (replaces the protocol's optimizer)
NOT_HPARAMS = (SWEEP_LR, OPTIMIZER_KEY)  # variant keys that configure the run, not the method


def variant_slug(point: dict) -> str:
    """`beta0.1-lr0.0003` for {beta: 0.1, lr: 3e-4}: a readable, path-safe name of a grid point."""
    if not point:
        return DEFAULT_VARIANT
    return "-".join(f"{k}{str(v).lower()}" for k, v in sorted(point.items()))


def variants(track: dict, method: str, dataset: str | None = None) -> dict[str, dict]:
    """{slug: grid point} of `method`: its sweep (or the default only; with `tuning`, its trials and
    `tuned`: lossbench/tuning.py), and for a method on the track's optimizer_axis each sweep point
    (with tuning: the defaults) once more per axis optimizer (key OPTIMIZER_KEY) — on `dataset` only
    if it matches the axis's `datasets` globs (all datasets without the key)."""
    if track.get("tuning"):
        from lossbench import tuning

        base, axis_base = tuning.variant_points(track, method, dataset), {DEFAULT_VARIANT: {}}
    else:
        base = axis_base = sweep_variants(track, method)
    axis = track.get("optimizer_axis")
    if not axis or method not in axis["methods"] or not _on_axis(axis, dataset):
        return base
    out = dict(base)
    for name in axis["optimizers"]:
        for point in axis_base.values():
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
    return {variant_slug(p): p for p in grid_points(grid)}


def grid_points(grid) -> list[dict]:
    """The points of one method's grid (a sweep's, or a tuning block's `grid`): a mapping
    (hyperparameter -> values, product taken over the sorted keys) or a list of explicit points,
    for hyperparameters that move together."""
    if isinstance(grid, list):
        return [dict(p) for p in grid]
    keys = sorted(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


def protocol_track(track: dict, pname: str) -> dict:
    """The track as protocol `pname`'s datasets see it: the protocol's own PROTOCOL_OVERRIDES keys
    replace the track's (the track itself when it has none)."""
    proto = track["protocols"][pname]
    own = {k: proto[k] for k in PROTOCOL_OVERRIDES if k in proto}
    return {**track, **own} if own else track


def track_datasets(track: dict) -> list[str]:
    """Every dataset a track runs, in protocol order."""
    return [d for p in track["protocols"].values() for d in p["datasets"]]


def methods_on(track: dict, dataset: str) -> list[str]:
    """The methods that run on `dataset`: its dataset_methods entry, else the track's methods that its
    task can run there (the task's optional `runs_on(method, dataset)`: classification keeps the
    embedding losses to open-world datasets)."""
    if dataset in track.get("dataset_methods", {}):
        return track["dataset_methods"][dataset]
    fits = getattr(tasks.get(track["task"]), "runs_on", None)
    return [m for m in track["methods"] if fits is None or fits(m, dataset)]


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
            if not re.match(VARIANT_PATTERN, slug) or ".." in slug:
                raise ConfigError(f"{where}: sweep/{m}: the grid point {point} makes variant {slug!r}, which is no "
                                  f"path-safe name: values may hold lower-case letters, digits and _ . + - "
                                  f"(no '/' or '..')")
            method_hparams(m, {**track.get("method_hparams", {}).get(m, {}),
                               **{k: v for k, v in point.items() if k not in NOT_HPARAMS}},
                           f"{where}: sweep/{m} ({slug})")


def variant_seeds(track: dict, variant: str) -> list[int]:
    """The seeds a variant runs on: a tuning trial on the tuning seeds, every other variant on the
    track's (final) seeds. `track` as a protocol's datasets see it (protocol_track)."""
    from lossbench import tuning

    tune = track.get("tuning")
    return list(tune["seeds"]) if tune and tuning.is_trial(variant) else list(track["seeds"])


def _check_tuning(track: dict, where: str, names: list[str], dataset: str) -> None:
    """Equal budget (lossbench/tuning.py check): not with a sweep, tuning seeds disjoint from the
    final seeds, a valid search, and `trials` distinct points for every method of `names`."""
    if track.get("tuning"):
        from lossbench import tuning

        tuning.check(track, where, names, dataset)


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


def track_yaml(path, _chain: tuple = ()) -> dict:
    """A track file's mapping. With `extends: <track file>` (relative to the repository) it starts
    from that file's mapping, its own top-level keys replacing the base's (a key set to null removes
    it): a tier runs a subset of a track's methods or seeds without copying its protocols, which stay
    identical to the base's."""
    track = read_yaml(path, "track")
    base = track.pop(EXTENDS, None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{path}: {EXTENDS}: expected the path of a track file, got {_describe(base)}")
    if base:
        where, file = f"{path}: {EXTENDS}", ROOT / base
        if not file.exists():
            raise ConfigError(f"{where}: no such track file: {base}{_paths_hint(base, Path(path).parent, 'track file')}")
        if file.is_dir():
            raise ConfigError(f"{where}: {base} is a folder, not a track file")
        chain = (*_chain, Path(path).resolve())
        if file.resolve() in chain:
            raise ConfigError(f"{where}: {base} extends itself: {' -> '.join(map(str, (*chain, file.resolve())))}")
        merged = {**track_yaml(file, chain), **track}
    else:
        merged = track
    return {k: v for k, v in merged.items() if v is not None}


def load_track(path) -> dict:
    track = track_yaml(path)
    validate_schema(track, "track", str(path))
    check_track(track, str(path))
    return track


def _paths_hint(path: str, folder: Path | None, of: str = "profile") -> str:
    """Why a path was not found, as ` (...)`: for a relative path the note that paths resolve against
    the repository root, with the spelling that works when the path exists relative to the naming
    file's folder instead, else a close file name in that folder of the repository."""
    if Path(path).is_absolute():
        return _close_hint(Path(path).name, [p.name for p in Path(path).parent.glob("*.yaml")])
    note = paths_note(of)
    if folder is not None and (Path(folder) / path).resolve().exists():
        beside = (Path(folder) / path).resolve()
        try:
            return f" ({note}; write {beside.relative_to(ROOT)})"
        except ValueError:
            return f" ({note}; write the absolute path {beside})"
    parent = (ROOT / path).parent
    close = difflib.get_close_matches(Path(path).name, [p.name for p in parent.glob("*.yaml")], n=1)
    return f" ({note}; did you mean {Path(path).parent / close[0]}?)" if close else f" ({note})"


def _load_named(cfg: dict, key: str, loader, where: str) -> dict:
    """{name: loader(path)} for a profile's `key` mapping (tracks, benchmarks); each file must name
    the track it is listed as."""
    out = {}
    profile = Path(where.split(": ")[0])
    profile_dir = profile.parent if profile.suffix in (".yaml", ".yml") else None
    for name, path in (cfg.get(key) or {}).items():
        at = f"{where}: {key}/{name}"
        file = ROOT / path
        if not file.exists():
            raise ConfigError(f"{at}: no such file: {path}{_paths_hint(path, profile_dir)}")
        if file.is_dir():
            inside = sorted(str(f.relative_to(ROOT)) for f in file.glob("*.yaml")) if file.is_relative_to(ROOT) else []
            hint = f"; track files there: {', '.join(inside)}" if inside else ""
            raise ConfigError(f"{at}: {path} is a folder, not a track file{hint}")
        track = loader(file)
        if track["track"] != name:
            raise ConfigError(f"{where}: {key}/{name} points at a file for track {track['track']!r}")
        out[name] = track
    return out


def load_tracks(cfg: dict, where: str = "config") -> dict:
    """{track name: validated track config} for a validated profile config; also checks the
    dataset registry the tracks name and that the profile's `datasets` filter selects runs."""
    check_registry()
    tracks = _load_named(cfg, "tracks", load_track, where)
    check_dataset_filter(cfg, tracks, where)
    return tracks


def check_registry() -> None:
    """data/registry.yaml (the only place datasets are declared; a profile cannot add entries) as a
    ConfigError naming the entry, key, value and valid choices (data.check_registry)."""
    try:
        data.check_registry()
    except data.RegistryError as e:
        raise ConfigError(str(e)) from None


def check_dataset_filter(cfg: dict, tracks: dict, where: str = "config") -> None:
    """Each pattern of the profile's `datasets` filter matches a dataset of its tracks; a filter that
    selects nothing would run nothing and report an empty table."""
    patterns = cfg.get("datasets")
    if patterns is None:
        return
    names = [d for t in tracks.values() for d in track_datasets(t)]
    for pat in patterns:
        if not any(_matches(d, [pat]) for d in names):
            raise ConfigError(f"{where}: datasets: the pattern {pat!r} matches no dataset of the profile's tracks."
                              f"{_did_you_mean(pat, names)} Valid: {', '.join(names) or '(no tracks)'}")
    if tracks and not runs(tracks, patterns):
        raise ConfigError(f"{where}: datasets: {patterns} selects no runs of the profile's tracks")


def load_profile(path) -> tuple[dict, dict]:
    """(profile config, {track name: track config}) with everything validated; the tracks as the
    profile's subset keys leave them (select)."""
    cfg = read_yaml(path, "profile")
    validate_schema(cfg, "config", str(path))
    benches = load_benchmarks(cfg, str(path))  # validated here too; the DAG reads them itself
    return cfg, select(cfg, load_tracks(cfg, str(path)), benches, str(path))[0]


EVIDENCE_LEVELS = ("smoke", "study", "full")  # a profile's `evidence` (config/schema/config.schema.yaml)


def evidence_level(cfg: dict) -> str:
    """What a profile's results can support: its `evidence` key; without one, smoke for the profile
    named smoke and study for any other. Recorded in provenance.json (runner.provenance) and read by
    the claims table (report/claims.py evidence_level)."""
    if cfg.get("evidence"):
        return str(cfg["evidence"])
    return "smoke" if cfg.get("profile") == "smoke" else "study"


# Profile keys that run a subset of the profile's tracks (config/schema/config.schema.yaml).
SUBSET_KEYS = ("only_tracks", "datasets", "methods", "seeds", "method_hparams")


def check_overrides(cfg: dict, overrides, where: str = "config") -> None:
    """The rule for subset keys given on Snakemake's command line (`overrides`: its --config mapping,
    already merged into `cfg`): they need their own `profile=NAME` there, different from the profile
    file's, since results/<profile>/ is where the subset's runs, tables and report go (without it,
    `--config datasets=[x]` would replace results/smoke's tables and report with the subset's). Also
    turns what --config reads as strings (it parses list items as text) into the numbers they spell:
    `seeds=[0,1]`, `method_hparams={focal: {gamma: 1.0}}`."""
    overrides = dict(overrides or {})
    given = [k for k in SUBSET_KEYS if k in overrides]
    if isinstance(cfg.get("seeds"), list):
        cfg["seeds"] = [int(s) if isinstance(s, str) and s.strip().isdigit() else s for s in cfg["seeds"]]
    if isinstance(cfg.get("method_hparams"), dict):
        cfg["method_hparams"] = {m: {k: yaml.safe_load(v) if isinstance(v, str) and "method_hparams" in overrides
                                     else v for k, v in hp.items()} if isinstance(hp, dict) else hp
                                 for m, hp in cfg["method_hparams"].items()}
    if not given:
        return
    try:
        own = (read_yaml(where, "profile") if Path(where).exists() else {}).get("profile")
    except ConfigError:
        own = None
    if "profile" not in overrides or overrides["profile"] == own:
        name = str(overrides.get("profile") or own or cfg.get("profile"))
        raise ConfigError(f"{where}: --config {' '.join(given)}: a subset needs its own profile name, or it would "
                          f"replace results/{name}/ (tables and report) with the subset's; add "
                          f"profile=<name>, e.g. --config profile={name}_subset ... (results go to results/<name>/)")


def select(cfg: dict, tracks: dict, benches: dict, where: str = "config") -> tuple[dict, dict]:
    """(tracks, benchmarks) the profile's subset keys keep: `only_tracks` (names of tracks and
    benchmarks), `seeds` (replace the tracks' and their protocols' seeds), `method_hparams` (merged
    over each selected track's own, for the tracks that run the method); with a `datasets` or
    `methods` filter, the tracks left with no run are dropped. A filter or name that selects nothing
    is a ConfigError. Without subset keys, `tracks` and `benches` unchanged."""
    only = cfg.get("only_tracks")
    if only is not None:
        valid = [*tracks, *benches]
        for name in only:
            if name not in valid:
                raise unknown_name("track", name, valid, f"{where}: only_tracks")
        tracks = {k: v for k, v in tracks.items() if k in only}
        benches = {k: v for k, v in benches.items() if k in only}
    seeds, hparams = cfg.get("seeds"), cfg.get("method_hparams")
    if hparams:
        ran = {m for t in tracks.values() for m in t["methods"]}
        for m in hparams:
            if m not in ran:
                raise unknown_name("method in method_hparams", m, sorted(ran), f"{where}: method_hparams")
    if seeds or hparams:
        out = {}
        for name, track in tracks.items():
            track = copy.deepcopy(track)
            if seeds:
                track["seeds"] = list(seeds)
                for proto in track["protocols"].values():
                    proto.pop("seeds", None)
            for m, over in (hparams or {}).items():
                if m in track["methods"]:
                    track.setdefault("method_hparams", {})[m] = {**track.get("method_hparams", {}).get(m, {}), **over}
            if hparams:
                check_track(track, f"{where}: method_hparams ({name})")
            out[name] = track
        tracks = out
    if only is not None or seeds or hparams:
        check_dataset_filter(cfg, tracks, where)
    check_method_filter(cfg, tracks, where)
    if cfg.get("datasets") is not None or cfg.get("methods") is not None:
        kept = {t for t, *_ in runs(tracks, cfg.get("datasets"), cfg.get("methods"))}
        tracks = {k: v for k, v in tracks.items() if k in kept}
    return tracks, benches


def check_method_filter(cfg: dict, tracks: dict, where: str = "config") -> None:
    """Each pattern of the profile's `methods` filter matches a method of its tracks, and the filters
    together select runs (a method may run on none of the selected datasets)."""
    patterns = cfg.get("methods")
    if patterns is None:
        return
    names = list(dict.fromkeys(m for t in tracks.values() for m in t["methods"]))
    for pat in patterns:
        if not any(_matches(m, [pat]) for m in names):
            raise ConfigError(f"{where}: methods: the pattern {pat!r} matches no method of the profile's tracks."
                              f"{_did_you_mean(pat, names)} Valid: {', '.join(names) or '(no tracks)'}")
    if tracks and not runs(tracks, cfg.get("datasets"), patterns):
        raise ConfigError(f"{where}: methods: {patterns} with datasets {cfg.get('datasets') or ['*']} selects no runs "
                          f"of the profile's tracks")


def runs(tracks: dict, dataset_filter=None, method_filter=None) -> list[tuple[str, str, str, str, int]]:
    """Every (track, dataset, method, variant, seed) the profile asks for; `dataset_filter` and
    `method_filter` (glob patterns, the profile's optional `datasets` and `methods` keys) keep only
    matching datasets and methods."""
    out = []
    for t, track in tracks.items():
        for pname, proto in track["protocols"].items():
            view = protocol_track(track, pname)
            for d in proto["datasets"]:
                if dataset_filter and not _matches(d, dataset_filter):
                    continue
                for m in methods_on(track, d):
                    if method_filter and not _matches(m, method_filter):
                        continue
                    for v in variants(view, m, d):
                        for s in variant_seeds(view, v):
                            out.append((t, d, m, v, s))
    return out


def protocol_name(track: dict, dataset: str) -> str:
    for pname, proto in track["protocols"].items():
        if dataset in proto["datasets"]:
            return pname
    raise unknown_name("dataset for this track", dataset, track_datasets(track), track["track"])


def protocol_for(track: dict, dataset: str) -> dict:
    """The protocol a run of `dataset` follows, without what selects runs (datasets, overrides)."""
    proto = track["protocols"][protocol_name(track, dataset)]
    return {k: v for k, v in proto.items() if k not in ("datasets", *PROTOCOL_OVERRIDES)}


def data_seed(track_name: str, dataset: str, seed: int) -> int:
    """The data seed of every run of (track, dataset, seed), whatever the method: paired runs, and
    per-seed stages (reference models, SFT) derive theirs from it."""
    return derive_seed(track_name, dataset, seed, "data")


def resolve_run(track: dict, dataset: str, method: str, seed: int, variant: str = DEFAULT_VARIANT,
                point: dict | None = None, tuned_from: str | None = None) -> dict:
    """Everything that determines a run's numbers, with its hash as `run_id`. `point` replaces the
    variant's grid point and `tuned_from` (a choice file's sha256) joins the record: a `tuned`
    run's final config, resolved in its job (lossbench.tuning.tuned_run)."""
    spec = methods.get(method)
    name = track["track"]
    grid = variants(protocol_track(track, protocol_name(track, dataset)), method, dataset)
    if variant not in grid:
        raise unknown_name(f"variant of {method}", variant, grid, name)
    point = grid[variant] if point is None else point
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
    if tuned_from:
        run["tuned_from"] = tuned_from
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
