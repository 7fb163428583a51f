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
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from data import transforms

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
    if entry.get("task") == "lm_pretraining":
        return "; ".join(parts) + "; " + _lm_summary(source_entry(entry["source"]).get("params", {}))
    if entry.get("task") == "grokking":
        return "; ".join(parts) + (f"; a random {entry['train_fraction']:.0%} of the examples train, the rest test "
                                   "(split by the run's data seed, shared by every method)")
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
    module = importlib.import_module(entry["module"])
    return module.download(entry["url"], Path(archive_path), entry["md5"], offline=offline())


def prepare_source(source: str, raw_dir=None) -> dict:
    """Arrays of the source's train and held-out splits (see data/<module>.py)."""
    entry = source_entry(source)
    if entry["kind"] == "hub" and offline():
        raise RuntimeError(f"source {source!r} streams {entry['params']['path']} from the HuggingFace hub and "
                           "BENCH_OFFLINE is set; unset it, or use an embedded source such as shakespeare_mix")
    module = importlib.import_module(entry["module"])
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
    return ClassificationData(
        name=dataset, modality=modality(dataset), num_classes=k,
        x_train=x, y_train=np.asarray(y_seen, dtype=np.int64), y_train_clean=np.asarray(y, dtype=np.int64),
        x_val=prepared["x_heldout"][val], y_val=prepared["y_heldout"][val],
        x_test=prepared["x_heldout"][test], y_test=prepared["y_heldout"][test],
    )


def load_prepared(path) -> dict:
    with np.load(path) as z:
        return {key: z[key] for key in z.files}
