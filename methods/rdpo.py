"""Robust DPO (rDPO). Chowdhury, Kini & Natarajan 2024, "Provably Robust DPO: Aligning Language Models with
Noisy Feedback", ICML 2024, arXiv:2403.00409.

docs/methods/rdpo.md: `L = [(1−ε) ℓ(βh) − ε ℓ(−βh)] / (1 − 2ε)`. The *minus* sign and
the 1/(1−2ε) make it an unbiased estimate of the clean DPO loss under label flips with rate ε:
`(1−ε) L(h) + ε L(−h) = ℓ(βh)`. Unlike cDPO (a plus sign) its gradient always pushes h up, with weight
`β[(1−ε)σ(−βh) + εσ(βh)]/(1−2ε) > 0`; the loss itself is unbounded below (≈ −εβh/(1−2ε) for large h).

Defaults: β = 0.1 (paper Table 4, also TRL's paper index); ε = 0.1 as in TRL's reproduction snippet
(paper Sec. 6). ε must be in [0, 0.5) (TRL raises otherwise).
"""
import math

import torch

from lossbench.methods.base import MethodSpec, PairBatch, require_in, require_positive
from lossbench.methods.dpo import dpo_margin, logistic_loss, reference_pair


def rdpo_loss(batch: PairBatch, *, beta: float, eps: float):
    z = beta * dpo_margin(batch)
    return ((1.0 - eps) * logistic_loss(z) - eps * logistic_loss(-z)) / (1.0 - 2.0 * eps)


def _validate(hp):
    require_positive("rdpo", hp, "beta")
    require_in("rdpo", hp, "eps", 0, 0.5)


def _reference():
    # h = (-1 + 2) - (-3 + 2.5) = 1.5, z = βh = 0.15, ℓ(0.15) = 0.620957, ℓ(-0.15) = ℓ(0.15) + 0.15.
    # [0.9·ℓ(z) − 0.1·(ℓ(z) + 0.15)] / 0.8 = [0.8·ℓ(z) − 0.015] / 0.8 = 0.620957 − 0.01875 = 0.602207.
    batch = reference_pair()
    return dict(batch=batch, beta=0.1, eps=0.1), torch.tensor([math.log1p(math.exp(-0.15)) - 0.01875])


SPEC = MethodSpec(
    name="rdpo", kind="pairwise", fn=rdpo_loss, defaults={"beta": 0.1, "eps": 0.1},
    search={"beta": ("choice", 0.03, 0.1, 0.3, 1.0), "eps": ("choice", 0.05, 0.1, 0.2, 0.3)},
    paper="Chowdhury et al. 2024, arXiv:2403.00409", url="https://arxiv.org/abs/2403.00409", docs="rdpo",
    reference=_reference, validate=_validate,
    summary="DPO debiased for label flips at rate ε (unbiased under noise), β = 0.1, ε = 0.1",
)
