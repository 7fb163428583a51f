"""Cards C13 (DHKD), C14 (PLD), C15 (self-distillation) and the Hinton KD baseline."""
import math

import numpy as np
import pytest
import torch

from lossbench.methods.dhkd import binary_kl, binary_kl_norm, dhkd
from lossbench.methods.erm import cross_entropy
from lossbench.methods.kd import kd, tempered_kl
from lossbench.methods.pld import pld, teacher_ranking
from lossbench.methods.self_distill import soft_target_ce

B, K = 8, 5
Y = torch.arange(B) % K


def _logits(seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, K, generator=g) * scale


# --- KD -----------------------------------------------------------------------------------------

def test_kd_limits():
    z, t = _logits(0), _logits(1)
    torch.testing.assert_close(kd(z, Y, teacher_logits=t, alpha=0.0, temperature=4.0), cross_entropy(z, Y))
    assert torch.allclose(tempered_kl(t, t, 4.0), torch.zeros(B), atol=1e-6)  # student = teacher
    assert torch.allclose(tempered_kl(z, z + 3.0, 4.0), torch.zeros(B), atol=1e-5)  # shift-invariant
    assert torch.all(tempered_kl(t, z, 4.0) > 0)


# --- DHKD ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("aux", [binary_kl, binary_kl_norm])
def test_binary_kl_is_zero_only_at_equal_logits_unlike_softmax_kl(aux):
    t = _logits(1)
    assert torch.allclose(aux(t, t, 2.0), torch.zeros(B), atol=1e-6)
    shifted = t + 1.5  # z² = z^T + c
    assert torch.all(aux(t, shifted, 2.0) > 1e-3)
    assert torch.allclose(tempered_kl(t, shifted, 4.0), torch.zeros(B), atol=1e-5)
    assert torch.all(aux(t, _logits(2), 2.0) > 0)


def test_binary_kl_norm_value():
    # s − t = [2, −2], T 1: per class −log 2 − ½(log sig(2) + log sig(−2)) = −0.693147 + ½(0.126928 +
    # 2.126928) = 0.433781 (float64), two classes → 0.867562; T = 2 scales d by ½ and the sum by 4:
    # 4·2·(−0.693147 + ½(0.313262 + 1.313262)) = 0.960916
    s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    torch.testing.assert_close(binary_kl_norm(t, s, 1.0), torch.tensor([0.867562]), rtol=0, atol=2e-6)
    torch.testing.assert_close(binary_kl_norm(t, s, 2.0), torch.tensor([0.960916]), rtol=0, atol=2e-6)


def test_dhkd_alpha_zero_norm_is_the_released_code_objective():
    # penghui-yang/DHKD `--distill dhkd -r 1 -a 1 --BinaryKL_T 2`: CE(z¹) + BinaryKLNorm(z², t).
    t, z1, z2 = _logits(1), _logits(2), _logits(3)
    out = dhkd(z1, Y, teacher_logits=t, aux_logits=z2, gamma=1.0, alpha=0.0, t_kd=4.0, t_bin=2.0,
               aux_loss="binary_kl_norm")
    torch.testing.assert_close(out, cross_entropy(z1, Y) + binary_kl_norm(t, z2, 2.0))


@pytest.mark.parametrize("aux_loss", ["binary_kl", "binary_kl_norm"])
def test_dhkd_gradients_reach_each_head_from_its_own_term(aux_loss):
    t = _logits(1)
    z1, z2 = _logits(2).requires_grad_(True), _logits(3).requires_grad_(True)
    kw = dict(teacher_logits=t, gamma=0.0, alpha=0.0, t_kd=4.0, t_bin=2.0, aux_loss=aux_loss)
    g1, g2 = torch.autograd.grad(dhkd(z1, Y, aux_logits=z2, **kw).sum(), [z1, z2], allow_unused=True)
    assert (g1 is None or torch.all(g1 == 0)) and g2.abs().sum() > 0  # BinaryKL: aux head only
    kw.update(gamma=1.0, alpha=1.0)
    aux = {"binary_kl": binary_kl, "binary_kl_norm": binary_kl_norm}[aux_loss]
    main_terms = dhkd(z1, Y, aux_logits=z2, **kw) - aux(t, z2, 2.0)
    g1, g2 = torch.autograd.grad(main_terms.sum(), [z1, z2], allow_unused=True)
    assert g1.abs().sum() > 0 and (g2 is None or torch.all(g2 == 0))  # CE + KD: main head only


# --- PLD ----------------------------------------------------------------------------------------

def _pld_brute(s, y, t, tau):
    out = []
    for i in range(len(y)):
        order = [int(y[i])] + sorted((k for k in range(s.shape[1]) if k != y[i]), key=lambda k: -float(t[i, k]))
        q = torch.softmax(t[i].double() / tau, -1)
        out.append(sum(q[order[k]] * (torch.logsumexp(s[i, order[k:]].double(), 0) - s[i, order[k]])
                       for k in range(len(order))))
    return torch.stack(out).float()


def test_pld_matches_a_per_position_loop():
    s, t = _logits(0), _logits(1)
    torch.testing.assert_close(pld(s, Y, teacher_logits=t, tau=4.0), _pld_brute(s, Y, t, 4.0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pld(s, Y, teacher_logits=t, tau=1.0), _pld_brute(s, Y, t, 1.0), rtol=1e-5, atol=1e-5)
    assert torch.equal(teacher_ranking(t, Y)[:, 0], Y)


def test_pld_shift_invariant_and_ce_limits():
    s, t = _logits(0), _logits(1)
    torch.testing.assert_close(pld(s + 7.0, Y, teacher_logits=t, tau=4.0), pld(s, Y, teacher_logits=t, tau=4.0),
                               rtol=1e-5, atol=1e-5)
    one_hot_teacher = torch.nn.functional.one_hot(Y, K).float() * 1e4  # q = e_y: only the first position
    torch.testing.assert_close(pld(s, Y, teacher_logits=one_hot_teacher, tau=1.0), cross_entropy(s, Y))
    t_top_y = t.scatter(1, Y[:, None], t.max(1, keepdim=True).values + 1.0)  # teacher's argmax = y
    torch.testing.assert_close(pld(s, Y, teacher_logits=t_top_y, tau=1e-3), cross_entropy(s, Y))  # τ → 0


def test_pld_hessian_is_psd():
    s, t = _logits(0), _logits(1)
    for i in range(4):
        h = torch.autograd.functional.hessian(
            lambda x: pld(x[None], Y[i:i + 1], teacher_logits=t[i:i + 1], tau=4.0).sum(), s[i])
        assert torch.linalg.eigvalsh(h.double()).min() > -1e-5


# --- self-distillation --------------------------------------------------------------------------

def test_self_distill_limits():
    z, t = _logits(0), _logits(1)
    torch.testing.assert_close(soft_target_ce(z, Y, teacher_logits=t, alpha=1.0, target_loss="ce"),
                               cross_entropy(z, Y))
    for target_loss in ("ce", "mse"):
        zz = z.clone().requires_grad_(True)
        loss = soft_target_ce(zz, Y, teacher_logits=z, alpha=0.0, target_loss=target_loss)
        (g,) = torch.autograd.grad(loss.sum(), zz)
        assert g.abs().max() < 1e-6  # the student already equals its teacher: no gradient


def test_self_distill_mse_is_brier_to_the_mixed_target_up_to_a_constant():
    z, t = _logits(0).requires_grad_(True), _logits(1)
    onehot = torch.nn.functional.one_hot(Y, K).float()
    m = 0.6 * onehot + 0.4 * t.softmax(-1)
    (g_code,) = torch.autograd.grad(soft_target_ce(z, Y, teacher_logits=t, alpha=0.6, target_loss="mse").sum(), z)
    (g_mix,) = torch.autograd.grad((z.softmax(-1) - m).square().mean(-1).sum(), z)
    torch.testing.assert_close(g_code, g_mix)
    brier = (z.softmax(-1) - onehot).square().mean(-1)
    torch.testing.assert_close(soft_target_ce(z, Y, teacher_logits=t, alpha=1.0, target_loss="mse"), brier)


# Kernel-ridge theory of card C15 on the README's toy (Kennethborup/self_distillation,
# toy_example.ipynb, the data of Mobahi et al. 2020): 11 noisy sinusoid points at x = 0, 0.1, …, 1,
# RBF kernel exp(−80·(x − x')²), ridge λ = 0.2, loss = mean squared error to sin(2πx) on
# x = 0, 0.01, …, 1. Step 1 is the plain fit f_1 = k(x)(K + λI)⁻¹y; step t fits the targets
# α·y + (1 − α)·f_{t−1}(X).
_TOY_Y = np.array([0.38476636465198066, 1.2333967683416893, 1.33232242218057, 0.69201594888895180,
                   -0.29756145531871736, -0.24189291901377769, -0.7964485769175675, -0.9616480167034174,
                   -0.49672509509916934, -0.3469066003991437, 0.5589512650600734])
_TOY_X, _TOY_GRID, _LAM = np.arange(0, 1.1, 0.1), np.arange(0, 1.01, 0.01), 0.2


def _rbf(a, b):
    return np.exp(-80.0 * (a[:, None] - b[None, :]) ** 2)


def _krr_distill(alpha, steps):
    """Predictions [steps, grid] of f_1..f_steps on the grid, iterating the fits (float64)."""
    gram, ridge = _rbf(_TOY_X, _TOY_X), _rbf(_TOY_GRID, _TOY_X)
    fitted, preds = _TOY_Y, []
    for _ in range(steps):
        coef = np.linalg.solve(gram + _LAM * np.eye(len(_TOY_X)), alpha * _TOY_Y + (1 - alpha) * fitted)
        fitted, preds = gram @ coef, preds + [ridge @ coef]
    return np.array(preds)


def _toy_loss(pred):
    return np.mean((pred - np.sin(2 * np.pi * _TOY_GRID)) ** 2, axis=-1)


def _ridge(penalty):
    """f = k(x)(K + P)⁻¹y for a penalty matrix P (a scalar means P·I)."""
    gram = _rbf(_TOY_X, _TOY_X)
    return _rbf(_TOY_GRID, _TOY_X) @ np.linalg.solve(gram + penalty * np.eye(len(_TOY_X)) if np.isscalar(penalty)
                                                     else gram + penalty, _TOY_Y)


def test_krr_toy_reproduces_the_readme_table():
    # README "Step | Loss (alpha = 0) | Loss (alpha = 0.35)", printed to 5 decimals.
    np.testing.assert_allclose(_toy_loss(_krr_distill(0.0, 6)),
                               [0.16477, 0.15076, 0.14915, 0.15561, 0.16735, 0.18251], atol=1e-5)
    np.testing.assert_allclose(_toy_loss(_krr_distill(0.35, 6)),
                               [0.16477, 0.15424, 0.15089, 0.14983, 0.14954, 0.14948], atol=1e-5)
    assert abs(_toy_loss(np.zeros_like(_TOY_GRID)) - 0.49505) < 1e-5  # α = 0 limit: the zero function
    assert abs(_toy_loss(_ridge(_LAM / 0.35)) - 0.14959) < 1e-5


def test_krr_alpha_zero_steps_are_one_fit_with_an_amplified_penalty():
    # K = V diag(d) Vᵀ. t steps with α = 0 give k(x)·V diag(d^{t−1}/(d + λ)^t) Vᵀ y, i.e. one fit
    # k(x)(K + Λ_t)⁻¹y with Λ_t = V diag(λ_t) Vᵀ, λ_t = d·((1 + λ/d)^t − 1) ≥ t·λ (Bernoulli), growing
    # with t, and fastest where d is small (the sparsification of the README's B plots).
    d, v = np.linalg.eigh(_rbf(_TOY_X, _TOY_X))
    assert d.min() > 0
    steps = _krr_distill(0.0, 6)
    previous = np.full_like(d, _LAM)
    for t in range(1, 7):
        lam_t = d * ((1 + _LAM / d) ** t - 1)
        np.testing.assert_allclose(steps[t - 1], _ridge(v @ np.diag(lam_t) @ v.T), rtol=1e-9, atol=1e-12)
        assert np.all(lam_t >= t * _LAM * (1 - 1e-12)) and np.all(lam_t >= previous * (1 - 1e-12))
        previous = lam_t
    assert np.all(np.diff(lam_t / _LAM) <= 0)  # eigh sorts d ascending: the smallest d are amplified most


def test_krr_alpha_limit_is_the_fit_with_penalty_lambda_over_alpha():
    # Fixed point f = A(α y + (1 − α) f), A = K(K + λI)⁻¹ ⇒ f_∞ = k(x)(K + (λ/α)I)⁻¹y; the iteration
    # contracts at rate (1 − α)·max d/(d + λ) < 1, so 200 steps reach it to float64 precision.
    np.testing.assert_allclose(_krr_distill(0.35, 200)[-1], _ridge(_LAM / 0.35), rtol=0, atol=1e-10)
    assert math.isclose(float(_toy_loss(_ridge(_LAM / 1.0))), float(_toy_loss(_krr_distill(1.0, 1)[0])))
