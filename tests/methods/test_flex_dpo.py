"""Card M11: Flex-DPO with β⁺ = β⁻ is DPO; β⁺, β⁻ scale the chosen and rejected gradients separately."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.base import PairBatch
from lossbench.methods.dpo import dpo_loss
from lossbench.methods.flex_dpo import SPEC, flex_dpo_loss

from tests.methods.preference_helpers import close, random_pairs


def test_spec_reference_and_registry():
    assert methods.get("flex_dpo") is SPEC and SPEC.defaults == {"beta_chosen": 0.1, "beta_rejected": 0.08}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)


@pytest.mark.parametrize("beta", [0.03, 0.1, 1.0])
def test_equal_betas_is_dpo(beta):
    batch = random_pairs()
    close(flex_dpo_loss(batch, beta_chosen=beta, beta_rejected=beta), dpo_loss(batch, beta=beta))


def test_gradients_scale_with_their_own_beta():
    batch = random_pairs(seed=1)
    pol_c = batch.policy_chosen.clone().requires_grad_(True)
    pol_r = batch.policy_rejected.clone().requires_grad_(True)
    batch = PairBatch(**{**vars(batch), "policy_chosen": pol_c, "policy_rejected": pol_r})
    flex_dpo_loss(batch, beta_chosen=0.1, beta_rejected=0.06).sum().backward()
    # ∂L/∂log π(y_w) = −β⁺σ(−z), ∂L/∂log π(y_l) = +β⁻σ(−z): the ratio is −β⁺/β⁻ pair by pair.
    close(pol_c.grad / pol_r.grad, torch.full_like(pol_c, -0.1 / 0.06))


def test_init_loss_is_log2():
    ref = -torch.rand(2, 5, generator=torch.Generator().manual_seed(2)) * 20
    batch = PairBatch(policy_chosen=ref[0], policy_rejected=ref[1], ref_chosen=ref[0], ref_rejected=ref[1],
                      chosen_len=torch.ones(5), rejected_len=torch.ones(5))
    close(flex_dpo_loss(batch, beta_chosen=0.1, beta_rejected=0.08), torch.full((5,), math.log(2.0)))


def test_validate_rejects_bad_hparams():
    for bad in ({"beta_chosen": 0.0}, {"beta_rejected": -0.1}):
        with pytest.raises(ValueError):
            SPEC.hparams(bad)
