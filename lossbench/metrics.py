"""Shared classification metrics (card P3), identical for every method.

Accuracy, balanced accuracy, macro-F1 and per-class recall come from scikit-learn; ECE (15 equal-
width bins on max-softmax confidence) and the many/medium/few split are written here because
scikit-learn has neither.
"""
from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from sklearn import metrics as skm

# OLTR convention: classes with > 100 training images are "many", 20..100 "medium", < 20 "few".
MANY_MIN, FEW_MAX = 100, 20


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def per_class_recall(pred: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.arange(num_classes)
    return skm.recall_score(y, pred, labels=labels, average=None, zero_division=0)


def shot_accuracy(recall: np.ndarray, train_counts: np.ndarray) -> dict:
    groups = {
        "acc_many": train_counts > MANY_MIN,
        "acc_medium": (train_counts >= FEW_MAX) & (train_counts <= MANY_MIN),
        "acc_few": train_counts < FEW_MAX,
    }
    return {k: float(recall[m].mean()) if m.any() else float("nan") for k, m in groups.items()}


def classification_metrics(scores: np.ndarray, y: np.ndarray, train_counts: np.ndarray, prefix: str = "test"):
    """Metrics of `scores` (logits used for prediction) against labels `y`.

    Returns (dict metric -> value, per-class recall array). Probabilities are softmax(scores) in
    float64; for methods whose training link is not the softmax this is still how ECE and NLL
    are read (card P3).
    """
    k = len(train_counts)
    logp = log_softmax(scores.astype(np.float64), axis=1)
    probs = np.exp(logp)
    pred = scores.argmax(1)
    recall = per_class_recall(pred, y, k)
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": float(recall[np.bincount(y, minlength=k) > 0].mean()),
        "worst_class_accuracy": float(recall[np.bincount(y, minlength=k) > 0].min()),
        "macro_f1": skm.f1_score(y, pred, labels=np.arange(k), average="macro", zero_division=0),
        "ece": expected_calibration_error(probs, y),
        "nll": float(-logp[np.arange(len(y)), y].mean()),
        **shot_accuracy(recall, np.asarray(train_counts)),
    }
    return {f"{prefix}/{name}": float(v) for name, v in out.items()}, recall


COVERAGE_N = (1, 4, 16)  # pass@N-style budgets of the coverage metric (card C10)


def coverage_metrics(scores: np.ndarray, y: np.ndarray, prefix: str = "test") -> dict:
    """Sampled coverage mean_i 1 − (1 − p_{y_i})^N (the chance that N samples from softmax(scores)
    include the label: DCO's target, card C10) and top-5 accuracy (when there are > 5 classes)."""
    logp_y = log_softmax(scores.astype(np.float64), axis=1)[np.arange(len(y)), y]
    out = {f"{prefix}/coverage_n{n}": float(np.mean(-np.expm1(n * np.log1p(-np.exp(logp_y)))))
           for n in COVERAGE_N}
    if scores.shape[1] > 5:
        top5 = np.argsort(-scores, axis=1, kind="stable")[:, :5]
        out[f"{prefix}/top5_accuracy"] = float((top5 == y[:, None]).any(1).mean())
    return out


def robust_metrics(robust_scores: np.ndarray, y: np.ndarray, num_classes: int, prefix: str = "test"):
    """Accuracy under the protocol's PGD attack (card P3 adversarial extras): overall, balanced and
    worst class; returns (dict, per-class robust recall)."""
    pred = robust_scores.argmax(1)
    recall = per_class_recall(pred, y, num_classes)
    present = np.bincount(y, minlength=num_classes) > 0
    return ({f"{prefix}/robust_accuracy": float((pred == y).mean()),
             f"{prefix}/robust_balanced_accuracy": float(recall[present].mean()),
             f"{prefix}/robust_worst_class_accuracy": float(recall[present].min())}, recall)


def teacher_metrics(scores: np.ndarray, teacher_scores: np.ndarray, prefix: str = "test") -> dict:
    """Student–teacher top-1 agreement and KL(teacher ‖ student) of the softmaxes (card P3
    distillation extras)."""
    logq = log_softmax(teacher_scores.astype(np.float64), axis=1)
    logp = log_softmax(scores.astype(np.float64), axis=1)
    return {f"{prefix}/teacher_agreement": float((scores.argmax(1) == teacher_scores.argmax(1)).mean()),
            f"{prefix}/kl_teacher": float((np.exp(logq) * (logq - logp)).sum(1).mean())}
