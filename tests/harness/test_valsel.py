"""The validation-selected checkpoint of a classification run (issue 19): the trainer keeps the state
at the curve point with the best validation balanced accuracy (the earlier step on ties) and scores it
beside the last step, under every trainer option; evaluation reports it as test_valsel/*."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossbench import io
from lossbench.metrics import classification_metrics
from lossbench.methods.erm import cross_entropy
from lossbench.models import build_model
from lossbench.tasks import classification
from lossbench.train import train
from tests.harness.test_classification_hooks import ATTACK, _spec
from tests.harness.test_train import PROTO, _toy


def _val_curve(res):
    return [(r["step"], r["value"]) for r in res.curves if r["metric"] == "val/balanced_accuracy"]


def _first_argmax(points):
    best = max(v for _, v in points)
    return next(s for s, v in points if v == best)


def _early_peak(switch=9):
    """CE for `switch` steps, then CE towards the next class: validation accuracy rises, then falls.
    Counts its own calls (not `progress`), so a shorter run trains the same first steps."""
    calls = [0]

    def fn(logits, targets, **_):
        calls[0] += 1
        return cross_entropy(logits, targets if calls[0] <= switch else (targets + 1) % logits.shape[1])

    return _spec("early", fn=fn)


def _soft(logits, targets, teacher_logits, alpha):
    p = alpha * F.one_hot(targets, logits.shape[1]) + (1 - alpha) * teacher_logits.softmax(-1)
    return -(p * logits.log_softmax(-1)).sum(-1)


def _case(name):
    """(spec, hparams, protocol, teacher) of one trainer option."""
    if name == "adversarial":
        return _spec("adv", "adversarial"), {}, {**PROTO, "attack": ATTACK}, None
    if name == "stage_teacher":
        teacher = build_model(PROTO["model"], (8,), 4)
        def kd(logits, targets, teacher_logits, aux_logits):  # a second head (DHKD), in the kept state too
            return _soft(logits, targets, teacher_logits, 0.5) + cross_entropy(aux_logits, targets)
        return _spec("kd", fn=kd, needs=("teacher_logits", "aux_logits"), teacher="stage"), {}, PROTO, teacher
    if name == "self_rounds":
        spec = _spec("sd", fn=_soft, needs=("teacher_logits",), teacher="self",
                     defaults={"alpha": 0.5, "rounds": 2}, trainer_hparams=("rounds",))
        return spec, spec.hparams(), PROTO, None
    if name == "optimizer_axis":  # BatchNorm MLP (its running statistics are part of the state) and SGD
        proto = {**PROTO, "model": {"name": "mlp", "hidden": [16], "norm": "batchnorm"},
                 "optimizer": {"name": "sgdp", "lr": 0.1, "momentum": 0.9}}
        return _spec(), {}, proto, None
    return _spec(), {}, PROTO, None


@pytest.mark.parametrize("name", ["plain", "adversarial", "stage_teacher", "self_rounds", "optimizer_axis"])
def test_selected_step_is_the_first_argmax_of_the_recorded_val_curve(name):
    spec, hp, proto, teacher = _case(name)
    res = train(_toy(), spec, hp, proto, init_seed=1, order_seed=2, teacher=teacher)
    assert res.status == "ok"
    curve = _val_curve(res)
    if name == "self_rounds":  # the last round's curve: earlier rounds are the method's teachers
        curve = [(s, v) for s, v in curve if s > 2 * proto["budget"]["steps"]]
    assert res.valsel_step == _first_argmax(curve)
    y_val = _toy().y_val
    bal, _ = classification_metrics(res.valsel_val_scores, y_val, np.bincount(y_val), "val")
    assert bal["val/balanced_accuracy"] == pytest.approx(dict(curve)[res.valsel_step])
    assert res.valsel_test_scores.shape == res.test_scores.shape
    again = train(_toy(), spec, hp, proto, init_seed=1, order_seed=2, teacher=teacher)
    np.testing.assert_array_equal(res.valsel_test_scores, again.valsel_test_scores)  # deterministic
    assert again.valsel_step == res.valsel_step
    if name != "self_rounds":  # the kept state is the state at that step: a run stopped there scores the same
        assert res.valsel_step < proto["budget"]["steps"]  # (these cases select an earlier step)
        stopped = train(_toy(), spec, hp, {**proto, "budget": {**proto["budget"], "steps": res.valsel_step}},
                        init_seed=1, order_seed=2, teacher=teacher)
        np.testing.assert_array_equal(res.valsel_test_scores, stopped.test_scores)


def test_an_early_peak_is_scored_from_that_steps_state(tmp_path):
    """A val curve that peaks at step 12 of 30: the selected scores are exactly those of a run stopped
    at step 12 (same init, data order and updates), and the last step's stay the last step's; the
    evaluation's test_valsel/* are that state's metrics, test/* the last step's."""
    data = _toy()
    res = train(data, _early_peak(), {}, PROTO, init_seed=1, order_seed=2)
    curve = _val_curve(res)
    assert res.valsel_step == _first_argmax(curve) == 12 < curve[-1][0]
    assert dict(curve)[12] - curve[-1][1] > 0.5  # a clear peak
    short = train(data, _early_peak(), {}, {**PROTO, "budget": {**PROTO["budget"], "steps": 12}},
                  init_seed=1, order_seed=2)
    np.testing.assert_array_equal(res.valsel_test_scores, short.test_scores)
    np.testing.assert_array_equal(res.valsel_val_scores, short.val_scores)
    assert not np.array_equal(res.test_scores, short.test_scores)
    # the selection changes nothing in training: the last step's scores are a plain run's
    plain = train(data, _early_peak(), {}, PROTO, init_seed=1, order_seed=2)
    np.testing.assert_array_equal(res.test_scores, plain.test_scores)

    counts = data.class_counts
    io.write_npz(tmp_path / "predictions.npz", y_val=data.y_val, y_test=data.y_test, train_counts=counts,
                 val_scores=res.val_scores, test_scores=res.test_scores)
    io.write_npz(tmp_path / classification.VALSEL, step=np.asarray(res.valsel_step),
                 val_scores=res.valsel_val_scores, test_scores=res.valsel_test_scores)
    info = {"status": "ok", "protocol": PROTO, "samples_per_second": 1.0, "valsel_step": res.valsel_step,
            "outputs_sha256": {n: io.sha256_file(tmp_path / n) for n in ("predictions.npz", classification.VALSEL)},
            "track": "t", "dataset": "toy", "method": "early", "variant": "default", "seed": 0}
    values, _ = classification.evaluate_run(tmp_path, info)
    at_peak, _ = classification_metrics(short.test_scores, data.y_test, counts, "test")
    last, _ = classification_metrics(res.test_scores, data.y_test, counts, "test")
    for m in ("accuracy", "balanced_accuracy", "worst_class_accuracy"):
        assert values[f"test_valsel/{m}"] == at_peak[f"test/{m}"]
        assert values[f"test/{m}"] == last[f"test/{m}"]
    assert values["test_valsel/balanced_accuracy"] > values["test/balanced_accuracy"] + 0.5
    assert values["train/valsel_step"] == 12
    assert values["val_valsel/balanced_accuracy"] == pytest.approx(dict(curve)[12])
    assert set(classification.VALSEL_METRICS) <= set(values)


def test_a_tie_keeps_the_earlier_step():
    """A loss with zero gradient leaves the model as it was: every curve point ties, the first wins."""
    flat = _spec("flat", fn=lambda logits, targets, **_: (logits * 0).sum(1))
    res = train(_toy(), flat, {}, PROTO, init_seed=1, order_seed=2)
    curve = _val_curve(res)
    assert len({v for _, v in curve}) == 1 and res.valsel_step == curve[0][0] < curve[-1][0]
    np.testing.assert_array_equal(res.valsel_test_scores, res.test_scores)  # the same state, restored


def test_a_diverged_run_has_no_selected_checkpoint(tmp_path):
    nan = _spec("nan", fn=lambda logits, targets, **_: logits.sum(1) * float("nan"))
    res = train(_toy(), nan, {}, PROTO, init_seed=1, order_seed=2)
    assert res.status == "diverged" and res.valsel_step is None and res.valsel_test_scores is None


def test_no_valsel_artefact_gives_nan_metrics(tmp_path):
    """A run trained before the artefact existed (not in its outputs_sha256): NaN, not an error."""
    data = _toy()
    io.write_npz(tmp_path / "predictions.npz", y_val=data.y_val, y_test=data.y_test, train_counts=data.class_counts,
                 val_scores=np.zeros((len(data.y_val), 4)), test_scores=np.zeros((len(data.y_test), 4)))
    info = {"status": "ok", "protocol": PROTO, "samples_per_second": 1.0,
            "outputs_sha256": {"predictions.npz": io.sha256_file(tmp_path / "predictions.npz")},
            "track": "t", "dataset": "toy", "method": "erm", "variant": "default", "seed": 0}
    values, _ = classification.evaluate_run(tmp_path, info)
    assert all(np.isnan(values[m]) for m in classification.VALSEL_METRICS)
    assert not np.isnan(values["test/balanced_accuracy"])


def test_the_copied_state_is_independent_of_later_updates():
    """The kept state is a copy: later optimiser steps (in-place) must not reach it."""
    from lossbench.train import _state_copy

    model = build_model(PROTO["model"], (8,), 4)
    kept = _state_copy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(not torch.equal(kept[k], v) for k, v in model.state_dict().items())
