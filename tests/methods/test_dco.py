"""Card C10: DCO, −log(1 − (1 − p_y)^N)."""
import math

import pytest
import torch

from lossbench.methods.dco import dco
from lossbench.methods.erm import cross_entropy


def test_n1_is_cross_entropy():
    z, y = torch.randn(32, 5) * 4, torch.randint(0, 5, (32,))
    torch.testing.assert_close(dco(z, y, n=1.0), cross_entropy(z, y), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n, expected", [(4.0, 2.01926e-4), (16.0, 1.66184e-15)])
def test_card_values(n, expected):
    # z = [2, 0], y 0: 1 − p_y = 0.119203; −log(1 − 0.119203^N). The card's N = 16 figure (1.665e-15)
    # is 0.2% off: 16·log(0.119203) = −34.0308 and e^−34.0308 = 1.66184e-15 (float64, here).
    assert dco(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), n=n).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("n", [1.0, 4.0, 16.0])
def test_gradient_is_F_times_the_ce_gradient(n):
    z = (torch.randn(16, 4, dtype=torch.float64) * 2).requires_grad_(True)
    y = torch.randint(0, 4, (16,))
    (g_dco,) = torch.autograd.grad(dco(z, y, n=n).sum(), z)
    z2 = z.detach().clone().requires_grad_(True)
    (g_ce,) = torch.autograd.grad(torch.nn.functional.cross_entropy(z2, y, reduction="sum"), z2)
    p = torch.softmax(z.detach(), -1).gather(1, y[:, None]).squeeze(1)
    f = n * (1 - p) ** (n - 1) * p / (1 - (1 - p) ** n)
    torch.testing.assert_close(g_dco, (f[:, None] * g_ce).float().double(), rtol=1e-5, atol=1e-7)
    assert torch.all((f > 0) & (f <= 1 + 1e-12))


def test_finite_for_huge_logits_and_limits():
    z = torch.tensor([[1000.0, 0.0], [0.0, 1000.0], [-30.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0, 0])
    loss = dco(z, y, n=4.0)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()
    assert loss[0] == 0  # certain and correct: nothing to learn
    assert loss[1].item() == pytest.approx(1000 - math.log(4), rel=1e-6)  # ℓ → −log N − log p_y
    assert loss[2].item() == pytest.approx(30 - math.log(4), rel=1e-6)
    assert z.grad[0].abs().max() == 0 and z.grad[1, 0] == pytest.approx(-1.0)
