"""Cards C11 (SRAT) and C12 (DONE, weights-only) against the PGD-AT baseline."""
import pytest
import torch

from lossbench.methods.done import done, dro_weights
from lossbench.methods.pgd_at import pgd_at
from lossbench.methods.srat import separability, srat

B, K = 12, 3


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, K, generator=g) * 2, torch.arange(B) % K, torch.randn(B, 5, generator=g),
            torch.tensor([100.0, 10.0, 1.0]))


def test_srat_without_separation_and_before_the_switch_is_pgd_at():
    z, y, f, counts = _batch()
    out = srat(z, y, features=f, class_counts=counts, progress=0.1, beta=0.9999, switch=0.8, lam_sep=0.0)
    torch.testing.assert_close(out, pgd_at(z, y))


def test_srat_class_weights_multiply_only_the_ce_term():
    z, y, f, counts = _batch()
    kw = dict(features=f, class_counts=counts, beta=0.9999, switch=0.5, lam_sep=0.3)
    late, early = srat(z, y, progress=0.9, **kw), srat(z, y, progress=0.1, **kw)
    sep = 0.3 * separability(f, y)
    ratio = (late - sep) / (early - sep)  # = the class weight of each example
    assert torch.allclose(ratio[y == 2], ratio[y == 2][0].expand(4))
    assert ratio[y == 2][0] > ratio[y == 1][0] > ratio[y == 0][0]  # rarer class, larger weight


def test_separability_pulls_features_towards_their_class():
    _, y, f, _ = _batch()
    f = f.clone().requires_grad_(True)
    separability(f, y).sum().backward()
    stepped = (f - 0.05 * f.grad).detach()
    assert separability(stepped, y).mean() < separability(f.detach(), y).mean()
    aligned = torch.nn.functional.one_hot(y, 5).float() * 3  # each class on its own axis
    assert torch.allclose(separability(aligned, y), torch.zeros(B), atol=1e-6)


def test_done_weights_sum_to_one_are_monotone_and_detached():
    z, y, _, _ = _batch()
    ce = pgd_at(z, y)
    w = dro_weights(ce, r=2.0)
    assert w.sum().item() == pytest.approx(1.0) and not w.requires_grad
    order = ce.argsort()
    assert torch.all(w[order].diff() >= 0)
    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(done(zz, y, r=2.0).sum(), zz)
    zz2 = z.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad((B * w * pgd_at(zz2, y)).sum(), zz2)  # w as a constant
    torch.testing.assert_close(g, g_ref)


def test_done_large_r_is_pgd_at():
    z, y, _, _ = _batch()
    torch.testing.assert_close(done(z, y, r=1e9), pgd_at(z, y), rtol=1e-6, atol=1e-6)
