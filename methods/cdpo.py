"""Conservative DPO (cDPO, label smoothing). Mitchell 2023, "A note on DPO with noisy preferences &
relationship to IPO", https://ericmitchell.ai/cdpo.pdf (no arXiv id).

docs/methods/cdpo.md: `L = (1−ε) ℓ(βh) + ε ℓ(−βh)`, the cross-entropy of DPO's
preference probability σ(βh) against the soft label 1 − ε (ε = assumed label-flip rate). Unlike DPO the
per-pair optimum is finite, `βh* = log((1−ε)/ε)`. Current TRL dropped this `label_smoothing` path, so it
is implemented here from the formula.

Defaults: β = 0.1 (DPO's); ε = 0.1 is a common choice, not a value the note recommends (**unverified**).
ε must lie in [0, 0.5): at 0.5 the labels carry no information and the optimum is h = 0.
"""
import math

import torch

from lossbench.methods.base import MethodSpec, PairBatch, require_in, require_positive
from lossbench.methods.dpo import dpo_margin, logistic_loss, reference_pair


def cdpo_loss(batch: PairBatch, *, beta: float, eps: float):
    z = beta * dpo_margin(batch)
    return (1.0 - eps) * logistic_loss(z) + eps * logistic_loss(-z)


def _validate(hp):
    require_positive("cdpo", hp, "beta")
    require_in("cdpo", hp, "eps", 0, 0.5)


def _reference():
    # h = (-1 + 2) - (-3 + 2.5) = 1.5, z = βh = 0.15; ℓ(0.15) = log(1 + e^-0.15) = 0.620957 and
    # ℓ(-0.15) = ℓ(0.15) + 0.15 = 0.770957; 0.9·0.620957 + 0.1·0.770957 = 0.620957 + 0.1·0.15 = 0.635957.
    batch = reference_pair()
    return dict(batch=batch, beta=0.1, eps=0.1), torch.tensor([math.log1p(math.exp(-0.15)) + 0.015])


SPEC = MethodSpec(
    name="cdpo", kind="pairwise", fn=cdpo_loss, defaults={"beta": 0.1, "eps": 0.1},
    search={"beta": ("choice", 0.03, 0.1, 0.3, 1.0), "eps": ("choice", 0.05, 0.1, 0.2, 0.3)},
    paper="Mitchell 2023, cDPO note", url="https://ericmitchell.ai/cdpo.pdf", docs="cdpo",
    reference=_reference, validate=_validate,
    summary="DPO against soft labels 1 − ε (label smoothing), β = 0.1, ε = 0.1",
)
