import numpy as np
from sklearn.metrics import balanced_accuracy_score

from lossbench.metrics import classification_metrics, expected_calibration_error


def test_ece_by_hand():
    # two bins used: conf 0.9 (2 samples, 1 correct) and conf 0.6 (2 samples, 2 correct)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert np.isclose(expected_calibration_error(probs, y), expected)


def test_metrics_against_sklearn_and_hand_values():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    scores = rng.normal(size=(60, 3)) + 2.0 * np.eye(3)[y]
    counts = np.array([500, 50, 5])
    m, recall = classification_metrics(scores, y, counts)
    pred = scores.argmax(1)
    assert np.isclose(m["test/balanced_accuracy"], balanced_accuracy_score(y, pred))
    assert np.isclose(m["test/worst_class_accuracy"], recall.min())
    assert np.isclose(m["test/acc_many"], recall[0]) and np.isclose(m["test/acc_few"], recall[2])
    assert np.isclose(m["test/acc_medium"], recall[1])
    logp = scores - np.log(np.exp(scores).sum(1, keepdims=True))
    assert np.isclose(m["test/nll"], -logp[np.arange(60), y].mean())


def test_missing_shot_group_is_nan():
    y = np.array([0, 1])
    m, _ = classification_metrics(np.eye(2), y, np.array([500, 300]))
    assert np.isnan(m["test/acc_few"]) and m["test/accuracy"] == 1.0
