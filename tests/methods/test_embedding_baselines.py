"""Contrastive and batch-hard triplet losses (the retrieval protocol's baselines) against
pytorch-metric-learning's ContrastiveLoss and TripletMarginLoss + BatchHardMiner, and their
properties."""
import pytest
import torch

from lossbench.methods.contrastive import contrastive
from lossbench.methods.triplet import triplet_batch_hard
from tests.methods.test_multi_similarity import _batch


def _both(ours_fn, theirs_fn, emb):
    """(our loss, our gradient, their loss, their gradient) on copies of `emb`."""
    a, b = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    ours, theirs = ours_fn(a), theirs_fn(b)
    ours.backward()
    theirs.backward()
    return ours, a.grad, theirs, b.grad


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("margins", [(0.0, 1.0), (0.2, 0.8)])
def test_contrastive_agrees_with_pytorch_metric_learning(seed, margins):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.losses import ContrastiveLoss

    emb, y = _batch(seed, spread=0.5 + seed / 3)
    pos_margin, neg_margin = margins
    lib = ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin)
    ours, g_ours, theirs, g_theirs = _both(lambda e: contrastive(e, y, pos_margin=pos_margin, neg_margin=neg_margin),
                                           lambda e: lib(e, y), emb)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("margin", [0.05, 0.1, 0.5])
def test_triplet_batch_hard_agrees_with_pytorch_metric_learning(seed, margin):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.miners import BatchHardMiner

    emb, y = _batch(seed, spread=0.5 + seed / 3)
    lib, miner = TripletMarginLoss(margin=margin), BatchHardMiner()
    ours, g_ours, theirs, g_theirs = _both(lambda e: triplet_batch_hard(e, y, margin=margin),
                                           lambda e: lib(e, y, miner(e, y)), emb)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-4, atol=1e-6)


def test_zero_when_classes_are_separated_by_the_margins():
    # two tight clusters at opposite poles: d_pos ≈ 0, d_neg ≈ 2
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 4 + [1] * 4)
    emb = torch.where(y[:, None] == 0, 1.0, -1.0) * torch.tensor([1.0, 0.0]) + 1e-3 * torch.randn(8, 2, generator=g)
    assert triplet_batch_hard(emb, y, margin=0.5) == 0
    assert contrastive(emb, y, pos_margin=0.01, neg_margin=1.0) == 0


def test_triplet_skips_anchors_without_a_positive():
    # eight examples in the positive orthant (pairwise d ≤ √2) and a lone class-2 example opposite them
    # (d > √2 to each): it is nobody's hardest negative and, without a positive, forms no triplet itself
    emb, _ = _batch(1, n=8)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1, 2])
    lone = -torch.ones(1, emb.shape[1])
    base = triplet_batch_hard(emb.abs(), y[:8], margin=0.1)
    torch.testing.assert_close(triplet_batch_hard(torch.cat([emb.abs(), lone]), y, margin=0.1), base)
    assert base > 0
