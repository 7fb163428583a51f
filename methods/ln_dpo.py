"""LN-DPO: DPO on length-normalised log-ratios. Ahrabian et al. 2024, "The Hitchhiker's Guide to Human
Alignment with *PO", arXiv:2407.15229 (published as "A Practical Analysis of Human Alignment with *PO",
Findings of NAACL 2025).

docs/methods/ln_dpo.md: `L = ℓ(β[Δ(y_w)/|y_w| − Δ(y_l)/|y_l|])` (TRL's
`sigmoid_norm`). The per-token helpers below are shared by the other length-normalised losses
(IPO, SimPO, RPO, ORPO).

β default: dividing by |y| puts the margin on a per-token scale, so DPO's β = 0.1 (set for sums over
the response) would leave the loss nearly flat here. A sequence-level β spread over |y| ≈ 10 tokens
(SynthPref responses are at most 16) is a per-token β ≈ 1, and SimPO, also on per-token averages, uses
β = 2–2.5. We default to β = 1.0; the paper's own β grid could not be read here (**unverified**).
"""
import math

import torch

from lossbench.methods.base import MethodSpec, PairBatch, require_positive
from lossbench.methods.dpo import logistic_loss, normalised_margin, reference_pair


def ln_dpo_loss(batch: PairBatch, *, beta: float):
    return logistic_loss(beta * normalised_margin(batch))


def _validate(hp):
    require_positive("ln_dpo", hp, "beta")


def _reference():
    # Δ(y_w) = -1 - (-2) = 1 over 4 tokens = 0.25; Δ(y_l) = -3 - (-2.5) = -0.5 over 5 tokens = -0.1;
    # h̄ = 0.35, β = 1: log(1 + e^-0.35) = log(1.704688) = 0.533382.
    batch = reference_pair()
    return dict(batch=batch, beta=1.0), torch.tensor([math.log1p(math.exp(-0.35))])


SPEC = MethodSpec(
    name="ln_dpo", kind="pairwise", fn=ln_dpo_loss, defaults={"beta": 1.0},
    search={"beta": ("choice", 0.5, 1.0, 2.0, 5.0)},
    paper="Ahrabian et al. 2024, arXiv:2407.15229", url="https://arxiv.org/abs/2407.15229", docs="ln_dpo",
    reference=_reference, validate=_validate,
    summary="DPO on per-token (length-normalised) log-ratios, β = 1 on the per-token scale",
)
