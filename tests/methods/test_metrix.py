"""Metrix/embed on the contrastive loss: a hand-computed mixed batch, reduction to the base loss
(w = 0, and λ ∈ {0, 1}, the α → 0 limit), label interpolation, the pairing rule and λ's draw."""
import math

import numpy as np
import pytest
import torch

from lossbench.methods.contrastive import contrastive
from lossbench.methods.metrix import draw_lambda, metrix, metrix_from_lambda, mixed_term, mixed_triples
from lossbench.methods.pairs import distances, mean_nonzero, pair_masks
from tests.methods.test_multi_similarity import _batch

MARGINS = dict(pos_margin=0.0, neg_margin=1.0)


def _circle(*degrees):
    a = torch.tensor(degrees).deg2rad()
    return torch.stack([a.cos(), a.sin()], 1)


def test_hand_computed_mixed_batch():
    # 0°, 60° (class 0), 90° (class 1), λ = 0.5: mixes normalise to the angle halfway between the two.
    # anchor 0: mix(60°, 90°) = 75°, d = 2 sin 37.5°; anchor 1: mix(0°, 90°) = 45°, d = 2 sin 7.5°;
    # anchor 2 has no positive, mixes itself with each negative: 45° (d = 2 sin 22.5°), 75° (2 sin 7.5°)
    d = [2 * math.sin(math.radians(x)) for x in (37.5, 7.5, 22.5, 7.5)]
    pos = 0.5 * sum(d) / 4
    neg_terms = [0.5 * max(0.0, 1 - x) for x in d]
    neg = sum(neg_terms) / sum(t > 0 for t in neg_terms)
    emb, y = _circle(0.0, 60.0, 90.0), torch.tensor([0, 0, 1])
    assert mixed_term(emb, y, 0.5, **MARGINS).item() == pytest.approx(pos + neg, rel=1e-5)
    expected = 1.482362 + 0.4 * (pos + neg)  # contrastive's reference value + w · L_m
    assert metrix_from_lambda(emb, y, 0.5, mix_weight=0.4, **MARGINS).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_zero_mix_weight_is_the_contrastive_loss_exactly(seed):
    emb, y = _batch(seed)
    out = metrix(emb, y, progress=0.3, alpha=2.0, mix_weight=0.0, **MARGINS)
    torch.testing.assert_close(out, contrastive(emb, y, **MARGINS), rtol=0, atol=0)


def test_lambda_zero_and_one_give_the_base_loss_terms():
    # α → 0 puts λ at 0 or 1: the mix is the negative (a plain negative pair) or the positive (a plain
    # positive pair), and the mixed term is contrastive's negative or positive part on those pairs
    emb, y = _batch(1, n=24, k=3)
    pos, neg = pair_masks(y)
    assert pos.any(1).all()  # every anchor has a positive: positive-negative mixing only
    d = distances(emb)
    torch.testing.assert_close(mixed_term(emb, y, 0.0, **MARGINS), mean_nonzero(torch.relu(1 - d)[neg]))
    a, p, _ = mixed_triples(y)
    torch.testing.assert_close(mixed_term(emb, y, 1.0, **MARGINS), mean_nonzero(d[a, p]), rtol=1e-5, atol=1e-6)


def test_targets_interpolate_as_lambda_and_one_minus_lambda():
    emb, y = _batch(2, n=16, k=3)
    for lam in (0.2, 0.5, 0.9):
        a, p, n = mixed_triples(y)
        e = torch.nn.functional.normalize(emb, dim=1)
        m = torch.nn.functional.normalize(lam * e[p] + (1 - lam) * e[n], dim=1)
        d = (e[a] - m).norm(dim=1)
        expected = lam * mean_nonzero(d) + (1 - lam) * mean_nonzero(torch.relu(1 - d))
        torch.testing.assert_close(mixed_term(emb, y, lam, **MARGINS), expected, rtol=1e-5, atol=1e-6)


def test_pairing_uses_the_first_positive_or_the_anchor_itself():
    y = torch.tensor([0, 1, 0, 2, 0])
    a, p, n = mixed_triples(y)
    partner = dict(zip(a.tolist(), p.tolist()))
    assert partner == {0: 2, 1: 1, 2: 0, 3: 3, 4: 0}
    assert all(y[i] != y[j] for i, j in zip(a.tolist(), n.tolist()))
    assert len(a) == int(pair_masks(y)[1].sum())


def test_lambda_is_beta_distributed_and_fixed_by_the_batch():
    y = torch.tensor([0, 1, 0, 2])
    assert draw_lambda(2.0, 0.25, y) == draw_lambda(2.0, 0.25, y.clone())
    draws = np.array([draw_lambda(2.0, s / 1000, y) for s in range(1000)])
    assert abs(draws.mean() - 0.5) < 0.03 and abs(draws.var() - 0.05) < 0.01  # Beta(2, 2): var = 1/20
    small = np.array([draw_lambda(0.01, s / 1000, y) for s in range(200)])
    assert np.mean((small < 0.01) | (small > 0.99)) > 0.9  # α → 0: λ at 0 or 1


def test_gradients_finite_when_a_mix_meets_its_anchor():
    emb, y = _circle(0.0, 90.0), torch.tensor([0, 1])  # no positives: anchor-negative mixing, λ = 1 → m = anchor
    emb.requires_grad_(True)
    metrix_from_lambda(emb, y, 1.0, mix_weight=0.4, **MARGINS).backward()
    assert torch.isfinite(emb.grad).all()
