"""SupCon (L_out): agreement with pytorch-metric-learning's SupConLoss, a hand-computed batch, the
temperature's role, and that pulling a positive closer lowers the loss."""
import math

import pytest
import torch

from lossbench.methods.pairs import cosine_similarity
from lossbench.methods.supcon import supcon, supcon_from_logits
from tests.methods.test_multi_similarity import _batch


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5])
def test_agrees_with_pytorch_metric_learning(seed, temperature):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.losses import SupConLoss

    emb, y = _batch(seed, spread=0.5 + seed / 3)
    a, b = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    ours, theirs = supcon(a, y, temperature=temperature), SupConLoss(temperature=temperature)(b, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_hand_computed_tiny_batch():
    # two class-0 vectors at 0° and 90°, one class-1 vector at 180°; τ = 1: logits are the cosines
    # anchor 0: −log(e^0 / (e^0 + e^−1)); anchor 1: −log(e^0 / (e^0 + e^0)) = log 2; anchor 2: no positive
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    expected = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    assert supcon(emb, torch.tensor([0, 0, 1]), temperature=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_temperature_divides_the_similarities_and_scale_is_ignored():
    emb, y = _batch(2)
    sim = cosine_similarity(emb)
    for tau in (0.05, 0.1, 1.0):
        torch.testing.assert_close(supcon(emb, y, temperature=tau), supcon_from_logits(sim / tau, y))
    torch.testing.assert_close(supcon(emb * 7.0, y, temperature=0.1), supcon(emb, y, temperature=0.1))
    # a lower temperature sharpens the softmax: on a well-separated batch the loss falls toward 0
    sep, ys = _batch(4, spread=0.05)
    losses = [supcon(sep, ys, temperature=t).item() for t in (1.0, 0.3, 0.1)]
    assert losses[0] > losses[1] > losses[2]


def test_loss_falls_as_a_positive_gets_closer():
    # anchor at 0°, a negative at 90°, a positive moving from 150° toward 10°
    y = torch.tensor([0, 0, 1])
    losses = []
    for deg in (150.0, 90.0, 45.0, 10.0):
        ang = torch.tensor([0.0, deg, 90.0]).deg2rad()
        losses.append(supcon(torch.stack([ang.cos(), ang.sin()], 1), y, temperature=0.1).item())
    assert all(a > b for a, b in zip(losses, losses[1:]))


def test_anchors_without_a_positive_are_left_out():
    emb, y = _batch(1, n=8)
    base = supcon(emb, y, temperature=0.1)
    lone = torch.cat([emb, torch.randn(1, emb.shape[1], generator=torch.Generator().manual_seed(9))])
    # the lone class's example still enters the others' denominators, so the loss changes, but its own
    # anchor adds no term: the mean stays over the same anchors
    out = supcon(lone, torch.cat([y, torch.tensor([99])]), temperature=0.1)
    assert torch.isfinite(out) and out >= base - 1e-6
    assert supcon(emb[:3], torch.tensor([0, 1, 2]), temperature=0.1) == 0
