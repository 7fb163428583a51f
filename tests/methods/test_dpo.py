"""Card M1: DPO at initialisation, its margin gradient, and the swap identity ℓ(z) − ℓ(−z) = −z."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.base import PairBatch
from lossbench.methods.dpo import DPO, dpo_loss, dpo_margin

from tests.methods.preference_helpers import close, random_pairs, swap


def test_spec_reference_and_registry():
    assert methods.get("dpo") is DPO
    assert DPO.defaults == {"beta": 0.1} and DPO.kind == "pairwise" and DPO.needs == ()
    kwargs, expected = DPO.reference()
    close(DPO.fn(**kwargs), expected)
    # the hand value: h = 1.5, β = 0.1, log(1 + e^-0.15) = 0.620957
    close(DPO.fn(**kwargs), torch.tensor([0.620957]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("beta", [0.03, 0.1, 1.0])
def test_init_loss_is_log2_and_margin_gradient_is_minus_beta_half(beta):
    g = torch.Generator().manual_seed(1)
    ref_c, ref_r = -torch.rand(2, 8, generator=g) * 30
    pol_c, pol_r = ref_c.clone().requires_grad_(True), ref_r.clone().requires_grad_(True)
    batch = PairBatch(policy_chosen=pol_c, policy_rejected=pol_r, ref_chosen=ref_c, ref_rejected=ref_r,
                      chosen_len=torch.full((8,), 5.0), rejected_len=torch.full((8,), 5.0))
    loss = dpo_loss(batch, beta=beta)
    close(loss, torch.full((8,), math.log(2.0)))
    loss.sum().backward()
    # h = Δ(y_w) − Δ(y_l): ∂L/∂h = ∂L/∂log π(y_w) = −∂L/∂log π(y_l) = −β σ(0) = −β/2.
    close(pol_c.grad, torch.full((8,), -beta / 2))
    close(pol_r.grad, torch.full((8,), beta / 2))


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_swapping_chosen_and_rejected_changes_loss_by_beta_h(beta):
    batch = random_pairs(seed=2, scale=20.0, chosen_len=10.0, rejected_len=12.0)
    h = dpo_margin(batch)
    assert h.abs().max() > 3  # the identity is exercised well away from 0
    diff = dpo_loss(swap(batch), beta=beta) - dpo_loss(batch, beta=beta)
    close(diff, beta * h, rtol=1e-5, atol=1e-5)


def test_bf16_inputs_compute_in_float32():
    batch = random_pairs(seed=3, scale=20.0, chosen_len=10.0, rejected_len=12.0)
    bf = PairBatch(**{k: (v.bfloat16() if torch.is_tensor(v) else v) for k, v in vars(batch).items()})
    out = dpo_loss(bf, beta=0.1)
    assert out.dtype == torch.float32 and out.shape == (32,)


def test_validate_rejects_bad_beta():
    for beta in (0.0, -0.1):
        with pytest.raises(ValueError):
            DPO.hparams({"beta": beta})
