"""Card LN-DPO: DPO on per-token log-ratios; equal to DPO when |y_w| = |y_l| = 1."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.base import PairBatch
from lossbench.methods.dpo import dpo_loss
from lossbench.methods.dpo import normalised_margin
from lossbench.methods.ln_dpo import SPEC, ln_dpo_loss

from tests.methods.preference_helpers import close, random_pairs


def test_spec_reference_and_registry():
    assert methods.get("ln_dpo") is SPEC and SPEC.defaults == {"beta": 1.0}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_unit_lengths_is_dpo(beta):
    batch = random_pairs(chosen_len=1.0, rejected_len=1.0)
    close(ln_dpo_loss(batch, beta=beta), dpo_loss(batch, beta=beta))


def test_equal_lengths_is_dpo_with_beta_over_length():
    batch = random_pairs(seed=1, chosen_len=8.0, rejected_len=8.0)
    close(ln_dpo_loss(batch, beta=0.8), dpo_loss(batch, beta=0.1))


def test_init_is_log2_and_empty_response_guarded():
    batch = random_pairs(seed=2, chosen_len=None, rejected_len=None)
    at_init = PairBatch(**{**vars(batch), "policy_chosen": batch.ref_chosen, "policy_rejected": batch.ref_rejected})
    close(ln_dpo_loss(at_init, beta=1.0), torch.full((32,), math.log(2.0)))
    zero = torch.zeros(1)
    empty = PairBatch(policy_chosen=torch.tensor([-2.0]), policy_rejected=zero, ref_chosen=torch.tensor([-4.0]),
                      ref_rejected=zero, chosen_len=torch.tensor([4.0]), rejected_len=zero)
    close(normalised_margin(empty), torch.tensor([0.5]))


def test_validate_rejects_bad_beta():
    with pytest.raises(ValueError):
        SPEC.hparams({"beta": 0.0})
