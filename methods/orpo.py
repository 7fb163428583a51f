"""ORPO: Monolithic Preference Optimization without Reference Model. Hong, Lee & Thorne 2024,
arXiv:2403.07691.

docs/methods/orpo.md: with `p(y) = exp(ℓ̄_θ(y))` (average log-prob) and
`odds = p/(1 − p)`, `L = NLL_avg(y_w) + λ·ℓ(log odds(y_w) − log odds(y_l))`. No reference model (the
batch's reference log-probs are ignored); the NLL term makes it SFT and alignment in one stage.

`log odds = ℓ̄ − log(1 − e^ℓ̄)` diverges as ℓ̄ → 0⁻ (p → 1). log(1 − e^ℓ̄) is computed stably (below), so
it is finite for every ℓ̄ < 0 that float32 holds; only ℓ̄ = 0 (p = 1 exactly) and ℓ̄ > 0 (not a log-prob)
are capped, at −2^−126 (the smallest normal float32: log odds ≈ 87.3, no gradient through the cap), in the
odds term only; the NLL keeps its gradient. A rejected response the policy makes near-certain (ℓ̄_l → 0⁻,
the preference most violated) therefore gets the formula's large gradient ≈ λ/(|ℓ̄_l|·|y_l|). (Until
issue 16 the cap was ℓ̄ ≤ −1e−6, which zeroed exactly that gradient and changed the loss.) Default
λ = 0.1 (TRL's `beta`, the paper's value per TRL's index).
"""
import math

import torch

from lossbench.methods.base import MethodSpec, PairBatch, require_nonnegative
from lossbench.methods.dpo import logistic_loss, per_token, reference_pair

MAX_AVG_LOGP = -torch.finfo(torch.float32).tiny  # caps only ℓ̄ >= 0 (-2^-126): log odds <= ~87.3


def log_odds(avg_logp):
    """log(p/(1 − p)) for p = exp(ℓ̄). log(1 − e^x) uses log(−expm1(x)) near 0 and log1p(−e^x) below
    −log 2, each where it keeps full precision (Mächler 2012); both are finite for ℓ̄ < 0, and ℓ̄ ≥ 0 is
    capped at MAX_AVG_LOGP (module docstring)."""
    x = avg_logp.float().clamp_max(MAX_AVG_LOGP)
    near0 = x > -math.log(2.0)
    # each branch sees only its own inputs (-1 elsewhere), so the unused one has no inf/NaN gradient
    safe = torch.full_like(x, -1.0)
    log1mexp = torch.where(near0, torch.log(-torch.expm1(torch.where(near0, x, safe))),
                           torch.log1p(-torch.exp(torch.where(near0, safe, x))))
    return x - log1mexp


def orpo_loss(batch: PairBatch, *, lam: float):
    avg_w = per_token(batch.policy_chosen, batch.chosen_len)
    avg_l = per_token(batch.policy_rejected, batch.rejected_len)
    return -avg_w + lam * logistic_loss(log_odds(avg_w) - log_odds(avg_l))


def _validate(hp):
    require_nonnegative("orpo", hp, "lam")


def _reference():
    # ℓ̄(y_w) = -1/4 = -0.25, ℓ̄(y_l) = -3/5 = -0.6. log odds(-0.25) = -0.25 - log(1 - e^-0.25)
    # = -0.25 - log(0.221199) = 1.258692; log odds(-0.6) = -0.6 - log(0.451188) = 0.195870.
    # ℓ(1.062821) = log(1 + e^-1.062821) = 0.296751; 0.25 + 0.1·0.296751 = 0.279675.
    batch = reference_pair()
    return dict(batch=batch, lam=0.1), torch.tensor([0.279675])


SPEC = MethodSpec(
    name="orpo", kind="pairwise", fn=orpo_loss, defaults={"lam": 0.1},
    search={"lam": ("choice", 0.05, 0.1, 0.25, 0.5)},
    paper="Hong et al. 2024, arXiv:2403.07691", url="https://arxiv.org/abs/2403.07691", docs="orpo", version=2,
    reference=_reference, validate=_validate,
    summary="reference-free: token-average NLL of y_w plus λ·logistic loss on the log odds ratio, λ = 0.1",
)
