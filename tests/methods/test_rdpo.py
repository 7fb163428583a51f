"""Card M4: rDPO is unbiased under label flips, reduces to DPO at ε = 0, always pushes h up."""
import pytest
import torch

from lossbench import methods
from lossbench.methods.dpo import dpo_loss, dpo_margin, logistic_loss
from lossbench.methods.rdpo import SPEC, rdpo_loss

from tests.methods.preference_helpers import close, margin_batch, random_pairs, swap


def test_spec_reference_and_registry():
    assert methods.get("rdpo") is SPEC and SPEC.defaults == {"beta": 0.1, "eps": 0.1}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.25, 0.4])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_unbiased_under_flips(eps, beta):
    # E over a flip with probability ε of the rDPO loss = the clean DPO loss: (1−ε)L(h) + εL(−h) = ℓ(βh).
    batch = random_pairs(seed=1, b=64, scale=40.0)
    h = dpo_margin(batch)
    mixed = (1 - eps) * rdpo_loss(batch, beta=beta, eps=eps) + eps * rdpo_loss(swap(batch), beta=beta, eps=eps)
    close(mixed, logistic_loss(beta * h), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_eps_zero_is_dpo(beta):
    batch = random_pairs(seed=2, b=64, scale=40.0)
    close(rdpo_loss(batch, beta=beta, eps=0.0), dpo_loss(batch, beta=beta))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.4])
def test_gradient_weight_is_positive_and_as_card(eps):
    beta = 0.5
    h, batch = margin_batch(torch.linspace(-60, 60, 241), length=1.0)
    rdpo_loss(batch, beta=beta, eps=eps).sum().backward()
    weight = -h.grad  # −∂L/∂h
    z = beta * h.detach()
    card = beta * ((1 - eps) * torch.sigmoid(-z) + eps * torch.sigmoid(z)) / (1 - 2 * eps)
    close(weight, card, rtol=1e-5, atol=1e-7)
    if eps > 0:  # with ε > 0 the weight never vanishes: bounded below by βε/(1−2ε)
        assert (weight >= beta * eps / (1 - 2 * eps) * (1 - 1e-5)).all()
    assert (weight > 0).all() if eps > 0 else (weight >= 0).all()


def test_validate_rejects_bad_hparams():
    for bad in ({"eps": 0.5}, {"eps": -0.01}, {"beta": -1.0}):
        with pytest.raises(ValueError):
            SPEC.hparams(bad)
