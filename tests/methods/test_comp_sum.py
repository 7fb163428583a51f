"""Card C9: comp-sum losses Φ^τ(u) — GCE (τ = 1 + q) and MAE (τ = 2)."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.comp_sum import GCE, MAE, comp_sum_loss
from lossbench.methods.erm import cross_entropy

Z20 = torch.tensor([[2.0, 0.0]])
Y0 = torch.tensor([0])


def _close(actual, expected, rtol=1e-5, atol=1e-6):
    # torch.allclose: torch.testing.assert_close's first call spends ~0.7 s on lazy imports.
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol), (
        f"{actual} != {expected}")


def _random(batch=16, k=6, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, k, generator=g), torch.randint(k, (batch,), generator=g)


@pytest.mark.parametrize("spec", [GCE, MAE])
def test_spec_reference_and_registry(spec):
    assert methods.get(spec.name) is spec
    kwargs, expected = spec.reference()
    _close(spec.fn(**kwargs), expected)
    logits, targets = _random()
    out = spec.fn(logits, targets, **spec.hparams())
    assert out.shape == (16,) and out.dtype == torch.float32


def test_card_values():
    # z = [2, 0], y = 0: τ = 1 CE 0.126928, GCE q = 0.7 0.121453, MAE 0.119203, τ = 0 u = e^{-2}.
    _close(comp_sum_loss(Z20, Y0, tau=1.0), torch.tensor([0.126928]))
    _close(GCE.fn(Z20, Y0, q=0.7), torch.tensor([0.121453]))
    _close(MAE.fn(Z20, Y0), torch.tensor([0.119203]))
    _close(comp_sum_loss(Z20, Y0, tau=0.0), torch.tensor([math.exp(-2.0)]))
    for spec in (GCE, MAE):
        kwargs, expected = spec.reference()
        _close(spec.fn(**kwargs), expected)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 1.3, 1.7, 2.0, 3.0])
def test_matches_definition_in_u(tau):
    # Φ^τ(u) = ((1+u)^{1−τ} − 1)/(1−τ), u = Σ_{k≠y} exp(z_k − z_y), evaluated directly in float64
    logits, targets = _random(seed=1)
    z = logits.double()
    margins = (z - z.gather(1, targets[:, None])).exp()
    u = margins.sum(1) - 1.0  # drop the k = y term exp(0) = 1
    phi = (1 + u).log() if tau == 1.0 else ((1 + u) ** (1 - tau) - 1) / (1 - tau)
    _close(comp_sum_loss(logits, targets, tau=tau), phi.float(), rtol=1e-5, atol=1e-5)


def test_special_cases():
    logits, targets = _random(seed=2)
    p_y = torch.softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
    _close(comp_sum_loss(logits, targets, tau=1.0), cross_entropy(logits, targets), rtol=0, atol=0)
    _close(GCE.fn(logits, targets, q=0.5), (1 - p_y.sqrt()) / 0.5)
    _close(MAE.fn(logits, targets), 1 - p_y)
    _close(GCE.fn(logits, targets, q=1.0), MAE.fn(logits, targets))
    _close(GCE.fn(logits, targets, q=0.0), cross_entropy(logits, targets))


def test_continuous_in_tau_at_one():
    logits, targets = _random(seed=3)
    ce = cross_entropy(logits, targets)
    # |Φ^{1+ε} − CE| ≈ ε·CE²/2: shrinks with ε (CE here reaches ~10, hence the loose bound).
    gaps = [(comp_sum_loss(logits, targets, tau=1 + e) - ce).abs().max().item() for e in (1e-2, 1e-3, 1e-4)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-2
    below = comp_sum_loss(logits, targets, tau=1 - 1e-4)
    above = comp_sum_loss(logits, targets, tau=1 + 1e-4)
    assert (below >= ce).all() and (above <= ce).all()  # Φ^τ decreases in τ
    _close(below, ce, rtol=1e-3, atol=1e-3)
    _close(above, ce, rtol=1e-3, atol=1e-3)


def test_bounded_for_tau_above_one_unbounded_below():
    targets = torch.tensor([0])
    margins = (1.0, 10.0, 50.0, 200.0)
    for tau in (1.3, 1.7, 2.0, 3.0):
        losses = [comp_sum_loss(torch.tensor([[0.0, m]]), targets, tau=tau).item() for m in margins]
        assert max(losses) <= 1 / (tau - 1) + 1e-6 and losses[-1] == pytest.approx(1 / (tau - 1), rel=1e-5)
    ce = [comp_sum_loss(torch.tensor([[0.0, m]]), targets, tau=1.0).item() for m in margins]
    assert ce[-1] > 199.0  # CE grows linearly in the margin; τ < 1 grows even faster
    assert comp_sum_loss(torch.tensor([[0.0, 50.0]]), targets, tau=0.5).item() > 1e10


def test_large_logits_stable():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]])
    targets = torch.tensor([0, 0, 1])
    for dtype in (torch.float32, torch.bfloat16):
        for fn, hp in ((GCE.fn, {"q": 0.7}), (MAE.fn, {}), (comp_sum_loss, {"tau": 1.0})):
            z = logits.to(dtype).detach().clone().requires_grad_()
            out = fn(z, targets, **hp)
            assert out.dtype == torch.float32 and torch.isfinite(out).all(), (fn, out)
            out.sum().backward()
            assert torch.isfinite(z.grad.float()).all()
    # Confidently wrong saturates at the bound 1/q, confidently right at 0.
    _close(GCE.fn(logits, targets, q=0.7), torch.tensor([0.0, 1 / 0.7, (1 - 0.5**0.7) / 0.7]))


def test_validate_rejects_bad_q():
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            GCE.hparams({"q": bad})
    assert GCE.hparams() == {"q": 0.7} and MAE.hparams() == {}
