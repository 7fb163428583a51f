"""Card M15: ORPO with λ = 0 is SFT on y_w; the stable log-odds matches the naive formula on [−20, −1e−3]."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.base import PairBatch
from lossbench.methods.dpo import logistic_loss
from lossbench.methods.orpo import MAX_AVG_LOGP, SPEC, log_odds, orpo_loss

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


def test_log_odds_capped_only_at_and_above_zero():
    out = log_odds(torch.tensor([0.0, 0.3]))  # p = 1 exactly, or garbage ℓ̄ > 0: capped below 0
    cap = math.log(math.exp(MAX_AVG_LOGP) / -math.expm1(MAX_AVG_LOGP))
    close(out, torch.full((2,), cap), rtol=1e-5)
    assert 87 < cap < 88
    # every negative float32 ℓ̄ keeps the formula (issue 16: ℓ̄ > −1e-6 used to be capped)
    tiny = torch.tensor([-1e-9, -1e-7, -1e-20], dtype=torch.float64)
    close(log_odds(tiny.float()).double(), tiny - torch.log(-torch.expm1(tiny)), rtol=1e-6, atol=0)
    x = torch.tensor([0.0, -1e-4, -1e-7, -60.0], requires_grad=True)
    log_odds(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0] == 0
    close(x.grad[1:].double(), 1 / -torch.expm1(x[1:].detach().double()), rtol=1e-5)  # d/dx log odds = 1/(1 − e^x)


def _orpo_float64(pc, pr, lc, lr, lam):
    """The paper's formula in float64, naive odds: NLL_avg(y_w) + λ·log σ-loss of the log odds ratio."""
    aw, al = pc / lc, pr / lr
    odds = lambda a: torch.log(a.exp() / (1 - a.exp()))  # noqa: E731
    return -aw + lam * torch.nn.functional.softplus(-(odds(aw) - odds(al)))


def test_issue_example_value_and_gradient_match_float64():
    # λ = 0.1, log π(y_w) = −8 over 8 tokens, log π(y_l) = −4e-7 over 4 tokens: the rejected response is
    # near-certain, the preference most violated. The paper's formula: 2.6659 and a large gradient.
    args = dict(pc=torch.tensor([-8.0]), pr=torch.tensor([-4e-7]), lc=torch.tensor([8.0]), lr=torch.tensor([4.0]))
    grads32 = {k: v.clone().requires_grad_(True) for k, v in args.items() if k in ("pc", "pr")}
    batch = PairBatch(policy_chosen=grads32["pc"], policy_rejected=grads32["pr"], ref_chosen=torch.zeros(1),
                      ref_rejected=torch.zeros(1), chosen_len=args["lc"], rejected_len=args["lr"])
    out = orpo_loss(batch, lam=0.1)
    out.sum().backward()
    grads64 = {k: v.double().requires_grad_(True) for k, v in args.items() if k in ("pc", "pr")}
    ref = _orpo_float64(grads64["pc"], grads64["pr"], args["lc"].double(), args["lr"].double(), 0.1)
    ref.sum().backward()
    close(out.double(), ref.detach(), rtol=1e-6)
    assert abs(out.item() - 2.6659) < 1e-4
    for k in grads32:
        close(grads32[k].grad.double(), grads64[k].grad, rtol=1e-5)
    assert abs(grads32["pr"].grad.item()) > 1e5  # ≈ λ/(|ℓ̄_l|·|y_l|) = 0.1/(1e-7·4)


@pytest.mark.parametrize("avg_l", [-1e-3, -1e-5, -1e-7, -1e-9])
def test_gradient_matches_float64_near_certain_responses(avg_l):
    g = torch.Generator().manual_seed(0)
    lc, lr = torch.tensor([3.0, 10.0, 7.0]), torch.tensor([4.0, 2.0, 9.0])
    pc = torch.stack([torch.tensor(-2.0), torch.tensor(avg_l * 10.0), -torch.rand((), generator=g) * 5])
    pr = torch.stack([torch.tensor(avg_l * 4.0), torch.tensor(-5.0), torch.tensor(avg_l * 9.0)])
    p32, r32 = pc.clone().requires_grad_(True), pr.clone().requires_grad_(True)
    batch = PairBatch(policy_chosen=p32, policy_rejected=r32, ref_chosen=torch.zeros(3), ref_rejected=torch.zeros(3),
                      chosen_len=lc, rejected_len=lr)
    out = orpo_loss(batch, lam=0.25)
    out.sum().backward()
    p64, r64 = pc.double().requires_grad_(True), pr.double().requires_grad_(True)
    ref = _orpo_float64(p64, r64, lc.double(), lr.double(), 0.25)
    ref.sum().backward()
    close(out.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    close(p32.grad.double(), p64.grad, rtol=1e-4, atol=1e-6)
    close(r32.grad.double(), r64.grad, rtol=1e-4, atol=1e-6)


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
