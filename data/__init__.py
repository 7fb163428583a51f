"""Dataset recipes: the registry (registry.yaml), preparing sources, and building run variants.

A *source* is prepared once into `prepared.npz` (train split + held-out split). A *dataset* is a
variant of a source built at run time from the run's data seed: long-tailed subsample and/or
corrupted training labels, plus a balanced val/test cut of the held-out split. Sources of the
lm_pretraining task are token corpora instead (layout in data/lm_corpus.py), used as prepared; those
of the grokking task hold every example of an algorithmic task (data/algorithmic.py).
"""
from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from lossbench.data import transforms

REGISTRY_PATH = Path(__file__).with_name("registry.yaml")
# What a prepared source must hold, by the source's task (classification unless it says otherwise).
PREPARED_KEYS = {
    "classification": {"x_train", "y_train", "x_heldout", "y_heldout", "num_classes"},
    "lm_pretraining": {"train_tokens", "train_domain", "train_flag", "val_tokens", "val_domain", "test_tokens",
                       "test_domain", "domain_names", "seq_len", "tokenizer_json", "tokenizer_sha256", "eos_token",
                       "test_texts"},
    "grokking": {"x", "y", "num_classes"},  # every example; runs split by train_fraction (data/algorithmic.py)
}


@functools.lru_cache(maxsize=1)
def registry() -> dict:
    with open(REGISTRY_PATH) as f:
        return yaml.safe_load(f)


# ============================================================================ registry validation
class RegistryError(ValueError):
    """A registry entry that would fail (or silently mislead) once a job uses it."""


NAME_PATTERN = r"^[a-z0-9_]+$"  # source and dataset names become paths and Snakemake wildcards
SOURCE_KINDS = ("generated", "packaged", "download", "hub")
SOURCE_KEYS = {"kind": True, "module": True, "modality": True, "description": True, "task": False, "params": False,
               "url": False, "archive": False, "md5": False}  # key -> required
DOWNLOAD_KEYS = ("url", "archive", "md5")
MODALITIES = ("vector", "image", "sequence", "text")
TASKS = ("classification", "preference", "lm_pretraining", "grokking")  # lossbench/tasks; default classification
# dataset keys -> the tasks that read them (None: every task)
DATASET_KEYS = {"source": None, "task": None, "long_tail": ("classification",), "noise": ("classification",),
                "open_world": ("classification",), "label_noise": ("preference",), "train_fraction": ("grokking",)}


def _close(name, valid) -> str:
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_registry(reg: dict | None = None, where: str | None = None) -> None:
    """Raise RegistryError (one line: file, entry, key, value, valid choices) for the first entry of
    the registry (default data/registry.yaml) that is malformed: unknown keys or source kinds, a
    dataset of an unknown source or of another task than its source, a long-tail imbalance factor
    below 1, a noise kind or key the transforms do not have, a noise rate outside [0, 1)."""
    import re

    where = where or _registry_where()
    if reg is None:
        try:
            reg = registry()
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise RegistryError(f"{where}: YAML syntax error{at}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(reg, dict) or set(reg) != {"sources", "datasets"}:
        got = sorted(reg) if isinstance(reg, dict) else type(reg).__name__
        raise RegistryError(f"{where}: the registry holds exactly the keys sources and datasets, got {got}")
    sources, datasets = reg["sources"] or {}, reg["datasets"] or {}
    for table, entries in (("sources", sources), ("datasets", datasets)):
        if not isinstance(entries, dict):
            raise RegistryError(f"{where}: {table}: expected a mapping of names to entries")
        for name, entry in entries.items():
            if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
                raise RegistryError(f"{where}: {table}/{name}: not a valid name: use lower-case letters, digits and _ "
                                    f"only ({NAME_PATTERN})")
            if not isinstance(entry, dict):
                raise RegistryError(f"{where}: {table}/{name}: expected a mapping of keys, got {entry!r}")
    for name, entry in sources.items():
        _check_source(entry, f"{where}: sources/{name}")
    for name, entry in datasets.items():
        _check_dataset(entry, sources, f"{where}: datasets/{name}")


def _registry_where() -> str:
    try:
        return str(REGISTRY_PATH.relative_to(Path.cwd()))
    except ValueError:
        return str(REGISTRY_PATH)


def _unknown_keys(entry: dict, known, where: str) -> None:
    for key in entry:
        if key not in known:
            raise RegistryError(f"{where}: unknown key {key!r}.{_close(key, known)} Valid keys: {', '.join(known)}")


def _find_module(name: str):
    """The spec of a registry entry's `module` (lossbench.data.mnist1d, or .mnist1d relative to this
    package), None if there is none."""
    try:
        return importlib.util.find_spec(name, __package__)
    except (ImportError, ValueError):  # a parent package that does not exist, an empty name
        return None


def _check_source(entry: dict, where: str) -> None:
    _unknown_keys(entry, SOURCE_KEYS, where)
    required = [k for k, req in SOURCE_KEYS.items() if req] + (list(DOWNLOAD_KEYS) if entry.get("kind") == "download" else [])
    missing = [k for k in required if k not in entry]
    if missing:
        raise RegistryError(f"{where}: missing {', '.join(missing)}" + (" (a download source needs url, archive and md5)"
                                                                        if entry.get("kind") == "download" else ""))
    for key, valid in (("kind", SOURCE_KINDS), ("modality", MODALITIES), ("task", TASKS)):
        if key in entry and entry[key] not in valid:
            raise RegistryError(f"{where}: {key}: {entry[key]!r} is not a valid value.{_close(entry[key], valid)} "
                                f"Valid: {', '.join(valid)}")
    if not isinstance(entry["module"], str) or _find_module(entry["module"]) is None:
        raise RegistryError(f"{where}: module: {entry['module']!r} is not an importable module "
                            "(e.g. lossbench.data.mnist1d)")
    if "params" in entry and not isinstance(entry["params"], dict):
        raise RegistryError(f"{where}: params: expected a mapping, got {entry['params']!r}")


def _check_dataset(entry: dict, sources: dict, where: str) -> None:
    _unknown_keys(entry, DATASET_KEYS, where)
    if "source" not in entry:
        raise RegistryError(f"{where}: missing source; valid sources: {', '.join(sources)}")
    src = entry["source"]
    if src not in sources:
        raise RegistryError(f"{where}: source: unknown source {src!r}.{_close(src, sources)} Valid: {', '.join(sources)}")
    task = entry.get("task", "classification")
    if task not in TASKS:
        raise RegistryError(f"{where}: task: {task!r} is not a valid value.{_close(task, TASKS)} Valid: {', '.join(TASKS)}")
    own = sources[src].get("task")  # a preference source leaves it out (its stages read it, not prepare_source)
    if own is not None and task != own or own is None and task in ("lm_pretraining", "grokking"):
        raise RegistryError(f"{where}: task: {task!r}, but source {src!r} is a {own or 'classification'} source; "
                            f"set task: {own or 'classification'}, or use a {task} source")
    for key, tasks in DATASET_KEYS.items():
        if key in entry and tasks is not None and task not in tasks:
            raise RegistryError(f"{where}: {key}: applies to {' and '.join(tasks)} datasets only, not {task}")
    if "long_tail" in entry:
        rho = entry["long_tail"]
        if not _is_number(rho) or not rho >= 1:
            raise RegistryError(f"{where}: long_tail: the imbalance factor n_max / n_min must be a number >= 1 "
                                f"(1 = balanced), got {rho!r}")
    if "noise" in entry:
        _check_noise(entry["noise"], f"{where}: noise")
    if "open_world" in entry:
        m = entry["open_world"]
        if not isinstance(m, int) or isinstance(m, bool) or m < 2:
            raise RegistryError(f"{where}: open_world: the number of training classes (classes 0..m-1 train, the "
                                f"rest are retrieved at test time) must be an integer >= 2, got {m!r}")
        if "noise" in entry:
            raise RegistryError(f"{where}: open_world: not with noise (a flipped label could name a test class)")
    if "label_noise" in entry:
        _check_rate(entry["label_noise"], f"{where}: label_noise")
    if task == "grokking" and "train_fraction" not in entry:
        raise RegistryError(f"{where}: missing train_fraction (a grokking dataset's share of training examples)")
    if "train_fraction" in entry:
        f = entry["train_fraction"]
        if not _is_number(f) or not 0 < f < 1:
            raise RegistryError(f"{where}: train_fraction: must be a number in (0, 1), got {f!r}")


def _check_rate(rate, where: str) -> None:
    if not _is_number(rate) or not 0 <= rate < 1:
        raise RegistryError(f"{where}: a label-flip rate must be a number in [0, 1) (1 flips every label), got {rate!r}")


def _check_noise(noise, where: str) -> None:
    import inspect

    if not isinstance(noise, dict):
        raise RegistryError(f"{where}: expected a mapping {{kind, rate, ...}}, got {noise!r}")
    kind = noise.get("kind")
    if kind not in transforms.NOISE:
        raise RegistryError(f"{where}/kind: unknown noise kind {kind!r}.{_close(kind, transforms.NOISE)} "
                            f"Valid: {', '.join(transforms.NOISE)}")
    params = inspect.signature(transforms.NOISE[kind]).parameters
    known = ["kind", "rate"] + [p for p in params if p not in ("y", "num_classes", "rate", "rng")]
    _unknown_keys(noise, known, where)
    if "rate" not in noise:
        raise RegistryError(f"{where}: missing rate (the fraction of training labels flipped, in [0, 1))")
    _check_rate(noise["rate"], f"{where}/rate")
    for key in known[2:]:
        default = params[key].default
        if key in noise and isinstance(default, bool) and not isinstance(noise[key], bool):
            raise RegistryError(f"{where}/{key}: expected true or false, got {noise[key]!r}")


def names() -> list[str]:
    return list(registry()["datasets"])


def _lookup(table: str, name: str) -> dict:
    entries = registry()[table]
    if name not in entries:
        close = difflib.get_close_matches(name, entries, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown {table[:-1]} {name!r}.{hint} Registered: {', '.join(sorted(entries))}")
    return entries[name]


def dataset_entry(name: str) -> dict:
    return _lookup("datasets", name)


def source_entry(name: str) -> dict:
    return _lookup("sources", name)


def source_of(dataset: str) -> str:
    return dataset_entry(dataset)["source"]


def modality(dataset: str) -> str:
    return source_entry(source_of(dataset))["modality"]


def describe(dataset: str) -> str:
    """One line saying exactly what the dataset is (shown in the report)."""
    entry = dataset_entry(dataset)
    parts = [source_entry(entry["source"])["description"]]
    if "long_tail" in entry:
        parts.append(f"long-tailed, exponential profile, imbalance factor {entry['long_tail']}")
    if "noise" in entry:
        n = entry["noise"]
        parts.append(f"{n['kind']} label noise at rate {n['rate']} on the training set")
    if "open_world" in entry:
        m = entry["open_world"]
        return "; ".join(parts) + (f"; open world: classes 0-{m - 1} train (validation: their held-out val half), "
                                   f"retrieval is tested on every held-out example of the classes from {m} on")
    if entry.get("task") == "lm_pretraining":
        return "; ".join(parts) + "; " + _lm_summary(source_entry(entry["source"]).get("params", {}))
    if entry.get("task") == "grokking":
        return "; ".join(parts) + (f"; a random {entry['train_fraction']:.0%} of the examples train, a further slice "
                                   "validation (the protocol's val_fraction, default 10%), the rest test (split by the "
                                   "run's data seed, shared by every method)")
    if entry.get("task") == "preference":
        flip = entry.get("label_noise", 0.0)
        return "; ".join(parts) + f"; train preference labels flipped at rate {flip}; held-out pairs clean"
    return "; ".join(parts) + "; clean balanced val/test halves of the held-out split"


def _lm_summary(params: dict) -> str:
    rows = f"{params['seq_len']}-token rows by domain"
    if "noise_fraction" not in params:
        return rows + "; held-out val/test"
    return (f"{rows}, plus {params['redundant_fraction']:.0%} near-duplicate and {params['noise_fraction']:.0%} "
            "random-word training rows (flagged); val/test clean")


def offline() -> bool:
    return os.environ.get("BENCH_OFFLINE", "") not in ("", "0")


def download_source(source: str, archive_path) -> Path:
    """Download (or verify) a source's archive; only for sources of kind `download`."""
    entry = source_entry(source)
    if entry["kind"] != "download":
        raise ValueError(f"source {source!r} is {entry['kind']}, nothing to download")
    module = importlib.import_module(entry["module"], __package__)
    return module.download(entry["url"], Path(archive_path), entry["md5"], offline=offline())


def prepare_source(source: str, raw_dir=None) -> dict:
    """Arrays of the source's train and held-out splits (see data/<module>.py)."""
    entry = source_entry(source)
    if entry["kind"] == "hub" and offline():
        raise RuntimeError(f"source {source!r} streams {entry['params']['path']} from the HuggingFace hub and "
                           "BENCH_OFFLINE is set; unset it, or use an embedded source such as shakespeare_mix")
    module = importlib.import_module(entry["module"], __package__)
    arrays = module.prepare(entry.get("params", {}), raw_dir=raw_dir)
    missing = PREPARED_KEYS[entry.get("task", "classification")] - set(arrays)
    if missing:
        raise RuntimeError(f"source {source!r} prepared without {sorted(missing)}")
    return arrays


@dataclass
class ClassificationData:
    name: str
    modality: str
    num_classes: int
    x_train: np.ndarray
    y_train: np.ndarray  # labels the model is trained on (possibly corrupted)
    y_train_clean: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    # open world (registry key open_world): test classes are disjoint from the training ones and runs
    # are scored by retrieval on their embeddings (lossbench/retrieval.py), not by their logits
    retrieval: bool = False

    @property
    def class_counts(self) -> np.ndarray:
        """Training counts per class of the labels the model sees."""
        return np.bincount(self.y_train, minlength=self.num_classes)

    @property
    def noisy(self) -> np.ndarray:
        return self.y_train != self.y_train_clean


def build(dataset: str, prepared: dict, data_seed: int) -> ClassificationData:
    """The run's variant of `dataset` from its prepared source arrays; seeded by `data_seed`."""
    entry = dataset_entry(dataset)
    rng = np.random.default_rng(data_seed)
    k = int(prepared["num_classes"])
    x, y = prepared["x_train"], prepared["y_train"]
    if "long_tail" in entry:
        keep = transforms.long_tail_indices(y, k, entry["long_tail"], rng)
        x, y = x[keep], y[keep]
    y_seen = y
    if "noise" in entry:
        noise = dict(entry["noise"])
        kind = noise.pop("kind")
        if kind not in transforms.NOISE:
            raise KeyError(f"unknown noise kind {kind!r}; valid: {sorted(transforms.NOISE)}")
        y_seen = transforms.NOISE[kind](y, k, rng=rng, **noise)
    val, test = transforms.balanced_halves(prepared["y_heldout"], k, rng)
    if "open_world" in entry:  # train on classes 0..m-1, test retrieval on the others
        val, test = open_world_split(entry["open_world"], k, prepared["y_heldout"], val)
        k = entry["open_world"]
        x, y, y_seen = x[y < k], y[y < k], y_seen[y < k]
    return ClassificationData(
        name=dataset, modality=modality(dataset), num_classes=k,
        x_train=x, y_train=np.asarray(y_seen, dtype=np.int64), y_train_clean=np.asarray(y, dtype=np.int64),
        x_val=prepared["x_heldout"][val], y_val=prepared["y_heldout"][val],
        x_test=prepared["x_heldout"][test], y_test=prepared["y_heldout"][test], retrieval="open_world" in entry,
    )


def open_world_split(m: int, k: int, y_heldout: np.ndarray, val: np.ndarray):
    """(val, test) indices into the held-out split of an open-world dataset: the val half's examples
    of the m training classes, and every held-out example of the other classes."""
    if not 2 <= m < k:
        raise ValueError(f"open_world: {m} training classes of {k}; needs 2 <= m < {k}")
    return val[y_heldout[val] < m], np.flatnonzero(y_heldout >= m)


def load_prepared(path) -> dict:
    with np.load(path) as z:
        return {key: z[key] for key in z.files}
