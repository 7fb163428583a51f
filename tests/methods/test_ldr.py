"""LDR-KL / ALDR-KL (card C5): card values, limits in λ, normalisations, ALDR state update."""
import math

import pytest
import torch
import torch.nn.functional as F

from lossbench import methods
from lossbench.methods.ldr import ALDR_KL, LDR_KL, aldr_kl, ldr_kl, normalize_logits

Z = torch.tensor([[2.0, 0.0]])
Y = torch.tensor([0])


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _batch(b=16, k=5, scale=3.0, seed=0):
    g = _gen(seed)
    return torch.randn(b, k, generator=g) * scale, torch.randint(0, k, (b,), generator=g)


def _margins(z, y, c):
    return z - z.gather(-1, y[:, None]) + torch.full_like(z, c).scatter(-1, y[:, None], 0.0)


@pytest.mark.parametrize("spec", [LDR_KL, ALDR_KL])
def test_reference_matches(spec):
    kwargs, expected = spec.reference()
    torch.testing.assert_close(spec.fn(**kwargs), expected, atol=1e-5, rtol=0)


def test_registry_and_spec_fields():
    assert methods.get("ldr_kl") is LDR_KL and methods.get("aldr_kl") is ALDR_KL
    assert LDR_KL.defaults == {"lam": 10.0, "c": 0.1, "normalize": "softplus_mean"}
    assert ALDR_KL.defaults == {"lam0": 10.0, "alpha": 2.0, "c": 0.1, "normalize": "l1_mean"}
    assert ALDR_KL.needs == ("example_state",)
    assert ALDR_KL.init_state(ALDR_KL.hparams()) == 10.0
    assert ALDR_KL.init_state(ALDR_KL.hparams({"lam0": 1.0})) == 1.0


def test_card_values():
    # λ = 1, c = 0 on z = [2, 0] -> -0.566219 = CE - log 2 (the first is also the spec's reference()).
    out = ldr_kl(Z, Y, lam=1.0, c=0.0, normalize="none")
    torch.testing.assert_close(out, torch.tensor([-0.566219]), atol=1e-6, rtol=0)
    ce = F.cross_entropy(Z, Y, reduction="none")
    torch.testing.assert_close(out, ce - math.log(2), atol=1e-6, rtol=0)
    out = ldr_kl(Z, Y, lam=1.0, c=1.0, normalize="none")
    torch.testing.assert_close(out, torch.tensor([-0.379885]), atol=1e-6, rtol=0)


def test_lam1_c0_is_ce_minus_log_k():
    z, y = _batch(k=7)
    out = ldr_kl(z, y, lam=1.0, c=0.0, normalize="none")
    torch.testing.assert_close(out, F.cross_entropy(z, y, reduction="none") - math.log(7), atol=1e-5, rtol=0)


def test_code_defaults_value():
    # float64 by hand: softplus([2, 0]) = [2.126928, 0.693147], / mean -> [1.508419, 0.491581];
    # d = [0, 0.491581 - 1.508419 + 0.1] = [0, -0.916839]; 10·log((1 + e^{-0.0916839})/2) = -0.447916.
    out = LDR_KL.fn(Z, Y, **LDR_KL.hparams())
    torch.testing.assert_close(out, torch.tensor([-0.447916]), atol=1e-5, rtol=0)


def test_small_lambda_approaches_hinge():
    z, y = _batch(seed=1)
    d = _margins(z, y, 0.1)
    hinge = d.max(-1).values  # d_y = 0, so this is max(0, max_{k≠y}(c + z_k - z_y))
    lam = 1e-3
    out = ldr_kl(z, y, lam=lam, c=0.1, normalize="none")
    # λ·log((1/K)Σ e^{d/λ}) lies in [max d - λ log K, max d].
    assert torch.all(out <= hinge + 1e-5) and torch.all(out >= hinge - lam * math.log(5) - 1e-5)


def test_large_lambda_approaches_mean_margin():
    z, y = _batch(seed=2, scale=1.0)
    out = ldr_kl(z, y, lam=1e3, c=0.1, normalize="none")
    torch.testing.assert_close(out, _margins(z, y, 0.1).mean(-1), atol=1e-2, rtol=0)


def test_normalisations():
    z, _ = _batch(seed=3)
    sp = normalize_logits(z, "softplus_mean")
    assert torch.all(sp >= 0)
    torch.testing.assert_close(sp.mean(-1), torch.ones(16))
    l1 = normalize_logits(z, "l1_mean")
    torch.testing.assert_close(l1.abs().mean(-1), torch.ones(16))
    assert torch.equal(normalize_logits(z, "none"), z)
    # l1_mean is invariant to positive rescaling of the logits (softplus_mean is not)
    torch.testing.assert_close(normalize_logits(5.0 * z, "l1_mean"), l1)


@pytest.mark.parametrize("normalize", ["none", "softplus_mean", "l1_mean"])
def test_large_logits_finite(normalize):
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], requires_grad=True)
    y = torch.tensor([1, 0, 2])
    loss = ldr_kl(z, y, lam=0.1, c=0.1, normalize=normalize)
    state = torch.full((3,), 10.0)
    aloss, new_state = aldr_kl(z, y, example_state=state, lam0=10.0, alpha=2.0, c=0.1, normalize=normalize)
    (loss.sum() + aloss.sum()).backward()
    assert torch.isfinite(loss).all() and torch.isfinite(aloss).all() and torch.isfinite(new_state).all()
    assert torch.isfinite(z.grad).all()


def test_bf16_input_computes_in_float32():
    z, y = _batch(seed=4)
    out = ldr_kl(z.bfloat16(), y, **LDR_KL.hparams())
    assert out.dtype == torch.float32 and out.shape == (16,)
    loss, state = aldr_kl(z.bfloat16(), y, example_state=torch.full((16,), 10.0), **ALDR_KL.hparams())
    assert loss.dtype == torch.float32 and state.dtype == torch.float32


@pytest.mark.parametrize("normalize", ["none", "softplus_mean", "l1_mean"])
def test_aldr_uniform_logits_reduces_to_ldr(normalize):
    z = torch.full((4, 6), 0.7)
    y = torch.tensor([0, 1, 2, 5])
    state = torch.tensor([10.0, 7.0, 5.0, 6.0])  # any previous λ: softmax of uniform logits is uniform
    loss, new_state = aldr_kl(z, y, example_state=state, lam0=10.0, alpha=2.0, c=0.1, normalize=normalize)
    torch.testing.assert_close(new_state, torch.full((4,), 10.0))
    torch.testing.assert_close(loss, ldr_kl(z, y, lam=10.0, c=0.1, normalize=normalize))


@pytest.mark.parametrize("alpha", [1.5, 2.0, 4.0])
def test_aldr_lambda_range(alpha):
    lam0 = 10.0
    z, y = _batch(b=64, k=10, scale=1.0, seed=5)
    z = z * torch.logspace(-2, 3, 64)[:, None]  # from near-uniform to one-hot-like rows
    state = torch.empty(64).uniform_(lam0 * (1 - 1 / alpha), lam0, generator=_gen(6))
    _, new_state = aldr_kl(z, y, example_state=state, lam0=lam0, alpha=alpha, c=0.1, normalize="none")
    assert torch.all(new_state >= lam0 * (1 - 1 / alpha)) and torch.all(new_state <= lam0)
    assert new_state[-1] < new_state[0]  # confident (low-entropy) rows get a smaller temperature


def test_aldr_state_is_detached_and_loss_differentiable():
    z, y = _batch(seed=7)
    z.requires_grad_(True)
    loss, new_state = aldr_kl(z, y, example_state=torch.full((16,), 10.0), **ALDR_KL.hparams())
    assert not new_state.requires_grad and loss.requires_grad
    assert loss.shape == (16,) and new_state.shape == (16,)
    loss.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_aldr_loss_formula():
    z, y = _batch(seed=8, scale=1.0)
    loss, lam = aldr_kl(z, y, example_state=torch.full((16,), 2.0), lam0=2.0, alpha=3.0, c=0.2,
                        normalize="none")
    expected = ldr_kl(z, y, lam=lam, c=0.2, normalize="none") - (3.0 * math.log(5) / 4.0) * (lam - 2.0) ** 2
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("spec,bad,match", [
    (LDR_KL, {"lam": 0.0}, "lam"),
    (LDR_KL, {"normalize": "softmax"}, "valid"),
    (LDR_KL, {"c": -1.0}, "margin"),
    (ALDR_KL, {"alpha": 1.0}, "alpha"),
    (ALDR_KL, {"lam0": -1.0}, "lam0"),
])
def test_validate(spec, bad, match):
    with pytest.raises(ValueError, match=match):
        spec.hparams(bad)


def _ldr_softplus_mean_float64(z, y, lam, c):
    """The formula in float64: softplus, divide by the row mean, then λ·log mean exp(d/λ)."""
    s = F.softplus(z.double())
    s = s / s.mean(-1, keepdim=True)
    d = _margins(s, y, c)
    return lam * (torch.logsumexp(d / lam, -1) - math.log(z.shape[-1]))


@pytest.mark.parametrize("k", [2, 10, 100])
def test_softplus_mean_on_very_negative_rows_matches_float64_and_is_shift_invariant(k):
    # issue 16: a row of -30 with -29 at the target went through the 1e-12 clamp of the mean
    z = torch.full((1, k), -30.0)
    z[0, 1] = -29.0
    y = torch.tensor([1])
    g = torch.Generator().manual_seed(k)
    rows = torch.cat([z, -25.0 + 3 * torch.randn(4, k, generator=g)])
    ys = torch.cat([y, torch.randint(0, k, (4,), generator=g)])
    for lam in (0.1, 1.0, 10.0):
        base = ldr_kl(rows, ys, lam=lam, c=0.1, normalize="softplus_mean")
        torch.testing.assert_close(base.double(), _ldr_softplus_mean_float64(rows, ys, lam, 0.1), atol=2e-5, rtol=1e-5)
        for shift in (-5.0, -40.0, -300.0):  # float64's softplus still represents these rows
            out = ldr_kl(rows + shift, ys, lam=lam, c=0.1, normalize="softplus_mean")
            torch.testing.assert_close(out.double(), _ldr_softplus_mean_float64(rows + shift, ys, lam, 0.1),
                                       atol=2e-5, rtol=1e-5)
            # the shifted random rows are rounded to float32 again: invariance within that rounding
            torch.testing.assert_close(out, base, atol=2e-4, rtol=1e-4)
        # softplus underflows even in float64 there: shift invariance alone (on the integer row, which
        # float32 still holds exactly at -1e5; the random rows lose input bits to the shift's rounding)
        for shift in (-1e3, -1e5):
            out = ldr_kl(z + shift, y, lam=lam, c=0.1, normalize="softplus_mean")
            torch.testing.assert_close(out, base[:1], atol=2e-6, rtol=1e-6)
        torch.testing.assert_close(ldr_kl(rows - 1e3, ys, lam=lam, c=0.1, normalize="softplus_mean"), base,
                                   atol=2e-4, rtol=1e-4)


def test_softplus_mean_gradients_finite_on_extreme_rows():
    z = torch.tensor([[-30.0, -29.0, -30.0], [-1e4, -1e4 + 1, -1e4], [-20.0, -20.0, -20.5], [3.0, -1e4, 0.0]],
                     requires_grad=True)
    y = torch.tensor([1, 1, 0, 2])
    for fn, kw in ((ldr_kl, dict(lam=1.0)), (aldr_kl, dict(example_state=torch.full((4,), 10.0), lam0=10.0,
                                                           alpha=2.0))):
        out = fn(z, y, c=0.1, normalize="softplus_mean", **kw)
        loss = out[0] if isinstance(out, tuple) else out
        (grad,) = torch.autograd.grad(loss.sum(), z)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


def test_softplus_mean_continuous_across_the_exp_threshold():
    # the rows just above and below -20 take the two forms of the normalisation; they agree there
    y = torch.tensor([0, 0])
    base = torch.tensor([[0.0, -1.0, -2.5]])
    rows = torch.cat([base - 19.999, base - 20.001])
    out = ldr_kl(rows, y, lam=1.0, c=0.1, normalize="softplus_mean")
    torch.testing.assert_close(out.double(), _ldr_softplus_mean_float64(rows, y, 1.0, 0.1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out[0], out[1], atol=1e-6, rtol=0)
