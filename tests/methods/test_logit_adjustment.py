"""Card C4: logit-adjusted loss, Balanced Softmax and post-hoc logit adjustment."""
import pytest
import torch
import torch.nn.functional as F

from lossbench import methods
from lossbench.methods.erm import cross_entropy
from lossbench.methods.logit_adjustment import BALANCED_SOFTMAX, LA_LOSS, POSTHOC, logit_adjusted_loss

Z20 = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
Y01 = torch.tensor([0, 1])


def _close(actual, expected, rtol=1e-5, atol=1e-6):
    # torch.allclose: torch.testing.assert_close's first call spends ~0.7 s on lazy imports.
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol), (
        f"{actual} != {expected}")


def _random(batch=8, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, k, generator=g)
    targets = torch.randint(k, (batch,), generator=g)
    counts = torch.randint(1, 1000, (k,), generator=g).float()
    return logits, targets, counts


@pytest.mark.parametrize("spec", [LA_LOSS, BALANCED_SOFTMAX, POSTHOC])
def test_spec_reference_and_registry(spec):
    assert methods.get(spec.name) is spec
    kwargs, expected = spec.reference()
    _close(spec.fn(**kwargs), expected)
    logits, targets, counts = _random()
    needs = {"class_counts": counts}
    out = spec.fn(logits, targets, **{k: needs[k] for k in spec.needs}, **spec.hparams())
    assert out.shape == (8,) and out.dtype == torch.float32


def test_card_values():
    # z = [2, 0], π = [0.9, 0.1], τ = 1: 0.0149253 (y = 0), 4.212150 (y = 1).
    out = logit_adjusted_loss(Z20, Y01, class_counts=torch.tensor([0.9, 0.1]), tau=1.0)
    _close(out, torch.tensor([0.0149253, 4.212150]))
    for spec in (LA_LOSS, BALANCED_SOFTMAX):
        kwargs, expected = spec.reference()
        _close(spec.fn(**kwargs), expected)


def test_uniform_prior_is_cross_entropy():
    logits, targets, _ = _random()
    for tau in (0.5, 1.0, 2.0):
        out = LA_LOSS.fn(logits, targets, class_counts=torch.full((5,), 37.0), tau=tau)
        _close(out, cross_entropy(logits, targets))
    _close(LA_LOSS.fn(logits, targets, class_counts=torch.full((5,), 10.0), tau=0.0),
           cross_entropy(logits, targets), rtol=0, atol=0)


def test_shift_invariance():
    logits, targets, counts = _random()
    base = LA_LOSS.fn(logits, targets, class_counts=counts, tau=1.0)
    for c in (-7.5, 3.0, 100.0):
        _close(LA_LOSS.fn(logits + c, targets, class_counts=counts, tau=1.0), base, rtol=1e-4, atol=1e-4)
    # Rescaling all counts (same prior) changes nothing either.
    _close(LA_LOSS.fn(logits, targets, class_counts=counts * 10, tau=1.0), base)


def test_balanced_softmax_equals_logit_adjust():
    logits, targets, counts = _random(seed=3)
    bs = BALANCED_SOFTMAX.fn(logits, targets, class_counts=counts, **BALANCED_SOFTMAX.hparams())
    la = LA_LOSS.fn(logits, targets, class_counts=counts, **LA_LOSS.hparams())
    direct = F.cross_entropy(logits + counts.log(), targets, reduction="none")  # Ren et al.: z + log n
    _close(bs, la)
    _close(bs, direct, rtol=1e-5, atol=1e-5)


def test_posthoc_trains_with_ce_and_predict_favours_rare_classes():
    logits, targets, counts = _random(seed=4)
    _close(POSTHOC.fn(logits, targets, **POSTHOC.hparams()), cross_entropy(logits, targets), rtol=0, atol=0)
    kwargs, expected = POSTHOC.reference()
    _close(POSTHOC.fn(**kwargs), expected)
    assert LA_LOSS.predict is None and BALANCED_SOFTMAX.predict is None

    counts = torch.tensor([900.0, 100.0])
    z = torch.tensor([[1.0, 0.5], [3.0, 0.0]])
    scores = POSTHOC.predict(z, counts, **POSTHOC.hparams())
    _close(scores, z - torch.tensor([0.9, 0.1]).log())  # z − τ log π
    assert z.argmax(-1).tolist() == [0, 0]
    assert scores.argmax(-1).tolist() == [1, 0]  # close call flips to the rare class, a clear win does not
    _close(POSTHOC.predict(z, counts, tau=0.0), z)


def test_bf16_zero_counts_and_gradients():
    logits, targets, _ = _random(seed=5)
    counts = torch.tensor([100.0, 0.0, 10.0, 5.0, 1.0])
    targets = targets.masked_fill(targets == 1, 0)  # an empty class has no training examples
    for tau in (0.0, 1.0):
        z = logits.to(torch.bfloat16).requires_grad_()
        out = LA_LOSS.fn(z, targets, class_counts=counts, tau=tau)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        out.sum().backward()
        assert torch.isfinite(z.grad.float()).all()
    assert torch.isfinite(POSTHOC.predict(logits, counts, tau=1.0)).all()


def test_validate_rejects_negative_tau():
    for spec in (LA_LOSS, BALANCED_SOFTMAX, POSTHOC):
        with pytest.raises(ValueError):
            spec.hparams({"tau": -1.0})
