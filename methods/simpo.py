"""SimPO: Simple Preference Optimization with a Reference-Free Reward. Meng, Xia & Chen 2024,
arXiv:2405.14734.

docs/methods/simpo.md: `L = ℓ(β ℓ̄_θ(y_w) − β ℓ̄_θ(y_l) − γ)` with average log-probs
`ℓ̄ = ℓ_θ(y)/|y|` and no reference model (the reference log-probs in the batch are ignored). γ is
parametrised as `γ = β·r`, r = `gamma_beta_ratio`, as in the official repo since its later update.

Defaults: β = 2.0 (repo code default and the preprint's 2.0/2.5); r = 0.5, the README's advice ("using 0.5
as a starting point for gamma_beta_ratio and grid searching between 0 and 1") — the repo *code* default
is r = 0.25, and the released models used 0.1–0.8. β is on the per-token scale, not DPO's.
"""
import math

import torch

from lossbench.methods.base import MethodSpec, PairBatch, require_nonnegative, require_positive
from lossbench.methods.dpo import logistic_loss, per_token, reference_pair


def simpo_loss(batch: PairBatch, *, beta: float, gamma_beta_ratio: float):
    margin = per_token(batch.policy_chosen, batch.chosen_len) - per_token(batch.policy_rejected, batch.rejected_len)
    return logistic_loss(beta * (margin - gamma_beta_ratio))  # β(ℓ̄_w − ℓ̄_l) − γ with γ = β·r


def _validate(hp):
    require_positive("simpo", hp, "beta")
    require_nonnegative("simpo", hp, "gamma_beta_ratio")


def _reference():
    # ℓ̄(y_w) = -1/4 = -0.25, ℓ̄(y_l) = -3/5 = -0.6 (reference log-probs unused); β = 2, r = 0.5 (γ = 1):
    # z = 2·0.35 - 1 = -0.3, ℓ(-0.3) = log(1 + e^0.3) = log(2.349859) = 0.854355.
    batch = reference_pair()
    return dict(batch=batch, beta=2.0, gamma_beta_ratio=0.5), torch.tensor([math.log1p(math.exp(0.3))])


SPEC = MethodSpec(
    name="simpo", kind="pairwise", fn=simpo_loss, defaults={"beta": 2.0, "gamma_beta_ratio": 0.5},
    search={"beta": ("choice", 2.0, 2.5, 10.0), "gamma_beta_ratio": ("uniform", 0.0, 1.0)},
    paper="Meng et al. 2024, arXiv:2405.14734", url="https://arxiv.org/abs/2405.14734", docs="simpo",
    reference=_reference, validate=_validate,
    summary="reference-free logistic loss on average log-probs with target margin γ = β·0.5, β = 2",
)
