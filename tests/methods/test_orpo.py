"""Card M15: ORPO with λ = 0 is SFT on y_w; the stable log-odds matches the naive formula on [−20, −1e−3]."""
import math

import pytest
import torch

import methods
from methods.base import PairBatch
from methods.dpo import logistic_loss
from methods.orpo import MAX_AVG_LOGP, SPEC, log_odds, orpo_loss

from tests.methods.preference_helpers import close, random_pairs


def test_spec_reference_and_registry():
    assert methods.get("orpo") is SPEC and SPEC.defaults == {"lam": 0.1}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)


def test_lambda_zero_is_sft_on_chosen():
    batch = random_pairs(chosen_len=None, rejected_len=None)
    pol_r = batch.policy_rejected.clone().requires_grad_(True)
    batch = PairBatch(**{**vars(batch), "policy_rejected": pol_r})
    out = orpo_loss(batch, lam=0.0)
    close(out, -batch.policy_chosen / batch.chosen_len)  # token-average NLL of y_w
    out.sum().backward()
    assert torch.count_nonzero(pol_r.grad) == 0


def test_stable_log_odds_matches_naive_formula():
    avg = -torch.logspace(-3, math.log10(20.0), 400, dtype=torch.float64)  # ℓ̄ ∈ [−20, −1e−3]
    p = avg.exp()
    naive = torch.log(p / (1 - p))
    close(log_odds(avg.float()).double(), naive, rtol=1e-5, atol=1e-6)


def test_log_odds_clamped_near_zero():
    out = log_odds(torch.tensor([-1e-9, 0.0, 0.3]))  # p → 1 (or garbage ℓ̄ > 0): clamped below 0
    cap = math.log(math.exp(MAX_AVG_LOGP) / -math.expm1(MAX_AVG_LOGP))
    close(out, torch.full((3,), cap), rtol=1e-5)
    assert 13 < cap < 14
    x = torch.tensor([0.0, -1e-4, -60.0], requires_grad=True)
    log_odds(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0] == 0


def test_odds_ratio_term_and_reference_free():
    batch = random_pairs(seed=1, chosen_len=None, rejected_len=None)
    avg_w, avg_l = batch.policy_chosen / batch.chosen_len, batch.policy_rejected / batch.rejected_len
    # λ·ℓ(log odds(y_w) − log odds(y_l)) with the naive odds in float64
    odds = lambda a: torch.log(a.double().exp() / (1 - a.double().exp()))  # noqa: E731
    expected = -avg_w.double() + 0.25 * logistic_loss(odds(avg_w) - odds(avg_l))
    close(orpo_loss(batch, lam=0.25).double(), expected, rtol=1e-5, atol=1e-5)
    other = PairBatch(**{**vars(batch), "ref_chosen": batch.ref_chosen * 3, "ref_rejected": batch.ref_rejected - 1})
    close(orpo_loss(other, lam=0.25), orpo_loss(batch, lam=0.25))


def test_validate_rejects_bad_lambda():
    with pytest.raises(ValueError):
        SPEC.hparams({"lam": -0.1})
