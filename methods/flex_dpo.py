"""Flex-DPO from "3D-Properties: Identifying Challenges in DPO and Charting a Path Forward", Yan, Miao
et al., ICLR 2025, arXiv:2406.07327.

docs/methods/flex_dpo.md: `L = ℓ(β⁺ Δ(y_w) − β⁻ Δ(y_l))`, separate temperatures for the
chosen and rejected log-ratios. The paper's diagnosis: as π(y_l) → 0 the rejected gradient dominates and
the chosen one vanishes; a slightly smaller β⁻ damps the push on y_l. The exact form was reconstructed
from OpenReview reviews, not Sec. 4.3 itself (**unverified**). The companion SFT-augmented DPO is RPO (M6).

Defaults: the paper's values are **unverified**; β⁺ = 0.1 (DPO's) and β⁻ = 0.08, the middle of the card's
grid β⁻ ∈ {0.06, 0.08, 0.1} (reviewers: the best β⁻ was only ~0.02 below β⁺).
"""
import math

import torch

from lossbench.methods.base import MethodSpec, PairBatch, require_positive
from lossbench.methods.dpo import log_ratios, logistic_loss, reference_pair


def flex_dpo_loss(batch: PairBatch, *, beta_chosen: float, beta_rejected: float):
    chosen, rejected = log_ratios(batch)
    return logistic_loss(beta_chosen * chosen - beta_rejected * rejected)


def _validate(hp):
    require_positive("flex_dpo", hp, "beta_chosen", "beta_rejected")


def _reference():
    # Δ(y_w) = -1 - (-2) = 1, Δ(y_l) = -3 - (-2.5) = -0.5; z = 0.1·1 - 0.08·(-0.5) = 0.14;
    # ℓ(0.14) = log(1 + e^-0.14) = log(1.869358) = 0.625595.
    batch = reference_pair()
    return dict(batch=batch, beta_chosen=0.1, beta_rejected=0.08), torch.tensor([math.log1p(math.exp(-0.14))])


SPEC = MethodSpec(
    name="flex_dpo", kind="pairwise", fn=flex_dpo_loss, defaults={"beta_chosen": 0.1, "beta_rejected": 0.08},
    search={"beta_rejected": ("choice", 0.06, 0.08, 0.1)},
    paper="Yan et al. 2025, arXiv:2406.07327", url="https://arxiv.org/abs/2406.07327", docs="flex_dpo",
    reference=_reference, validate=_validate,
    summary="DPO with separate temperatures for chosen (β⁺ = 0.1) and rejected (β⁻ = 0.08) log-ratios",
)
