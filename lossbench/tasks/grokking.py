"""The grokking task: full-batch training on an algorithmic dataset until (or whether) the test
accuracy jumps long after the training set is fit (Prieto et al., ICLR 2025, arXiv:2501.04697).

One run per (method, seed) trains with lossbench.grokking; every method of a seed shares the
train/val/test split (data seed; data/algorithmic.py: split_train_val_test) and the model init, so
differences are paired. The dataset's `train_fraction` of the examples train; the protocol's
`val_fraction` (default 0.1) of all examples, a seeded slice of the held-out ones, is the
validation split a sweep's variant is chosen on (`val/max_accuracy`); the rest is test. No stages:
a run reads its prepared source only. Steps to grok is the time-to-target metric: the first logged
step with test accuracy ≥ 0.95, NaN when never reached, with `test/grokked` saying which.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lossbench import data
from lossbench import methods
from lossbench import io

PROTOCOL_SCHEMA = "protocol_grokking"
METHOD_KINDS = ("loss", "grad_transform")
METHOD_OPTIMIZER = True  # the trainer builds the optimiser per run: methods may set optimizer_hparams
ARTEFACTS = ("curves.csv", "final.json")  # what train_run writes; train.json records their sha256
SELECTION = {"metric": "val/max_accuracy", "higher_is_better": True}  # a sweep's variant (report/selection.py)
OPTIMIZER_KEYS = {"adamw": {"lr", "betas", "eps", "weight_decay"}, "adam": {"lr", "betas", "eps", "weight_decay"},
                  "sgd": {"lr", "momentum", "nesterov", "weight_decay"}}


def check_protocol(proto: dict, where: str, track: dict) -> None:
    from lossbench.config import ConfigError, require_dataset_task

    require_dataset_task(proto, where, "grokking")
    name = proto["optimizer"]["name"]
    for m in track["methods"]:
        spec = methods.get(m)
        if spec.needs:
            raise ConfigError(f"{where}: method {m!r} needs {list(spec.needs)}, which the full-batch grokking "
                              "trainer does not provide")
        foreign = set(spec.optimizer_hparams) - OPTIMIZER_KEYS[name]
        if foreign:
            raise ConfigError(f"{where}: method {m!r} sets {sorted(foreign)}, which optimizer {name!r} does not "
                              f"take (valid: {sorted(OPTIMIZER_KEYS[name])})")
    if proto["eval"]["every"] > proto["budget"]["steps"]:
        raise ConfigError(f"{where}/eval/every ({proto['eval']['every']}) exceeds budget/steps")
    val = val_fraction(proto)
    for name in proto["datasets"]:
        train = data.dataset_entry(name)["train_fraction"]
        if train + val > 1 - 1e-9:
            raise ConfigError(f"{where}/val_fraction: {val} with {name}'s train_fraction {train} leaves no test "
                              "examples (train_fraction + val_fraction must be < 1)")


def val_fraction(proto: dict) -> float:
    """The protocol's share of all examples held out for validation (data/algorithmic.py)."""
    from lossbench.data import algorithmic

    return float(proto.get("val_fraction", algorithmic.VAL_FRACTION))


def train_inputs(run: dict, stage_dir, profile: str) -> dict:
    return {"data": f"resources/data/{data.source_of(run['dataset'])}/prepared.npz"}


def eval_inputs(run: dict, run_dir, stage_dir) -> dict:
    return {}  # train_run writes final.json beside train.json


def train_run(run: dict, inputs: dict, out_dir: Path, device: str, log) -> dict:
    import torch

    from lossbench.data import algorithmic
    from lossbench.grokking import train_grokking
    from lossbench.seeding import derive_seed

    arrays = io.read_npz(inputs["data"])
    train, val, test = algorithmic.split_train_val_test(arrays, data.dataset_entry(run["dataset"])["train_fraction"],
                                                        val_fraction(run["protocol"]), run["seeds"]["data"])
    x, y = torch.from_numpy(arrays["x"]).to(device), torch.from_numpy(arrays["y"]).to(device)
    log.info(f"{len(train)} train / {len(val)} val / {len(test)} test examples, {int(arrays['num_classes'])} classes")
    init_seed = derive_seed(run["seeds"]["data"], "init")  # shared by every method of the seed: paired
    res = train_grokking(x[train], y[train], x[test], y[test], int(arrays["num_classes"]), methods.get(run["method"]),
                         run["hparams"], run["protocol"], init_seed, log=log.info, x_val=x[val], y_val=y[val])
    keys = {k: run[k] for k in ("track", "dataset", "method", "variant", "seed")}
    io.write_csv(out_dir / "curves.csv", pd.DataFrame([{**keys, **row} for row in res.curves],
                                                      columns=list(keys) + ["step", "metric", "value"]))
    io.write_json(out_dir / "final.json", res.final)
    return {"status": res.status, "diverged_at_step": res.diverged_at_step, "steps": res.steps,
            "stopped_early": res.stopped_early, "train_seconds": res.train_seconds, "steps_per_second": res.steps / max(res.train_seconds, 1e-9),
            "train_examples": len(train), "val_examples": len(val), "test_examples": len(test)}


def evaluate_run(run_dir: Path, info: dict):
    final = io.read_json(run_dir / "final.json")
    if info["status"] != "ok":  # diverged: every metric is recorded as missing; curves.csv keeps the history
        final = {k: math.nan for k in final}
    values = {k: float(v) if v is not None else math.nan for k, v in final.items()}
    values["train/steps_per_second"] = info["steps_per_second"]
    return values, None
