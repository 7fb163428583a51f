"""Curriculum sample weights (methods/curriculum.py, MacAvaney et al. SIGIR 2020)."""
import pytest
import torch

from lossbench import methods
from lossbench.methods.curriculum import SPEC, curriculum_weights

LOSSES = torch.tensor([2.0, 0.5, 3.5, 1.0, 2.0])


def _close(actual, expected, rtol=1e-5, atol=1e-6):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol), (
        f"{actual} != {expected}")


def test_registered_reference_and_contract():
    assert methods.get("curriculum") is SPEC and SPEC.kind == "sample_weight"
    assert SPEC.hparams() == {"anneal": 0.5}
    kwargs, expected = SPEC.reference()
    _close(SPEC.fn(**kwargs), expected)
    w = SPEC.fn(LOSSES.clone().requires_grad_(), progress=0.1, **SPEC.hparams())
    assert w.dtype == torch.float32 and not w.requires_grad and torch.all(w >= 0)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_start_weights_follow_easiness():
    # progress 0: W = D, the easiness 1 − (ℓ − ℓ_min)/(ℓ_max − ℓ_min) = [0.5, 1, 0, 5/6, 0.5], normalised.
    d = torch.tensor([0.5, 1.0, 0.0, 5 / 6, 0.5])
    _close(curriculum_weights(LOSSES, progress=0.0, anneal=0.5), d / d.sum())


def test_hard_samples_gain_weight_monotonically_and_reach_uniform_at_anneal():
    hardest, easiest = LOSSES.argmax(), LOSSES.argmin()
    ws = [curriculum_weights(LOSSES, progress=p, anneal=0.5) for p in (0.0, 0.1, 0.25, 0.4, 0.5)]
    hard = [w[hardest].item() for w in ws]
    easy = [w[easiest].item() for w in ws]
    assert hard == sorted(hard) and easy == sorted(easy, reverse=True)
    for p in (0.5, 0.75, 1.0):  # the end of annealing and after it: uniform
        _close(curriculum_weights(LOSSES, progress=p, anneal=0.5), torch.full((5,), 0.2))
    _close(curriculum_weights(LOSSES, progress=0.0, anneal=0.0), torch.full((5,), 0.2))  # no curriculum


def test_invariant_to_affine_transforms_and_equal_losses_are_uniform():
    w = curriculum_weights(LOSSES, progress=0.2, anneal=0.5)
    for a, b in [(0.01, 0.0), (5.0, -2.0), (1.0, 50.0)]:
        _close(curriculum_weights(a * LOSSES + b, progress=0.2, anneal=0.5), w, rtol=1e-4)
    _close(curriculum_weights(torch.full((4,), 3.0), progress=0.0, anneal=0.5), torch.full((4,), 0.25))
    _close(curriculum_weights(torch.tensor([7.0]), progress=0.0, anneal=0.5), torch.ones(1))


def test_validate():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            SPEC.hparams({"anneal": bad})
