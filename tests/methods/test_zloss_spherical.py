"""Spherical Z-loss (card C6): card value, shift/scale invariance, monotonicity, stability."""
import math

import pytest
import torch
import torch.nn.functional as F

from lossbench import methods
from lossbench.methods.zloss_spherical import SPEC, zloss_spherical


def _batch(b=16, k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, generator=g) * 2.0, torch.randint(0, k, (b,), generator=g)


def test_reference_matches():
    kwargs, expected = SPEC.reference()
    torch.testing.assert_close(SPEC.fn(**kwargs), expected, atol=1e-6, rtol=0)


def test_registry_and_defaults():
    assert methods.get("zloss_spherical") is SPEC
    assert SPEC.kind == "loss" and SPEC.defaults == {"a": 1.0, "b": 0.0}


def test_card_value_uses_population_std():
    # z = [2, 0], a = b = 1 -> softplus(0) = log 2 (the spec's reference()); a sample std would give
    # ẑ_y = 1/sqrt(2) and softplus(1 - 0.7071) = 0.852 instead.
    out = zloss_spherical(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), a=1.0, b=1.0)
    torch.testing.assert_close(out, torch.tensor([0.693147]), atol=1e-6, rtol=0)
    assert abs(math.log1p(math.exp(1 - 2**-0.5)) - out.item()) > 0.1


@pytest.mark.parametrize("alpha,beta", [(0.01, 0.0), (3.0, -5.0), (100.0, 7.0), (1.0, 1e3)])
def test_shift_and_scale_invariance(alpha, beta):
    z, y = _batch()
    for a, b in [(1.0, 0.0), (0.1, 5.0), (10.0, 1.0)]:
        torch.testing.assert_close(zloss_spherical(alpha * z + beta, y, a=a, b=b),
                                   zloss_spherical(z, y, a=a, b=b), atol=1e-4, rtol=1e-4)


def test_monotone_decreasing_in_true_logit():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, 5, generator=g).repeat(50, 1)
    z[:, 2] = torch.linspace(-6.0, 6.0, 50)
    loss = zloss_spherical(z, torch.full((50,), 2), a=1.0, b=1.0)
    assert torch.all(loss[1:] < loss[:-1])


def test_depends_only_on_standardised_true_logit():
    z, y = _batch(seed=2)
    z_hat = (z - z.mean(-1, keepdim=True)) / z.std(-1, unbiased=False, keepdim=True)
    z_hat_y = z_hat.gather(-1, y[:, None]).squeeze(-1)
    torch.testing.assert_close(zloss_spherical(z, y, a=2.0, b=3.0), F.softplus(2.0 * (3.0 - z_hat_y)) / 2.0)


def test_large_and_constant_logits_finite():
    z = torch.tensor([[1e4, -1e4, 0.0], [3.0, 3.0, 3.0], [-1e4, -1e4, 1e4]], requires_grad=True)
    y = torch.tensor([0, 1, 0])
    loss = zloss_spherical(z, y, a=1.0, b=1.0)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()
    torch.testing.assert_close(loss[1], torch.tensor(math.log1p(math.e)))  # constant row: ẑ_y = 0


def test_bf16_input_computes_in_float32():
    z, y = _batch(seed=3)
    out = zloss_spherical(z.bfloat16(), y, **SPEC.hparams())
    assert out.dtype == torch.float32 and out.shape == (16,)


def test_validate():
    with pytest.raises(ValueError, match="a must be > 0"):
        SPEC.hparams({"a": 0.0})
