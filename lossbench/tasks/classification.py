"""The classification task: long-tailed / noisy-label datasets, the shared trainer, card P3 metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import data
import methods
from lossbench import io
from lossbench.metrics import classification_metrics
from lossbench.models import MODELS

PROTOCOL_SCHEMA = "protocol_classification"
METHOD_KINDS = ("loss", "batch_loss", "reweight", "sampler")
METRICS = [f"test/{m}" for m in ("accuracy", "balanced_accuracy", "worst_class_accuracy", "macro_f1",
                                 "ece", "nll", "acc_many", "acc_medium", "acc_few")] + ["val/balanced_accuracy"]


def check_protocol(proto: dict, where: str, track: dict) -> None:
    from lossbench.config import ConfigError, require_dataset_task, unknown_name

    require_dataset_task(proto, where, "classification")
    if proto["model"]["name"] not in MODELS:
        raise unknown_name("model", proto["model"]["name"], MODELS, f"{where}/model")
    sched = proto["schedule"]
    milestones, factors = sched.get("milestones", []), sched.get("factors", [])
    if sched["name"] == "step" and (not milestones or len(milestones) != len(factors)):
        raise ConfigError(f"{where}/schedule: step needs milestones and factors of equal length")


def train_inputs(run: dict, stage_dir, profile: str) -> dict:
    """The prepared source (rules download_source/prepare_source); no per-seed stages."""
    return {"data": f"resources/data/{data.source_of(run['dataset'])}/prepared.npz"}


def eval_inputs(run: dict, run_dir, stage_dir) -> dict:
    return {}  # train_run already wrote predictions.npz beside train.json


def train_run(run: dict, inputs: dict, out_dir: Path, device: str, log) -> dict:
    from lossbench.train import train  # torch-heavy: imported only when a run trains

    ds = data.build(run["dataset"], data.load_prepared(inputs["data"]), run["seeds"]["data"])
    log.info(f"{len(ds.y_train)} train examples, class counts {ds.class_counts.tolist()}, "
             f"{ds.noisy.mean():.3f} noisy labels")
    res = train(ds, methods.get(run["method"]), run["hparams"], run["protocol"], run["seeds"]["init"],
                run["seeds"]["order"], device=device, log=log.info)
    keys = {k: run[k] for k in ("track", "dataset", "method", "variant", "seed")}
    curves = pd.DataFrame([{**keys, **row} for row in res.curves], columns=list(keys) + ["step", "epoch", "metric", "value"])
    io.write_csv(out_dir / "curves.csv", curves)
    arrays = {"y_val": ds.y_val, "y_test": ds.y_test, "train_counts": ds.class_counts}
    if res.status == "ok":
        arrays.update(val_scores=res.val_scores, test_scores=res.test_scores)
    io.write_npz(out_dir / "predictions.npz", **arrays)
    return {"status": res.status, "diverged_at_step": res.diverged_at_step, "steps": res.steps,
            "train_seconds": res.train_seconds, "samples_per_second": res.samples_per_second,
            "noisy_fraction": float(ds.noisy.mean())}


def evaluate_run(run_dir: Path, info: dict):
    pred = data.load_prepared(run_dir / "predictions.npz")
    counts = pred["train_counts"]
    if info["status"] != "ok":  # diverged: every metric is recorded as missing, the run itself is kept
        values, recall = {m: float("nan") for m in METRICS}, np.full(len(counts), np.nan)
    else:
        values, recall = classification_metrics(pred["test_scores"], pred["y_test"], counts, "test")
        val_values, _ = classification_metrics(pred["val_scores"], pred["y_val"], counts, "val")
        values["val/balanced_accuracy"] = val_values["val/balanced_accuracy"]
    values["train/samples_per_second"] = info["samples_per_second"]
    keys = {k: info[k] for k in ("track", "dataset", "method", "variant", "seed")}
    per_class = pd.DataFrame({**keys, "class": np.arange(len(counts)), "train_count": counts, "test_recall": recall})
    return values, per_class
