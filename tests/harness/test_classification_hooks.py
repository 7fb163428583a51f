"""Trainer hooks of classification part 2: PGD, adversarial kind, teacher / aux-head / features
needs, self-distillation rounds, robust and teacher metrics, the optimizer axis."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossbench import config as lbconfig
from lossbench.adversarial import pgd_attack
from lossbench.metrics import coverage_metrics, robust_metrics, teacher_metrics
from lossbench.models import build_model
from lossbench.train import train
from lossbench.methods.base import MethodSpec
from lossbench.methods.erm import cross_entropy
from tests.harness.test_train import PROTO, _toy

ATTACK = {"eps": 0.3, "step_size": 0.1, "steps": 3, "eval_steps": 5}


def _spec(name="probe", kind="loss", fn=None, needs=(), **kw):
    return MethodSpec(name=name, kind=kind, fn=fn or (lambda logits, targets, **_: cross_entropy(logits, targets)),
                      defaults=kw.pop("defaults", {}), paper="test", url="https://example.org", docs="T",
                      needs=tuple(needs), **kw)


def test_pgd_stays_in_the_ball_and_raises_the_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    gen = torch.Generator().manual_seed(1)
    x_adv = pgd_attack(model, x, y, eps=0.2, step_size=0.05, steps=10, gen=gen)
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6
    assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y) + 0.05
    again = pgd_attack(model, x, y, eps=0.2, step_size=0.05, steps=10, gen=torch.Generator().manual_seed(1))
    assert torch.equal(x_adv, again)  # the random start comes from the generator
    pix = pgd_attack(model, torch.rand(64, 8), y, eps=0.5, step_size=0.5, steps=3, bounds=(0.0, 1.0))
    assert pix.min() >= 0 and pix.max() <= 1
    assert torch.equal(pgd_attack(model, x, y, eps=0.0, step_size=0.1, steps=3), x)  # ε = 0: clean


def test_adversarial_kind_sees_perturbed_logits_and_every_method_gets_robust_scores():
    seen = {}

    def adv_ce(logits, targets, features):
        seen["features"] = features.shape
        return cross_entropy(logits, targets)

    proto = {**PROTO, "attack": ATTACK}
    adv = _spec("adv", "adversarial", adv_ce, needs=("features",))
    a = train(_toy(), adv, {}, proto, init_seed=1, order_seed=2)
    plain = train(_toy(), _spec(), {}, proto, init_seed=1, order_seed=2)
    assert seen["features"] == (32, 32) and a.status == plain.status == "ok"
    assert not np.array_equal(a.test_scores, plain.test_scores)  # trained on different inputs
    for res in (a, plain):  # robust scores for every method, lower accuracy than clean
        assert res.robust_test_scores.shape == res.test_scores.shape
    y = _toy().y_test
    acc = lambda s: (s.argmax(1) == y).mean()  # noqa: E731
    assert acc(plain.robust_test_scores) < acc(plain.test_scores)
    again = train(_toy(), adv, {}, proto, init_seed=1, order_seed=2)
    np.testing.assert_array_equal(a.robust_test_scores, again.robust_test_scores)
    with pytest.raises(ValueError, match="attack"):
        train(_toy(), adv, {}, PROTO, init_seed=1, order_seed=2)


def test_teacher_and_aux_head_reach_the_loss():
    teacher = build_model(PROTO["model"], (8,), 4)
    got = {}

    def distil(logits, targets, teacher_logits, aux_logits):
        got.update(teacher=teacher_logits, aux=aux_logits)
        assert not teacher_logits.requires_grad and aux_logits.requires_grad
        return cross_entropy(logits, targets) + cross_entropy(aux_logits, targets)

    spec = _spec("dist", fn=distil, needs=("teacher_logits", "aux_logits"), teacher="stage")
    res = train(_toy(), spec, {}, PROTO, init_seed=1, order_seed=2, teacher=teacher)
    assert res.status == "ok" and got["teacher"].shape == got["aux"].shape == (32, 4)
    assert res.model.aux_head is not None
    assert all(not p.requires_grad for p in teacher.parameters())  # frozen, never stepped
    with pytest.raises(ValueError, match="teacher"):
        train(_toy(), spec, {}, PROTO, init_seed=1, order_seed=2)


def test_aux_head_does_not_change_the_main_model_init():
    torch.manual_seed(0)
    a = build_model(PROTO["model"], (8,), 4)
    torch.manual_seed(0)
    b = build_model(PROTO["model"], (8,), 4, aux_head=True)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), list(b.parameters())[:len(list(a.parameters()))]))


def test_self_rounds_train_round_zero_with_ce_then_distil():
    calls = []

    def soft(logits, targets, teacher_logits, alpha):
        calls.append(alpha)
        p = alpha * F.one_hot(targets, logits.shape[1]) + (1 - alpha) * teacher_logits.softmax(-1)
        return -(p * logits.log_softmax(-1)).sum(-1)

    spec = _spec("sd", fn=soft, needs=("teacher_logits",), teacher="self",
                 defaults={"alpha": 0.5, "rounds": 2}, trainer_hparams=("rounds",))
    res = train(_toy(), spec, spec.hparams(), PROTO, init_seed=1, order_seed=2)
    assert res.rounds == 3 and res.status == "ok"
    assert len(calls) == 2 * PROTO["budget"]["steps"] and set(calls) == {0.5}  # rounds 1-2 only
    steps = [r["step"] for r in res.curves if r["metric"] == "train/loss"]
    assert steps == sorted(steps) and steps[-1] == 3 * PROTO["budget"]["steps"]
    again = train(_toy(), spec, spec.hparams(), PROTO, init_seed=1, order_seed=2)
    np.testing.assert_array_equal(res.test_scores, again.test_scores)


def test_optimizer_state_is_measured():
    adam = train(_toy(), _spec(), {}, PROTO, init_seed=1, order_seed=2)
    sgd = train(_toy(), _spec(), {}, {**PROTO, "optimizer": {"name": "sgd", "lr": 0.1}}, init_seed=1, order_seed=2)
    n_params = sum(p.numel() for p in adam.model.parameters())
    assert adam.optimizer_state_bytes >= 2 * 4 * n_params  # two float32 moments per parameter
    assert sgd.optimizer_state_bytes < adam.optimizer_state_bytes


def test_metric_helpers_by_hand():
    scores = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    y = np.array([0, 0])
    cov = coverage_metrics(scores, y)
    assert cov["test/coverage_n1"] == pytest.approx((0.5 + 0.1) / 2)
    assert cov["test/coverage_n4"] == pytest.approx(((1 - 0.5 ** 4) + (1 - 0.9 ** 4)) / 2)
    rob, recall = robust_metrics(scores, np.array([0, 1]), 3)
    assert rob["test/robust_accuracy"] == 1.0 and recall.tolist() == [1.0, 1.0, 0.0]
    assert rob["test/robust_worst_class_accuracy"] == 1.0  # class 2 has no test example
    t = teacher_metrics(scores, scores)
    assert t["test/teacher_agreement"] == 1.0 and t["test/kl_teacher"] == pytest.approx(0.0, abs=1e-12)
    assert teacher_metrics(scores, scores[::-1])["test/kl_teacher"] > 0


AXIS_TRACK = {
    "track": "t", "version": 1, "task": "classification", "baseline": "erm", "methods": ["erm", "focal"],
    "seeds": [0], "stats": {"ci": 0.95},
    "optimizer_axis": {"methods": ["erm"], "baseline": "adam",
                       "model": {"name": "mlp", "hidden": [8], "norm": "batchnorm"},
                       "optimizers": {"adam": {"name": "adam", "lr": 0.001}, "sgd": {"name": "sgd", "lr": 0.1}}},
    "protocols": {"p": {"datasets": ["digits_lt10"], "model": {"name": "mlp", "hidden": [16]},
                        "optimizer": {"name": "adamw", "lr": 0.01}, "schedule": {"name": "constant"},
                        "budget": {"steps": 5, "batch_size": 8}}},
}


def test_optimizer_axis_variants_replace_optimizer_and_model():
    track = copy.deepcopy(AXIS_TRACK)
    lbconfig.check_track(track, "t")
    assert sorted(lbconfig.variants(track, "erm")) == ["default", "optimizeradam", "optimizersgd"]
    assert list(lbconfig.variants(track, "focal")) == ["default"]
    run = lbconfig.resolve_run(track, "digits_lt10", "erm", 0, "optimizersgd")
    assert run["protocol"]["optimizer"] == {"name": "sgd", "lr": 0.1}
    assert run["protocol"]["model"]["norm"] == "batchnorm" and run["hparams"] == {}
    default = lbconfig.resolve_run(track, "digits_lt10", "erm", 0)
    assert default["protocol"]["optimizer"]["name"] == "adamw" and default["seeds"] == run["seeds"]  # paired


def test_optimizer_axis_datasets_limit_where_it_runs():
    track = copy.deepcopy(AXIS_TRACK)
    track["protocols"]["p"]["datasets"] = ["digits_lt10", "digits_sym40"]
    track["optimizer_axis"]["datasets"] = ["*_lt*"]
    lbconfig.check_track(track, "t")
    runs = lbconfig.runs({"t": track})
    assert {(d, v) for _, d, m, v, _ in runs if m == "erm"} == {
        ("digits_lt10", "default"), ("digits_lt10", "optimizeradam"), ("digits_lt10", "optimizersgd"),
        ("digits_sym40", "default")}
    with pytest.raises(lbconfig.ConfigError, match="optimizersgd"):  # not a variant on that dataset
        lbconfig.resolve_run(track, "digits_sym40", "erm", 0, "optimizersgd")


@pytest.mark.parametrize("edit, match", [
    (lambda t: t["optimizer_axis"].update(datasets=["cifar*"]), "cifar"),
    (lambda t: t["optimizer_axis"].update(baseline="nadam"), "baseline"),
    (lambda t: t["optimizer_axis"]["optimizers"].update(x={"name": "lion", "lr": 1.0}), "lion"),
    (lambda t: t["optimizer_axis"].update(methods=["dpo"]), "dpo"),
    (lambda t: t["optimizer_axis"]["optimizers"]["sgd"].update(momentun=0.9), "momentun"),
])
def test_optimizer_axis_errors(edit, match):
    track = copy.deepcopy(AXIS_TRACK)
    edit(track)
    with pytest.raises(lbconfig.ConfigError, match=match):
        lbconfig.check_track(track, "t")


def test_protocol_needs_attack_and_teacher_blocks_for_those_methods():
    for method, block in (("pgd_at", "attack"), ("kd", "teacher")):
        track = copy.deepcopy(AXIS_TRACK)
        track.pop("optimizer_axis")
        track["methods"] = ["erm", method]
        with pytest.raises(lbconfig.ConfigError, match=block):
            lbconfig.check_track(track, "t")


def test_an_image_teacher_loads_back(tmp_path):
    """build_teacher saves the channels-first shape the model was built for: a CIFAR-shaped teacher
    (stored NHWC) loads back into the same architecture."""
    from lossbench import io
    from lossbench.tasks.classification import build_teacher, load_teacher

    rng = np.random.default_rng(0)
    y_tr, y_ho = np.repeat(np.arange(10), 20), np.repeat(np.arange(10), 2)
    io.write_npz(tmp_path / "prepared.npz", x_train=rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8),
                 y_train=y_tr, x_heldout=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), y_heldout=y_ho,
                 num_classes=np.array(10))
    proto = {"model": {"name": "resnet32"}, "optimizer": {"name": "sgd", "lr": 0.1}, "schedule": {"name": "constant"},
             "budget": {"steps": 1, "batch_size": 16}, "curve_points": 1,
             "teacher": {"model": {"name": "resnet32", "depth": 8}}}
    build_teacher("classification", proto, 0, "cifar10_lt100", tmp_path / "prepared.npz", tmp_path / "t.pt")
    model, blob = load_teacher(tmp_path / "t.pt", "cpu")
    assert blob["input_shape"] == [3, 32, 32] and model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
