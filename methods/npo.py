"""Negative Preference Optimization (unlearning). Zhang, Lin, Bai, Mei 2024, "Negative Preference
Optimization: From Catastrophic Collapse to Effective Unlearning", arXiv:2404.05868.

docs/methods/npo.md. On forget-set responses only (no chosen response):

    L_NPO = (2/β) log(1 + (π_θ(y|x)/π_ref(y|x))^β) = −(2/β) log σ(−β Δ(y)) = (2/β) softplus(β Δ(y))

∂L/∂ log π_θ(y|x) = 2σ(βΔ): 1 at initialisation (the gradient-ascent gradient, whose loss is
log π_θ(y|x)) and → 0 as Δ → −∞, so unlearning slows down instead of collapsing. The official code
computes the same with summed-token NLLs, `−(2/β) log σ(β (NLL_θ − NLL_ref))`.

Only the forget term lives here. NPO-RT (`npo_grad_diff` in the official code: + NLL_θ on a retain
set) and NPO-KL (+ KL to the reference on retain data) add a retain-set term with its own batch,
which is a trainer-level addition, not a separate spec.
"""
import math

import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_positive


def npo_loss(policy, ref, *, beta: float):
    return (2.0 / beta) * F.softplus(beta * (policy.float() - ref.float()))


def _validate(hp):
    require_positive("npo", hp, "beta")


def _reference():
    # Δ = -12 - (-10) = -2; β = 0.1: βΔ = -0.2; softplus(-0.2) = log(1 + e^-0.2) = log(1.8187308)
    # = 0.5981389; times 2/β = 20 -> 11.962777.
    kwargs = dict(policy=torch.tensor([-12.0]), ref=torch.tensor([-10.0]), beta=0.1)
    return kwargs, torch.tensor([20 * math.log1p(math.exp(-0.2))])


SPEC = MethodSpec(
    name="npo", kind="unlearning", fn=npo_loss,
    defaults={"beta": 0.1},  # official config/forget.yaml
    search={"beta": ("choice", 0.05, 0.1, 0.3, 1.0)},
    paper="Zhang et al. 2024, arXiv:2404.05868", url="https://arxiv.org/abs/2404.05868", docs="npo",
    version=1, reference=_reference, validate=_validate,
    summary="unlearning: (2/β)·softplus(β log π_θ/π_ref) on forget-set responses, β = 0.1",
)
