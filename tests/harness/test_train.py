"""The shared trainer: determinism, every method kind's dispatch, divergence, the image path."""
import numpy as np
import pytest
import torch

from lossbench import methods
from lossbench.data import ClassificationData
from lossbench.models import build_model
from lossbench.train import InputPipeline, lr_factor, train
from lossbench.methods.base import MethodSpec

PROTO = {"model": {"name": "mlp", "hidden": [32]}, "optimizer": {"name": "adam", "lr": 0.01},
         "schedule": {"name": "constant"}, "budget": {"steps": 30, "batch_size": 32}, "curve_points": 5}


def _toy(n=300, k=4, seed=0, image=False):
    rng = np.random.default_rng(seed)
    y = np.minimum(rng.geometric(0.5, n) - 1, k - 1)  # long-tailed labels
    centers = rng.normal(size=(k, 8)) * 2
    x = (centers[y] + rng.normal(size=(n, 8))).astype(np.float32)
    yv = np.repeat(np.arange(k), 10)
    xv = (centers[yv] + rng.normal(size=(len(yv), 8))).astype(np.float32)
    if image:
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        xv = rng.integers(0, 256, (len(yv), 32, 32, 3), dtype=np.uint8)
    return ClassificationData("toy", "image" if image else "vector", k, x, y, y.copy(), xv, yv, xv, yv)


@pytest.mark.parametrize("name", ["erm", "cb_effective", "cooldown", "aldr_kl", "anyloss", "posthoc_la"])
def test_each_kind_trains_and_is_deterministic(name):
    spec = methods.get(name)
    a = train(_toy(), spec, spec.hparams(), PROTO, init_seed=1, order_seed=2)
    b = train(_toy(), spec, spec.hparams(), PROTO, init_seed=1, order_seed=2)
    assert a.status == "ok" and a.steps == 30
    np.testing.assert_array_equal(a.test_scores, b.test_scores)
    c = train(_toy(), spec, spec.hparams(), PROTO, init_seed=1, order_seed=3)
    assert not np.array_equal(a.test_scores, c.test_scores)


def test_sampler_changes_the_class_mix():
    """resample draws classes uniformly; erm follows the long-tailed counts."""
    seen = {}
    for name in ("erm", "resample"):
        spec = methods.get(name)
        labels = []
        orig = torch.nn.functional.cross_entropy

        def spy(logits, targets, *args, **kw):
            labels.append(targets.clone())
            return orig(logits, targets, *args, **kw)

        torch.nn.functional.cross_entropy = spy
        try:
            train(_toy(n=2000), spec, spec.hparams(), {**PROTO, "budget": {"steps": 40, "batch_size": 64}}, 1, 2)
        finally:
            torch.nn.functional.cross_entropy = orig
        seen[name] = torch.bincount(torch.cat(labels), minlength=4).float()
    assert seen["erm"][0] > 4 * seen["erm"][3]
    assert seen["resample"].max() < 1.5 * seen["resample"].min()


def test_nan_loss_is_recorded_as_diverged():
    def explode(logits, targets):
        return logits.sum(1) * float("nan")

    spec = MethodSpec(name="explode", kind="loss", fn=explode, defaults={}, paper="-", url="http://x", docs="-")
    res = train(_toy(), spec, {}, PROTO, 1, 2)
    assert res.status == "diverged" and res.diverged_at_step == 0 and res.test_scores is None


def test_a_loss_that_turns_nan_mid_interval_is_recorded_at_its_step():
    """The losses are read back once per curve interval (LossLog): the step recorded is still the
    first non-finite one, not the interval's end."""
    calls = {"n": 0}

    def late(logits, targets):
        calls["n"] += 1
        ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        return ce * float("nan") if calls["n"] == 14 else ce

    spec = MethodSpec(name="late", kind="loss", fn=late, defaults={}, paper="-", url="http://x", docs="-")
    res = train(_toy(), spec, {}, PROTO, 1, 2)  # curve every 6 steps: step 13 sits inside (12, 18]
    assert res.status == "diverged" and res.diverged_at_step == 13 and res.test_scores is None
    assert [r["step"] for r in res.curves if r["metric"] == "train/loss"] == [6, 12]


def test_posthoc_adjustment_is_applied_at_prediction():
    spec = methods.get("posthoc_la")
    erm = methods.get("erm")
    adjusted = train(_toy(), spec, spec.hparams(), PROTO, 1, 2)
    raw = train(_toy(), erm, {}, PROTO, 1, 2)
    counts = np.bincount(_toy().y_train, minlength=4)
    expected = raw.test_scores - spec.hparams()["tau"] * np.log(counts / counts.sum())
    np.testing.assert_allclose(adjusted.test_scores, expected, rtol=1e-5, atol=1e-5)


def test_resnet32_size_and_image_pipeline():
    model = build_model({"name": "resnet32"}, (3, 32, 32), 10)
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.45e6 < n_params < 0.48e6  # card P1: about 0.46 M
    pipe = InputPipeline("image", "crop_flip", "cpu", seed=0)
    x = pipe.to_device(np.full((2, 32, 32, 3), 255, dtype=np.uint8))
    out = pipe(x, train=True)
    assert out.shape == (2, 3, 32, 32)
    proto = {**PROTO, "model": {"name": "resnet32", "depth": 8}, "augment": "crop_flip", "budget": {"steps": 2, "batch_size": 8}}
    res = train(_toy(n=40, image=True), methods.get("erm"), {}, proto, 1, 2)
    assert res.status == "ok" and res.test_scores.shape == (40, 4)


def test_crop_flip_moves_pixels_not_values():
    pipe = InputPipeline("image", "crop_flip", "cpu", seed=0)
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32) / (2 * 3 * 32 * 32)
    out = pipe._crop_flip(x)
    assert out.shape == x.shape
    inside = out[out != 0]
    assert torch.isin(inside, x).all()  # only original pixels or zero padding


def test_step_schedule_with_warmup():
    sched = {"name": "step", "warmup_epochs": 5, "milestones": [160, 180], "factors": [0.01, 0.0001]}
    assert lr_factor(sched, 2.5, 200) == pytest.approx(0.5)
    assert lr_factor(sched, 100, 200) == 1.0
    assert lr_factor(sched, 170, 200) == 0.01 and lr_factor(sched, 190, 200) == 0.0001


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_with_amp_and_augmentation():
    proto = {**PROTO, "model": {"name": "resnet32"}, "augment": "crop_flip", "amp": True,
             "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "budget": {"steps": 5, "batch_size": 16}}
    for name in ("erm", "cooldown", "aldr_kl"):
        spec = methods.get(name)
        res = train(_toy(n=64, image=True), spec, spec.hparams(), proto, 1, 2, device="cuda")
        assert res.status == "ok" and np.isfinite(res.test_scores).all()
