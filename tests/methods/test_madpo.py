"""Card M7: MADPO's weight — DPO when c_max = c_min = 1, c(τ) = 1 so w is continuous at |m| = τ,
hard pairs up-weighted, the card's c(|m|) formula, detached weights."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.base import PairBatch
from lossbench.methods.dpo import dpo_loss
from lossbench.methods.madpo import SPEC, TAU, adaptive_weight, madpo_loss, margin_scale

from tests.methods.preference_helpers import close, random_pairs

HP = dict(c_max=2.0, c_min=0.5, lam=1.0, tau=TAU)


def test_spec_reference_and_registry():
    assert methods.get("madpo") is SPEC and SPEC.needs == ("rm_margin",)
    assert SPEC.defaults == {"beta": 0.1, "c_max": 2.0, "c_min": 0.5, "lam": 1.0, "tau": math.log(0.999 / 0.001)}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)


@pytest.mark.parametrize("c_max,c_min", [(1.0, 1.0), (1.0, 0.5), (2.0, 1.0)])
def test_unit_scale_is_dpo(c_max, c_min):
    # c ≡ 1 ⇒ w = σ(m)/σ(m) = 1 for every margin ⇒ DPO; the last two are the k = 0 and k = ∞ edges.
    batch = random_pairs(rm_margin=8.0)
    out = madpo_loss(batch, beta=0.1, c_max=c_max, c_min=c_min, lam=1.0, tau=TAU)
    close(out, dpo_loss(batch, beta=0.1))


@pytest.mark.parametrize("c_max,c_min,lam,tau", [(2.0, 0.5, 1.0, TAU), (3.0, 0.2, 0.5, 2.0), (1.5, 0.9, 4.0, 1.0)])
def test_scale_matches_card_formula(c_max, c_min, lam, tau):
    a = torch.linspace(0, 4 * tau, 101, dtype=torch.float64)
    k = (c_max - 1) / (1 - c_min)
    card = c_min + (c_max - c_min) / (1 + k * torch.exp(lam * (a - tau)))
    out = margin_scale(a.float(), c_max=c_max, c_min=c_min, lam=lam, tau=tau)
    close(out.double(), card, rtol=1e-5, atol=1e-6)
    # c(τ) = 1, c decreasing in |m|, towards c_min for large margins (finite even where e^u overflows)
    close(margin_scale(torch.tensor([tau]), c_max=c_max, c_min=c_min, lam=lam, tau=tau), torch.ones(1))
    assert (out[1:] <= out[:-1]).all()
    close(margin_scale(torch.tensor([1e4]), c_max=c_max, c_min=c_min, lam=lam, tau=tau), torch.tensor([c_min]))


def test_small_margins_get_nearly_c_max_with_defaults():
    assert margin_scale(torch.zeros(1), **HP).item() == pytest.approx(2.0, abs=0.01)


def test_weight_is_continuous_at_plus_minus_tau():
    # c(τ) = 1 makes w(±τ) = 1 from both sides; w is Lipschitz there (slope ≈ τ·|c'(τ)| ≈ 2.3),
    # so the gap to 1 shrinks with the distance δ to ±τ.
    for m in (TAU, -TAU):
        close(adaptive_weight(torch.tensor([m]), **HP), torch.ones(1), rtol=0, atol=1e-6)
        for delta in (1e-2, 1e-3):
            around = torch.tensor([m - delta, m + delta])
            close(adaptive_weight(around, **HP), torch.ones(2), rtol=0, atol=3 * delta)


def test_hard_pairs_up_easy_and_disputed_down_beyond_minus_tau_one():
    m = torch.tensor([0.1, 1.0, 3.0, 6.0, 7.5, 20.0, -0.1, -3.0, -6.0, -7.5, -50.0])
    w = adaptive_weight(m, **HP)
    assert (w[:4] > 1).all()  # 0 < m < τ: hard pairs amplified
    assert (w[4:6] < 1).all()  # m > τ: easy pairs dampened
    assert (w[6:9] < 1).all()  # −τ < m < 0: the RM mildly disagrees
    assert (w[9:] == 1).all()  # m ≤ −τ: left as DPO


def test_weight_is_detached_and_policy_gets_gradient():
    batch = random_pairs(seed=1, rm_margin=8.0)
    pol = batch.policy_chosen.clone().requires_grad_(True)
    rm = batch.rm_margin.clone().requires_grad_(True)
    batch = PairBatch(**{**vars(batch), "policy_chosen": pol, "rm_margin": rm})
    madpo_loss(batch, beta=0.1, **HP).sum().backward()
    assert rm.grad is None and torch.isfinite(pol.grad).all() and pol.grad.abs().sum() > 0


def test_validate_rejects_bad_hparams():
    for bad in ({"c_min": 1.2}, {"c_max": 0.8}, {"c_min": 0.0}, {"lam": 0.0}, {"tau": -1.0}, {"beta": 0.0}):
        with pytest.raises(ValueError):
            SPEC.hparams(bad)
    SPEC.hparams({"c_max": 1.0, "c_min": 1.0})
