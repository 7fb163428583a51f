"""The classification task: long-tailed / noisy-label datasets, the shared trainer, card P3 metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lossbench import data
from lossbench import methods
from lossbench import io
from lossbench.metrics import (COVERAGE_N, classification_metrics, coverage_metrics, robust_metrics,
                               teacher_metrics)
from lossbench.models import MODELS
from lossbench.retrieval import METRIC_NAMES as RETRIEVAL_NAMES, recall_at_1, retrieval_metrics

PROTOCOL_SCHEMA = "protocol_classification"
METHOD_KINDS = ("loss", "batch_loss", "reweight", "sampler", "adversarial", "embedding")
OPTIMIZER_AXIS = True  # tracks may add optimizer_axis (optimizer x loss; lossbench.config.variants)
# what train_run writes; train.json records their sha256. predictions_valsel.npz: the scores of the
# validation-selected checkpoint (lossbench.train: best val balanced accuracy over the curve points)
ARTEFACTS = ("curves.csv", "predictions.npz", "predictions_valsel.npz")
VALSEL = "predictions_valsel.npz"
SELECTION = {"metric": "val/balanced_accuracy", "higher_is_better": True}  # a sweep's variant (report/selection.py)
METRICS = ([f"test/{m}" for m in ("accuracy", "balanced_accuracy", "worst_class_accuracy", "macro_f1",
                                  "ece", "nll", "acc_many", "acc_medium", "acc_few")]
           + [f"test/coverage_n{n}" for n in COVERAGE_N] + ["val/balanced_accuracy"])
# the validation-selected checkpoint's test metrics (same names under test_valsel/), its validation
# balanced accuracy (the curve's maximum) and the step it came from; NaN where there is none
VALSEL_METRICS = ([f"test_valsel/{m}" for m in ("accuracy", "balanced_accuracy", "worst_class_accuracy", "macro_f1",
                                                "ece", "nll", "acc_many", "acc_medium", "acc_few")]
                  + ["val_valsel/balanced_accuracy", "train/valsel_step"])
# an open-world dataset (registry key open_world) is scored by retrieval on the classes it never
# trained on (lossbench/retrieval.py), from the embeddings predictions.npz holds instead of scores
# (with the flag `retrieval`); its checkpoint is selected on validation Recall@1 (seen classes)
RETRIEVAL_METRICS = [f"test/{m}" for m in RETRIEVAL_NAMES] + ["val/recall_at_1"]
RETRIEVAL_VALSEL_METRICS = ([f"test_valsel/{m}" for m in RETRIEVAL_NAMES]
                            + ["val_valsel/recall_at_1", "train/valsel_step"])
ROBUST_METRICS = [f"test/{m}" for m in ("robust_accuracy", "robust_balanced_accuracy", "robust_worst_class_accuracy")]
TEACHER_METRICS = ["test/teacher_agreement", "test/kl_teacher"]


def check_protocol(proto: dict, where: str, track: dict) -> None:
    from lossbench.config import ConfigError, methods_on, require_dataset_task, unknown_name

    require_dataset_task(proto, where, "classification")
    if proto["model"]["name"] not in MODELS:
        raise unknown_name("model", proto["model"]["name"], MODELS, f"{where}/model")
    sched = proto["schedule"]
    milestones, factors = sched.get("milestones", []), sched.get("factors", [])
    if sched["name"] == "step" and (not milestones or len(milestones) != len(factors)):
        raise ConfigError(f"{where}/schedule: step needs milestones and factors of equal length")
    for d in proto["datasets"]:
        check_open_world(d, proto, track, where)
    ran = {m for d in proto["datasets"] for m in methods_on(track, d)}
    for m in sorted(ran):
        spec = methods.get(m)
        if spec.kind == "adversarial" and "attack" not in proto:
            raise ConfigError(f"{where}: method {m!r} trains adversarially and needs an `attack` block")
        if spec.teacher == "stage" and "teacher" not in proto:
            raise ConfigError(f"{where}: method {m!r} distils from the track's teacher and needs a `teacher` block")
    if "teacher" in proto and proto["teacher"]["model"]["name"] not in MODELS:
        raise unknown_name("teacher model", proto["teacher"]["model"]["name"], MODELS, f"{where}/teacher/model")


def open_world(dataset: str) -> bool:
    return "open_world" in data.dataset_entry(dataset)


def runs_on(method: str, dataset: str) -> bool:
    """Whether a track's method runs on `dataset` by default (config.methods_on): an embedding method
    trains no classifier head, so only on open-world datasets; every other method anywhere."""
    return methods.get(method).kind != "embedding" or open_world(dataset)


def check_open_world(dataset: str, proto: dict, track: dict, where: str) -> None:
    """Embedding methods train no classifier head, so they run on open-world datasets only (a
    dataset_methods entry cannot list them elsewhere); those are scored by retrieval, with no
    attack, teacher or choice of variants on validation balanced accuracy (sweep or tuning)."""
    from lossbench.config import ConfigError, methods_on

    if not open_world(dataset):
        heads = [m for m in methods_on(track, dataset) if methods.get(m).kind == "embedding"]
        if heads:
            raise ConfigError(f"{where}: embedding methods {heads} train no classifier head; they run only on "
                              f"open-world datasets (registry key open_world), not on {dataset!r}")
        return
    blocked = [k for k in ("attack", "teacher") if k in proto] + [k for k in ("tuning", "sweep") if track.get(k)]
    if blocked:
        raise ConfigError(f"{where}: {dataset!r} is an open-world dataset, scored by retrieval: its protocol takes "
                          f"no {', '.join(blocked)}")


def train_inputs(run: dict, stage_dir, profile: str) -> dict:
    """The prepared source (rules download_source/prepare_source) and, for a method distilling
    from the track's teacher, the seed's cached teacher (rule classification_teacher)."""
    out = {"data": f"resources/data/{data.source_of(run['dataset'])}/prepared.npz"}
    if methods.get(run["method"]).teacher == "stage":
        out["teacher"] = teacher_path(stage_dir, run["dataset"])
    return out


def teacher_path(stage_dir, dataset: str) -> str:
    return f"{stage_dir}/teacher_{dataset}.pt"


def teacher_protocol(proto: dict) -> dict:
    """The protocol the teacher trains under: the student's, with the `teacher` block's entries
    (model, budget, optimizer, schedule) replacing the student's, and no attack."""
    block = proto.get("teacher")
    if not block:
        raise ValueError("this protocol has no `teacher` block; distillation methods need one")
    return {**{k: v for k, v in proto.items() if k not in ("teacher", "attack")}, **block}


def build_teacher(track: str, proto: dict, seed: int, dataset: str, data_path, out_path, device: str = "cpu") -> None:
    """Train the (track, protocol, dataset, seed) teacher with plain CE on the students' data
    (same data seed) and save its weights with its validation and test scores."""
    import torch

    from lossbench.config import data_seed as run_data_seed
    from lossbench.runner import resolve_device, run_logger
    from lossbench.seeding import derive_seed
    from lossbench.train import InputPipeline, train

    device = resolve_device(device)
    log = run_logger(Path(out_path).with_suffix(".log"))
    io.check_sidecar(data_path)  # the prepared source the prepare step recorded
    ds = data.build(dataset, io.read_npz(data_path), run_data_seed(track, dataset, seed))
    tproto = teacher_protocol(proto)
    res = train(ds, methods.get("erm"), {}, tproto, derive_seed(track, dataset, seed, "teacher_init"),
                derive_seed(track, dataset, seed, "teacher_order"), device=device, log=log.info)
    if res.status != "ok":
        raise RuntimeError(f"teacher for {dataset} seed {seed} diverged at step {res.diverged_at_step}")
    values, _ = classification_metrics(res.test_scores, ds.y_test, ds.class_counts, "test")
    log.info(f"teacher {tproto['model']}: test accuracy {values['test/accuracy']:.4f}, "
             f"balanced {values['test/balanced_accuracy']:.4f}")
    # the shape the model was built for: images go channels-first (InputPipeline), not as stored
    shape = InputPipeline(ds.modality, "none", "cpu", 0).to_device(ds.x_train[:1]).shape[1:]
    # tensors and plain values only: load_teacher reads it with torch.load(weights_only=True)
    io.write_torch(out_path, {"model": tproto["model"], "input_shape": [int(n) for n in shape],
                              "num_classes": int(ds.num_classes), "modality": str(ds.modality),
                              "state_dict": {k: v.cpu() for k, v in res.model.state_dict().items()},
                              "val_scores": torch.from_numpy(np.ascontiguousarray(res.val_scores)),
                              "test_scores": torch.from_numpy(np.ascontiguousarray(res.test_scores)),
                              "metrics": {k: float(v) for k, v in values.items()}})


def load_teacher(path, device):
    """(frozen teacher model, its saved test scores and metrics) from a build_teacher file, read with
    torch.load(weights_only=True): tensors and plain values only, no pickled code."""
    import pickle

    import torch

    from lossbench.models import build_model

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise io.CorruptFile(path, f"not a weights-only teacher file (written before teachers were saved as "
                                   f"tensors and plain values? delete it to rebuild): {str(e).splitlines()[0]}") from None
    except (RuntimeError, EOFError) as e:
        raise io.CorruptFile(path, f"{type(e).__name__}: {str(e).splitlines()[0]}") from None
    blob = {**blob, **{k: blob[k].numpy() for k in ("val_scores", "test_scores")}}
    model = build_model(blob["model"], blob["input_shape"], blob["num_classes"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), blob


def eval_inputs(run: dict, run_dir, stage_dir) -> dict:
    return {}  # train_run already wrote predictions.npz beside train.json


def train_run(run: dict, inputs: dict, out_dir: Path, device: str, log) -> dict:
    from lossbench.train import train  # torch-heavy: imported only when a run trains

    ds = data.build(run["dataset"], io.read_npz(inputs["data"]), run["seeds"]["data"])
    log.info(f"{len(ds.y_train)} train examples, class counts {ds.class_counts.tolist()}, "
             f"{ds.noisy.mean():.3f} noisy labels")
    teacher = blob = None
    if "teacher" in inputs:
        teacher, blob = load_teacher(inputs["teacher"], device)
        log.info(f"teacher {blob['model']}: test accuracy {blob['metrics']['test/accuracy']:.4f}")
    res = train(ds, methods.get(run["method"]), run["hparams"], run["protocol"], run["seeds"]["init"],
                run["seeds"]["order"], device=device, log=log.info, teacher=teacher)
    return write_run(run, ds, res, out_dir, blob)


def train_together_runs(runs: list[dict], inputs: dict, out_dirs: list[Path], device: str, logs) -> list[dict]:
    """train_run for the seeds of one (dataset, method, variant) trained as one stacked model
    (lossbench.train_together): each seed's artefacts in its own folder, as train_run writes them."""
    from lossbench.train_together import train_together

    first = runs[0]
    raw = io.read_npz(inputs["data"])  # one prepared source, each seed's own draw from it
    datas = [data.build(r["dataset"], raw, r["seeds"]["data"]) for r in runs]
    results = train_together(datas, methods.get(first["method"]), first["hparams"], first["protocol"],
                             [r["seeds"]["init"] for r in runs], [r["seeds"]["order"] for r in runs], device=device,
                             logs=[log.info for log in logs])
    return [write_run(r, ds, res, out, None) for r, ds, res, out in zip(runs, datas, results, out_dirs)]


def write_run(run: dict, ds, res, out_dir: Path, blob) -> dict:
    """A trained run's artefacts (curves.csv, predictions.npz, predictions_valsel.npz) and the
    result entries of its train.json."""
    keys = {k: run[k] for k in ("track", "dataset", "method", "variant", "seed")}
    curves = pd.DataFrame([{**keys, **row} for row in res.curves], columns=list(keys) + ["step", "epoch", "metric", "value"])
    io.write_csv(out_dir / "curves.csv", curves)
    arrays = {"y_val": ds.y_val, "y_test": ds.y_test, "train_counts": ds.class_counts}
    outputs = "embeddings" if ds.retrieval else "scores"
    if ds.retrieval:  # what evaluate_run reads to score retrieval, diverged or not
        arrays["retrieval"] = np.bool_(True)
    if res.status == "ok":
        arrays.update({f"val_{outputs}": res.val_scores, f"test_{outputs}": res.test_scores})
        if res.robust_test_scores is not None:
            arrays["robust_test_scores"] = res.robust_test_scores
    if blob is not None:
        arrays["teacher_test_scores"] = blob["test_scores"]
    io.write_npz(out_dir / "predictions.npz", **arrays)
    # always written (a diverged run: step -1 and no scores), so every run records the same artefacts
    valsel = {"step": np.asarray(-1 if res.valsel_step is None else res.valsel_step, dtype=np.int64)}
    if res.status == "ok" and res.valsel_step is not None:
        valsel.update({f"val_{outputs}": res.valsel_val_scores, f"test_{outputs}": res.valsel_test_scores})
    io.write_npz(out_dir / VALSEL, **valsel)
    return {"status": res.status, "diverged_at_step": res.diverged_at_step, "steps": res.steps,
            "train_seconds": res.train_seconds, "samples_per_second": res.samples_per_second,
            "noisy_fraction": float(ds.noisy.mean()), "rounds": res.rounds,
            "optimizer_state_mb": res.optimizer_state_bytes / 2**20, "valsel_step": res.valsel_step,
            "teacher_test_accuracy": None if blob is None else blob["metrics"]["test/accuracy"]}


def valsel_metrics(run_dir: Path, info: dict, pred) -> dict:
    """VALSEL_METRICS (open world: RETRIEVAL_VALSEL_METRICS) from predictions_valsel.npz (checked
    against train.json by runner.evaluate_run before this reads it): NaN for a run that has none
    (diverged, or trained before the artefact existed)."""
    retrieval = "retrieval" in pred
    values = {m: float("nan") for m in (RETRIEVAL_VALSEL_METRICS if retrieval else VALSEL_METRICS)}
    if info["status"] != "ok" or VALSEL not in (info.get("outputs_sha256") or {}):
        return values
    sel = io.read_npz(run_dir / VALSEL)
    step = int(sel["step"])
    if info.get("valsel_step") != (None if step < 0 else step):
        raise ValueError(f"{run_dir / VALSEL}: step {step} is not train.json's valsel_step {info.get('valsel_step')}")
    if retrieval:
        if "test_embeddings" not in sel:
            return values
        return {**values, **retrieval_metrics(sel["test_embeddings"], pred["y_test"], "test_valsel"),
                "val_valsel/recall_at_1": recall_at_1(sel["val_embeddings"], pred["y_val"]),
                "train/valsel_step": float(step)}
    if "test_scores" not in sel:
        return values
    counts = pred["train_counts"]
    test, _ = classification_metrics(sel["test_scores"], pred["y_test"], counts, "test_valsel")
    val, _ = classification_metrics(sel["val_scores"], pred["y_val"], counts, "val_valsel")
    return {**values, **test, "val_valsel/balanced_accuracy": val["val_valsel/balanced_accuracy"],
            "train/valsel_step": float(step)}


def evaluate_retrieval(run_dir: Path, info: dict, pred) -> dict:
    """RETRIEVAL_METRICS of an open-world run (and its validation-selected checkpoint's); NaN when it
    diverged."""
    values = {m: float("nan") for m in RETRIEVAL_METRICS}
    if info["status"] == "ok":
        values.update(retrieval_metrics(pred["test_embeddings"], pred["y_test"]))
        values["val/recall_at_1"] = recall_at_1(pred["val_embeddings"], pred["y_val"])
    return {**values, **valsel_metrics(run_dir, info, pred)}


def evaluate_run(run_dir: Path, info: dict):
    pred = io.read_npz(run_dir / "predictions.npz")
    if "retrieval" in pred:  # an open-world run: no class in common with training, no per-class recall
        values, per_class = evaluate_retrieval(run_dir, info, pred), None
    else:
        values, per_class = evaluate_scores(run_dir, info, pred)
    values["train/samples_per_second"] = info["samples_per_second"]
    values["train/optimizer_state_mb"] = info.get("optimizer_state_mb", float("nan"))
    return values, per_class


def evaluate_scores(run_dir: Path, info: dict, pred):
    """(METRICS and the extras the run has, per-class DataFrame) of a run scored by its logits."""
    counts = pred["train_counts"]
    attacked = "attack" in info["protocol"]
    robust_recall = np.full(len(counts), np.nan)
    if info["status"] != "ok":  # diverged: every metric is recorded as missing, the run itself is kept
        names = METRICS + (ROBUST_METRICS if attacked else []) + (TEACHER_METRICS if "teacher_test_scores" in pred else [])
        values, recall = {m: float("nan") for m in names}, np.full(len(counts), np.nan)
    else:
        test = pred["test_scores"]
        values, recall = classification_metrics(test, pred["y_test"], counts, "test")
        values.update(coverage_metrics(test, pred["y_test"]))
        val_values, _ = classification_metrics(pred["val_scores"], pred["y_val"], counts, "val")
        values["val/balanced_accuracy"] = val_values["val/balanced_accuracy"]
        if "robust_test_scores" in pred:
            robust, robust_recall = robust_metrics(pred["robust_test_scores"], pred["y_test"], len(counts))
            values.update(robust)
        if "teacher_test_scores" in pred:
            values.update(teacher_metrics(test, pred["teacher_test_scores"]))
    values.update(valsel_metrics(run_dir, info, pred))
    keys = {k: info[k] for k in ("track", "dataset", "method", "variant", "seed")}
    per_class = pd.DataFrame({**keys, "class": np.arange(len(counts)), "train_count": counts, "test_recall": recall,
                              **({"robust_recall": robust_recall} if attacked else {})})
    return values, per_class
