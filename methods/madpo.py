"""Margin-Adaptive DPO (MADPO). Rho 2025, "Margin Adaptive DPO: Leveraging Reward Model for Granular
Control in Preference Optimization", arXiv:2510.05342.

docs/methods/madpo.md (official code): with a reward model's detached margin
`m = r_φ(x,y_w) − r_φ(x,y_l)`,
  `c(|m|) = c_min + (c_max − c_min) / (1 + k·exp(λ(|m| − τ)))`, `k = (c_max − 1)/(1 − c_min)`,
  `w = σ(c·m)/σ(m)` if `m > −τ`, else `w = 1`;   `L = w · ℓ(βh)`.
`c(τ) = 1`, so w is continuous at |m| = τ; hard pairs (0 < m < τ) get w > 1, easy ones (m > τ) w < 1,
and pairs the RM mildly disputes (−τ < m < 0) w < 1. The weight is detached: it rescales, never
redirects, DPO's gradient.

Defaults (author's notebook): β = 0.1, c_max = 2, c_min = 1/c_max = 0.5, λ = 1, τ = log(0.999/0.001) ≈ 6.9.
"""
import dataclasses
import math

import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, PairBatch, require_positive
from lossbench.methods.dpo import dpo_loss, reference_pair

TAU = math.log(0.999 / 0.001)


def margin_scale(abs_margin, *, c_max: float, c_min: float, lam: float, tau: float):
    """c(|m|). Written with 1/(1 + k·e^u) = σ(−u − log k), which is the card's formula but stays finite
    when e^u overflows or k is 0 or ∞ (c_max = 1 or c_min = 1: c is then the constant 1)."""
    if c_max == c_min:
        return torch.full_like(abs_margin, c_min)
    log_k = ((math.log(c_max - 1) if c_max > 1 else -math.inf)
             - (math.log(1 - c_min) if c_min < 1 else -math.inf))
    return c_min + (c_max - c_min) * torch.sigmoid(-lam * (abs_margin - tau) - log_k)


def adaptive_weight(rm_margin, *, c_max: float, c_min: float, lam: float, tau: float):
    """w(m), detached. The ratio σ(c·m)/σ(m) is taken in log space so tiny σ(m) cannot underflow."""
    m = rm_margin.detach().float()
    c = margin_scale(m.abs(), c_max=c_max, c_min=c_min, lam=lam, tau=tau)
    w = torch.exp(F.logsigmoid(c * m) - F.logsigmoid(m))
    return torch.where(m > -tau, w, torch.ones_like(w))


def madpo_loss(batch: PairBatch, *, beta: float, c_max: float, c_min: float, lam: float, tau: float):
    w = adaptive_weight(batch.rm_margin, c_max=c_max, c_min=c_min, lam=lam, tau=tau)
    return w * dpo_loss(batch, beta=beta)


def _validate(hp):
    require_positive("madpo", hp, "beta", "lam", "tau")
    if not 0 < hp["c_min"] <= 1 <= hp["c_max"]:
        raise ValueError(f"madpo: need 0 < c_min <= 1 <= c_max (c(τ) = 1), got c_min={hp['c_min']}, "
                         f"c_max={hp['c_max']}")


def _reference():
    # τ = log 4, m = log 2: |m| - τ = -log 2, k = (2 - 1)/(1 - 0.5) = 2, so k·e^(λ(|m|-τ)) = 2·½ = 1 and
    # c = 0.5 + 1.5/2 = 1.25. w = σ(1.25·log 2)/σ(log 2) = (2^1.25/(1 + 2^1.25))/(2/3)
    #   = (2.378414/3.378414)·1.5 = 1.056005. DPO part (h = 1.5, β = 0.1): ℓ(0.15) = 0.620957.
    # Loss 1.056005 · 0.620957 = 0.655734.
    batch = dataclasses.replace(reference_pair(), rm_margin=torch.tensor([math.log(2.0)]))
    a = 2.0 ** 1.25
    w = a / (1.0 + a) * 1.5
    return (dict(batch=batch, beta=0.1, c_max=2.0, c_min=0.5, lam=1.0, tau=math.log(4.0)),
            torch.tensor([w * math.log1p(math.exp(-0.15))]))


SPEC = MethodSpec(
    name="madpo", kind="pairwise", fn=madpo_loss,
    defaults={"beta": 0.1, "c_max": 2.0, "c_min": 0.5, "lam": 1.0, "tau": TAU},
    search={"beta": ("choice", 0.03, 0.1, 0.3, 1.0), "c_max": ("choice", 1.5, 2.0, 3.0)},
    paper="Rho 2025, arXiv:2510.05342", url="https://arxiv.org/abs/2510.05342", docs="madpo",
    reference=_reference, validate=_validate, needs=("rm_margin",),
    summary="DPO with a per-pair weight from a reward model's margin: hard pairs up, easy pairs down",
)
