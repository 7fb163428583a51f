"""Card M3: cDPO reduces to DPO at ε = 0 and has the finite stationary point βh* = log((1−ε)/ε)."""
import math

import pytest

from lossbench import methods
from lossbench.methods.cdpo import SPEC, cdpo_loss
from lossbench.methods.dpo import dpo_loss

from tests.methods.preference_helpers import close, margin_batch, random_pairs


def test_spec_reference_and_registry():
    assert methods.get("cdpo") is SPEC and SPEC.defaults == {"beta": 0.1, "eps": 0.1}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_eps_zero_is_dpo(beta):
    batch = random_pairs()
    close(cdpo_loss(batch, beta=beta, eps=0.0), dpo_loss(batch, beta=beta))


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_stationary_point_is_log_odds_of_soft_label(eps, beta):
    h_star = math.log((1 - eps) / eps) / beta
    h, batch = margin_batch([h_star])
    loss = cdpo_loss(batch, beta=beta, eps=eps)
    loss.sum().backward()
    assert abs(h.grad.item()) < 1e-6
    # ... and it is the minimum: nearby margins on either side cost more.
    _, around = margin_batch([h_star - 1.0, h_star + 1.0])
    assert (cdpo_loss(around, beta=beta, eps=eps) > loss).all()


def test_eps_half_drives_margin_to_zero():
    # ε = 0.5 (outside the valid range, called directly): symmetric loss, stationary at h = 0.
    h, batch = margin_batch([0.0, 2.0, -2.0])
    loss = cdpo_loss(batch, beta=0.3, eps=0.5)
    loss.sum().backward()
    assert abs(h.grad[0].item()) < 1e-7 and h.grad[1] > 0 and h.grad[2] < 0
    close(loss[1], loss[2])


def test_validate_rejects_bad_hparams():
    for bad in ({"eps": 0.5}, {"eps": -0.1}, {"eps": 0.7}, {"beta": 0.0}):
        with pytest.raises(ValueError):
            SPEC.hparams(bad)
    assert SPEC.hparams({"eps": 0.0})["eps"] == 0.0
