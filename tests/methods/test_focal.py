"""Focal loss (card C3): the reference value, and finite float64-matching gradients where p_y rounds to 1
(issue 16: 0 < gamma < 1 gave NaN there)."""
import pytest
import torch
import torch.nn.functional as F

from lossbench.methods.focal import SPEC, focal_loss


def _focal_float64(logits, targets, gamma):
    """(1 - p_y)^gamma·(-log p_y) in float64 with 1 - p_y = Σ_{k≠y} p_k taken from a logsumexp over the
    other classes, so it is exact (no 1 - p cancellation) even where p_y is 1 in float64."""
    lse = torch.logsumexp(logits, -1)
    others = logits.scatter(-1, targets[:, None], float("-inf"))
    one_minus_p = torch.exp(torch.logsumexp(others, -1) - lse)
    neg_logp = torch.where(one_minus_p < 0.5, -torch.log1p(-one_minus_p.clamp_max(0.5)),
                           lse - logits.gather(-1, targets[:, None]).squeeze(-1))
    return one_minus_p ** gamma * neg_logp


def test_reference_matches():
    kwargs, expected = SPEC.reference()
    torch.testing.assert_close(SPEC.fn(**kwargs), expected, atol=1e-6, rtol=0)


def test_issue_example_gradient_is_zero_not_nan():
    z = torch.tensor([[20.0, 0.0]], requires_grad=True)
    focal_loss(z, torch.tensor([0]), gamma=0.5).sum().backward()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(z.grad, torch.zeros(1, 2), atol=1e-10, rtol=0)


@pytest.mark.parametrize("gamma", [0.0, 0.01, 0.5, 0.99, 1.0, 1.5, 2.0, 5.0])
def test_gradient_finite_and_matches_float64_near_p_one(gamma):
    # target 0: p_y is 1 in float32 (margins 20, 60, 200), near 1 (15, 8), ordinary, misclassified
    z = torch.tensor([[20.0, 0.0, 0.0], [60.0, -1.0, 0.0], [200.0, 0.0, 3.0], [15.0, 0.0, -3.0],
                      [8.0, 0.0, 1.0], [2.0, 0.0, 0.0], [0.0, 3.0, -1.0], [-50.0, 50.0, 0.0]])
    z = torch.cat([z, torch.randn(6, 3, generator=torch.Generator().manual_seed(0)) * 4])
    y = torch.zeros(len(z), dtype=torch.long)
    z32 = z.clone().requires_grad_(True)
    loss = focal_loss(z32, y, gamma=gamma)
    loss.sum().backward()
    z64 = z.double().requires_grad_(True)
    ref = _focal_float64(z64, y, gamma)
    ref.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z32.grad).all()
    torch.testing.assert_close(loss.double(), ref.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(z32.grad.double(), z64.grad, atol=1e-6, rtol=1e-4)


def test_ordinary_inputs_unchanged():
    # the stable form agrees with the plain formula (1 - exp(log p))^gamma·(-log p) on ordinary rows
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(64, 10, generator=g) * 3, torch.randint(0, 10, (64,), generator=g)
    for gamma in (0.0, 0.5, 2.0):
        logp_y = F.log_softmax(z, -1).gather(-1, y[:, None]).squeeze(-1)
        plain = -((1.0 - logp_y.exp()) ** gamma) * logp_y
        torch.testing.assert_close(focal_loss(z, y, gamma=gamma), plain, atol=1e-6, rtol=1e-6)
