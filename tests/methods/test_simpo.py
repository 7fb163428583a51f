"""Card M5: SimPO is length-normalised (per-token shift invariant), reference-free, log(1 + e^γ) at ties."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.base import PairBatch
from lossbench.methods.simpo import SPEC, simpo_loss

from tests.methods.preference_helpers import close

B, T = 16, 12


def _token_pairs(seed=0, shift=0.0):
    """Sequence log-probs summed from per-token ones (every per-token log-prob shifted by `shift`)."""
    g = torch.Generator().manual_seed(seed)
    tok = -torch.rand(4, B, T, generator=g) * 3 + shift
    lens = torch.randint(1, T + 1, (2, B), generator=g)
    mask = (torch.arange(T) < lens[..., None]).float()  # [2, B, T]
    pc, pr = (tok[0] * mask[0]).sum(-1), (tok[1] * mask[1]).sum(-1)
    rc, rr = (tok[2] * mask[0]).sum(-1), (tok[3] * mask[1]).sum(-1)
    return PairBatch(policy_chosen=pc, policy_rejected=pr, ref_chosen=rc, ref_rejected=rr,
                     chosen_len=lens[0].float(), rejected_len=lens[1].float())


def test_spec_reference_and_registry():
    assert methods.get("simpo") is SPEC and SPEC.defaults == {"beta": 2.0, "gamma_beta_ratio": 0.5}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)


@pytest.mark.parametrize("shift", [-4.0, -2.0, -0.5])
def test_per_token_constant_shift_leaves_loss_unchanged(shift):
    base = simpo_loss(_token_pairs(seed=1), beta=2.0, gamma_beta_ratio=0.5)
    shifted = simpo_loss(_token_pairs(seed=1, shift=shift), beta=2.0, gamma_beta_ratio=0.5)
    close(shifted, base, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("beta,ratio", [(2.0, 0.5), (2.5, 0.55), (10.0, 0.1), (2.0, 0.0)])
def test_equal_average_log_probs_give_log_one_plus_exp_gamma(beta, ratio):
    # ℓ̄(y_w) = ℓ̄(y_l) = -0.7 at different lengths: loss = ℓ(−γ) = log(1 + e^γ), γ = β·r.
    lc, lr = torch.tensor([3.0, 10.0]), torch.tensor([7.0, 2.0])
    batch = PairBatch(policy_chosen=-0.7 * lc, policy_rejected=-0.7 * lr, ref_chosen=torch.zeros(2),
                      ref_rejected=torch.zeros(2), chosen_len=lc, rejected_len=lr)
    gamma = beta * ratio
    close(simpo_loss(batch, beta=beta, gamma_beta_ratio=ratio), torch.full((2,), math.log1p(math.exp(gamma))))


def test_reference_free():
    batch = _token_pairs(seed=2)
    other = PairBatch(**{**vars(batch), "ref_chosen": batch.ref_chosen - 50, "ref_rejected": batch.ref_rejected + 9})
    close(simpo_loss(other, beta=2.0, gamma_beta_ratio=0.5), simpo_loss(batch, beta=2.0, gamma_beta_ratio=0.5))


def test_validate_rejects_bad_hparams():
    for bad in ({"beta": 0.0}, {"gamma_beta_ratio": -0.1}):
        with pytest.raises(ValueError):
            SPEC.hparams(bad)
