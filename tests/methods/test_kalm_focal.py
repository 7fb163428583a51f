"""KaLM-Embedding-V2's focal-style reweighting: γ = 0 is supcon exactly, easy anchors get smaller
weights, the weights carry no gradient and follow (1 − P_i)^γ."""
import pytest
import torch

from lossbench.methods.kalm_focal import focal_weights, kalm_focal
from lossbench.methods.pairs import cosine_similarity
from lossbench.methods.supcon import supcon, supcon_per_anchor
from tests.methods.test_multi_similarity import _batch


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_gamma_zero_is_supcon_exactly(seed, temperature):
    emb, y = _batch(seed, spread=0.5 + seed / 3)
    a, b = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    ours, base = kalm_focal(a, y, temperature=temperature, gamma=0.0), supcon(b, y, temperature=temperature)
    torch.testing.assert_close(ours, base, rtol=0, atol=0)
    ours.backward()
    base.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


def test_easy_anchors_get_smaller_weights():
    # anchor 0's positive sits on top of it (easy), anchor 2's positive is farther than a negative (hard)
    ang = torch.tensor([0.0, 1.0, 120.0, 200.0, 150.0, 151.0]).deg2rad()
    emb = torch.stack([ang.cos(), ang.sin()], 1)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    w = focal_weights(cosine_similarity(emb) / 0.1, y, gamma=2.0)
    assert w[0] < 0.01 and w[2] > 0.5 and w[0] < w[2]
    assert torch.all((w >= 0) & (w <= 1))
    # a larger γ shrinks easy weights more
    w4 = focal_weights(cosine_similarity(emb) / 0.1, y, gamma=4.0)
    assert torch.all(w4 <= w + 1e-7) and w4[0] < w[0]


def test_weights_are_one_minus_positive_mass_to_the_gamma_and_detached():
    emb, y = _batch(5)
    logits = cosine_similarity(emb) / 0.2
    w = focal_weights(logits, y, gamma=1.5)
    assert not w.requires_grad
    i = 3
    others = torch.arange(len(y)) != i
    p = torch.softmax(logits[i][others], 0)
    mass = p[(y[others] == y[i])].sum()
    torch.testing.assert_close(w[i], (1 - mass) ** 1.5)
    per, has_pos = supcon_per_anchor(logits, y)
    torch.testing.assert_close(kalm_focal(emb, y, temperature=0.2, gamma=1.5), (w * per)[has_pos].mean())


def test_focal_loss_is_at_most_supcon():
    emb, y = _batch(6)
    for gamma in (0.5, 2.0):
        assert kalm_focal(emb, y, temperature=0.1, gamma=gamma) <= supcon(emb, y, temperature=0.1)
