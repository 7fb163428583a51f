"""DCO — Direct Coverage Optimization. Chen, Raventós, Cheng, Ganguli, Druckmann, NeurIPS 2025,
"Rethinking Fine-Tuning when Scaling Test-Time Compute: Limiting Confidence Improves Mathematical
Reasoning" (arXiv:2502.07154). docs/methods/dco.md.

ℓ_N = −log(1 − (1 − p_y)^N), the negative log of pass@N coverage; its gradient is
F(N, p_y)·∇CE with F = N(1 − p)^{N−1}·p / (1 − (1 − p)^N) ∈ (0, 1] (the authors' blog), so
confident examples stop being pushed. N = 1 is CE. Computed in float64 as
−log(−expm1(N·log1p(−p_y))) with log(1 − p_y) from the log-softmax of the other classes, which
keeps digits when p_y → 1 (where 1 − p_y rounds to 0 in float32). Here it is a calibration /
coverage probe (the track reports coverage@N for every method); the LLM claim is the LM tracks'.
"""
import math

import torch

from lossbench.methods.base import MethodSpec, require_positive


TINY = -20.0  # below this log p_y, −log(1 − p_y) = p_y to 1e-9: use log p_y directly


def dco(logits, targets, *, n: float):
    logp = torch.log_softmax(logits.double(), -1)
    logp_y = logp.gather(1, targets[:, None]).squeeze(1)
    # log(1 − p_y) as the logsumexp of the other classes: exact however close p_y is to 1
    log_miss = torch.logsumexp(logp.scatter(1, targets[:, None], float("-inf")), dim=1)
    # a = log u with u = −N·log(1 − p_y) > 0, so that ℓ = −log(1 − e^{−u})
    a = math.log(n) + torch.where(logp_y < TINY, logp_y, torch.log((-log_miss).clamp_min(1e-300)))
    u = torch.exp(a).clamp_min(1e-8)  # the clamp only touches the branch not taken (NaN-free grads)
    big = torch.where(u > math.log(2), -torch.log1p(-torch.exp(-u)), -torch.log(-torch.expm1(-u)))
    return torch.where(a < TINY, -a, big).float()  # u → 0: 1 − e^{−u} = u, ℓ = −log u


def _validate(hp):
    require_positive("dco", hp, "n")


def _reference():
    # Card C10: z = [2, 0], y 0: N = 4 → −log(1 − 0.119203^4) = 2.01926e−4
    return dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0]), n=4.0), torch.tensor([2.01926e-4])


SPEC = MethodSpec(
    name="dco", kind="loss", fn=dco, defaults={"n": 4.0}, search={"n": ("choice", 1.0, 4.0, 16.0, 64.0)},
    paper="Chen et al. 2025, arXiv:2502.07154", url="https://arxiv.org/abs/2502.07154", docs="dco",
    reference=_reference, validate=_validate,
    summary="negative log pass@N coverage −log(1 − (1 − p_y)^N): stops pushing confident examples",
)
