"""Card C1: class-balanced weights (inverse frequency, effective number) and DRW."""
import pytest
import torch

from lossbench import methods
from lossbench.methods.class_balanced import DRW, EFFECTIVE, INVERSE, class_weights

COUNTS = torch.tensor([5000.0, 500.0, 50.0])
ALL3 = torch.tensor([0, 1, 2])


def _close(actual, expected, rtol=1e-5, atol=1e-6):
    # torch.allclose: torch.testing.assert_close's first call spends ~0.7 s on lazy imports.
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol), (
        f"{actual} != {expected}")


@pytest.mark.parametrize("spec", [INVERSE, EFFECTIVE, DRW])
def test_spec_reference_and_registry(spec):
    assert methods.get(spec.name) is spec
    kwargs, expected = spec.reference()
    _close(spec.fn(**kwargs), expected, rtol=1e-5, atol=1e-6)
    # The defaults are accepted by the function (the trainer calls fn(targets, **needs, **hp)).
    needs = {"class_counts": COUNTS, "progress": 1.0}
    out = spec.fn(ALL3, **{k: needs[k] for k in spec.needs}, **spec.hparams())
    assert out.shape == (3,) and out.dtype == torch.float32


def test_card_effective_number_values():
    # Card C1: counts [5000, 500, 50], β = 0.9999 -> [0.0341, 0.2752, 2.6907], sum 3.
    w = EFFECTIVE.fn(ALL3, class_counts=COUNTS, beta=0.9999)
    _close(w, torch.tensor([0.0341, 0.2752, 2.6907]), rtol=0, atol=1e-4)
    assert w.sum().item() == pytest.approx(3.0, abs=1e-5)
    kwargs, expected = EFFECTIVE.reference()
    _close(EFFECTIVE.fn(**kwargs), expected, rtol=1e-5, atol=1e-6)


def test_beta_to_zero_is_uniform():
    for beta in (0.0, 1e-8):
        _close(class_weights(COUNTS, beta=beta), torch.ones(3))


def test_beta_to_one_is_inverse_frequency():
    inverse = torch.tensor([1.0, 10.0, 100.0]) * 3 / 111
    _close(INVERSE.fn(ALL3, class_counts=COUNTS), inverse)
    _close(class_weights(COUNTS, beta=1.0), inverse)
    # Approaching 1 from below converges to the same weights (no 0/0 blow-up).
    _close(class_weights(COUNTS, beta=1 - 1e-12), inverse, rtol=1e-5, atol=1e-6)
    # ... and β in between interpolates: rarer classes always get more weight.
    w = class_weights(COUNTS, beta=0.999)
    assert (w[1:] > w[:-1]).all() and w[2] < inverse[2]


def test_per_example_weight_is_class_weight_of_target():
    targets = torch.tensor([2, 2, 0, 1, 0])
    w = EFFECTIVE.fn(targets, class_counts=COUNTS, beta=0.99)
    _close(w, class_weights(COUNTS, beta=0.99)[targets])


def test_drw_ones_before_switch_then_effective():
    targets = torch.tensor([0, 1, 2, 2])
    hp = DRW.hparams()
    assert hp == {"beta": 0.9999, "switch": 0.8, "reduction": "weight_sum"}  # epoch 160 of 200; LDAM code's mean
    for progress in (0.0, 0.5, 159 / 200):
        _close(DRW.fn(targets, class_counts=COUNTS, progress=progress, **hp), torch.ones(4))
    after = EFFECTIVE.fn(targets, class_counts=COUNTS, beta=0.9999, reduction="weight_sum")
    for progress in (160 / 200, 0.9, 1.0):
        _close(DRW.fn(targets, class_counts=COUNTS, progress=progress, **hp), after)


def test_weights_detached_float32_and_zero_count_guarded():
    counts = torch.tensor([100.0, 0.0, 10.0], requires_grad=True)
    targets = torch.tensor([0, 2, 2])
    for beta in (0.0, 0.9999, 1.0):
        w = EFFECTIVE.fn(targets, class_counts=counts, beta=beta)
        assert not w.requires_grad and w.dtype == torch.float32 and torch.isfinite(w).all()
        cw = class_weights(counts, beta=beta)
        assert cw[1] == 0 and cw.sum().item() == pytest.approx(3.0, abs=1e-5)
    w = DRW.fn(targets, class_counts=counts, progress=0.0, beta=0.9999, switch=0.8)
    assert not w.requires_grad and w.dtype == torch.float32


def test_validate_rejects_bad_hparams():
    with pytest.raises(ValueError):
        EFFECTIVE.hparams({"beta": 1.5})
    with pytest.raises(ValueError):
        DRW.hparams({"switch": -0.1})
    with pytest.raises(ValueError):
        INVERSE.hparams({"beta": 0.9})  # inverse frequency has no hyperparameter


def _weighted_mean(spec, targets, logits, **hp):
    """What the trainer computes for a reweight spec: the batch mean of w·CE."""
    needs = {"class_counts": COUNTS, "progress": 1.0}
    w = spec.fn(targets, **{k: needs[k] for k in spec.needs}, **spec.hparams(hp))
    return (w * torch.nn.functional.cross_entropy(logits, targets, reduction="none")).mean()


@pytest.mark.parametrize("spec", [INVERSE, EFFECTIVE, DRW])
def test_both_reductions_by_hand(spec):
    targets = torch.tensor([0, 0, 0, 1, 2])  # head-heavy batch: Σ w ≠ B
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    beta = 1.0 if spec is INVERSE else 0.9999
    w = class_weights(COUNTS, beta=beta)[targets]
    _close(_weighted_mean(spec, targets, logits, reduction="batch"), (w * ce).sum() / 5)
    _close(_weighted_mean(spec, targets, logits, reduction="weight_sum"), (w * ce).sum() / w.sum())
    assert w.sum() / 5 < 0.7  # the two differ by this factor on such a batch


def test_default_reduction_of_each_source():
    # Cui et al.'s code divides the weighted softmax CE by the batch size; LDAM-DRW's
    # nn.CrossEntropyLoss(weight=w) by the sum of the weights.
    assert INVERSE.defaults["reduction"] == "batch" and EFFECTIVE.defaults["reduction"] == "batch"
    assert DRW.defaults["reduction"] == "weight_sum" and DRW.version == 2
    targets = torch.tensor([0, 0, 0, 0, 1, 2])
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    w = class_weights(COUNTS, beta=0.9999)[targets]
    ldam = torch.nn.functional.cross_entropy(logits, targets, weight=class_weights(COUNTS, beta=0.9999))
    torch.testing.assert_close(_weighted_mean(DRW, targets, logits), ldam)  # the LDAM code's weighted mean
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    _close(_weighted_mean(EFFECTIVE, targets, logits), (w * ce).mean())


def test_drw_before_switch_is_unweighted_under_both_reductions():
    targets = torch.tensor([0, 0, 1, 2])
    for reduction in ("batch", "weight_sum"):
        out = DRW.fn(targets, class_counts=COUNTS, progress=0.5, beta=0.9999, switch=0.8, reduction=reduction)
        _close(out, torch.ones(4))


def test_weight_sum_weights_are_detached_and_average_one():
    targets = torch.tensor([0, 0, 0, 1])
    w = EFFECTIVE.fn(targets, class_counts=COUNTS, beta=0.9999, reduction="weight_sum")
    assert not w.requires_grad
    _close(w.mean(), torch.tensor(1.0))


def test_reduction_validated():
    for spec in (INVERSE, EFFECTIVE, DRW):
        with pytest.raises(ValueError, match="reduction"):
            spec.hparams({"reduction": "mean"})


def test_class_weights_are_computed_once_per_counts_tensor_and_redone_when_it_changes():
    """The trainer passes one counts tensor per run: the weights are reused (the same object), and
    recomputed for other β, an in-place change, or another tensor with other values."""
    counts = COUNTS.clone()
    first = class_weights(counts, beta=0.9999)
    assert class_weights(counts, beta=0.9999) is first
    assert not torch.equal(class_weights(counts, beta=1.0), first)
    assert class_weights(counts, beta=0.9999) is not first and torch.equal(class_weights(counts, beta=0.9999), first)
    counts.fill_(7.0)  # in place: the version counter moves, the weights follow
    _close(class_weights(counts, beta=1.0), torch.ones(3))
    _close(class_weights(torch.tensor([1.0, 1.0, 2.0]), beta=1.0), torch.tensor([1.2, 1.2, 0.6]))
