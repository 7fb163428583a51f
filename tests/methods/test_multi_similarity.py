"""Multi-Similarity loss: agreement with pytorch-metric-learning (miner + loss), the paper's pair
weights as gradients, and its mining rule."""
import pytest
import torch

from lossbench.methods.multi_similarity import SPEC, ms_from_similarity, multi_similarity
from lossbench.methods.pairs import cosine_similarity

HP = dict(alpha=2.0, beta=50.0, lam=0.5, epsilon=0.1)


def _batch(seed, n=32, d=8, k=4, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    centers = torch.randn(k, d, generator=g)
    return centers[y] + spread * torch.randn(n, d, generator=g), y


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("hp", [HP, dict(alpha=1.0, beta=20.0, lam=0.7, epsilon=0.05), dict(HP, lam=1.0)])
def test_agrees_with_pytorch_metric_learning(seed, hp):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import losses, miners

    emb, y = _batch(seed, spread=0.5 + seed / 3)
    ours_in = emb.clone().requires_grad_(True)
    theirs_in = emb.clone().requires_grad_(True)
    ours = multi_similarity(ours_in, y, **hp)
    miner = miners.MultiSimilarityMiner(epsilon=hp["epsilon"])
    loss = losses.MultiSimilarityLoss(alpha=hp["alpha"], beta=hp["beta"], base=hp["lam"])
    theirs = loss(theirs_in, y, miner(theirs_in, y))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, rtol=1e-4, atol=1e-7)


def _weights(sim, y, **hp):
    """∂L/∂S_ik (times B): the pair weights."""
    sim = sim.clone().requires_grad_(True)
    ms_from_similarity(sim, y, **hp).backward()
    return sim.grad * len(y)


def test_negative_weight_grows_with_similarity_and_positive_weight_as_similarity_falls():
    # anchor 0 (class 0) with one positive (S = 0.6) and negatives at rising similarity
    y = torch.tensor([0, 0, 1, 1, 1, 1])
    sim = torch.eye(6)
    sim[0, 1:] = torch.tensor([0.6, 0.55, 0.6, 0.65, 0.7])
    w = _weights(sim, y, **HP)[0]
    assert (w[2:] > 0).all() and torch.all(w[3:] > w[2:-1])  # harder negatives weigh more
    assert w[1] < 0  # a positive's loss falls as its similarity rises
    # the positive's weight grows in size as its similarity falls (kept: still below max neg + ε)
    sizes = [-_weights(sim.index_put((torch.tensor(0), torch.tensor(1)), torch.tensor(s)), y, **HP)[0, 1]
             for s in (0.7, 0.5, 0.3)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_weights_are_the_papers_softmax_like_formula():
    emb, y = _batch(3)
    sim = cosine_similarity(emb).detach()
    w = _weights(sim, y, **HP)
    i = 0
    pos, neg = (y == y[i]) & (torch.arange(len(y)) != i), y != y[i]
    kept_neg = neg & (sim[i] > sim[i][pos].min() - HP["epsilon"])
    kept_pos = pos & (sim[i] < sim[i][neg].max() + HP["epsilon"])
    e_neg = torch.exp(HP["beta"] * (sim[i] - HP["lam"])) * kept_neg
    e_pos = torch.exp(-HP["alpha"] * (sim[i] - HP["lam"])) * kept_pos
    torch.testing.assert_close(w[i], e_neg / (1 + e_neg.sum()) - e_pos / (1 + e_pos.sum()), rtol=1e-4, atol=1e-7)


def test_mining_drops_easy_pairs():
    # negatives far below the hardest positive − ε and positives far above the hardest negative + ε
    # get no weight; everything else does
    y = torch.tensor([0, 0, 0, 1, 1])
    sim = torch.eye(5)
    sim[0, 1:] = torch.tensor([0.9, 0.5, 0.45, -0.2])  # min pos 0.5, max neg 0.45
    w = _weights(sim, y, **HP)[0]
    assert w[1] == 0 and w[2] < 0  # 0.9 ≥ 0.45 + 0.1: easy positive; 0.5 is kept
    assert w[3] > 0 and w[4] == 0  # 0.45 > 0.5 − 0.1 kept; −0.2 is easy


def test_scale_invariant_and_reference():
    emb, y = _batch(4)
    torch.testing.assert_close(multi_similarity(emb, y, **HP), multi_similarity(7.0 * emb, y, **HP))
    kw, expected = SPEC.reference()
    torch.testing.assert_close(SPEC.fn(**kw), expected, atol=1e-6, rtol=0)
