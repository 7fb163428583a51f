"""KTO: Model Alignment as Prospect Theoretic Optimization. Ethayarajh et al. 2024, arXiv:2402.01306.

docs/methods/kto.md. Unpaired: each example is one response marked desirable or not.
With `r = Δ(y)` and the reference point `z0 = max(0, KL estimate)` (detached, so it only shifts the
threshold),
  desirable:   `λ_D (1 − σ(β(r − z0)))`,   undesirable:   `λ_U (1 − σ(β(z0 − r)))`.
The trainer supplies `kl_ref`, the batch estimate of KL(π_θ‖π_ref) from mismatched (x', y) pairs.

Defaults (TRL `KTOConfig`): β = 0.1, λ_D = λ_U = 1. The paper's advice on balancing λ_D·n_D against
λ_U·n_U for imbalanced data is **unverified** here; set λ per track if the classes are imbalanced.
"""
import math

import torch

from lossbench.methods.base import MethodSpec, require_positive


def kto_loss(policy, ref, desirable, kl_ref, *, beta: float, lambda_d: float, lambda_u: float):
    r = policy.float() - ref.float()
    z0 = torch.as_tensor(kl_ref, dtype=torch.float32, device=r.device).detach().clamp_min(0.0)
    # 1 − σ(x) written as σ(−x): no cancellation when σ(x) ≈ 1.
    return torch.where(desirable.bool(), lambda_d * torch.sigmoid(beta * (z0 - r)),
                       lambda_u * torch.sigmoid(beta * (r - z0)))


def _validate(hp):
    require_positive("kto", hp, "beta", "lambda_d", "lambda_u")


def _reference():
    # r = [-1 - (-2), -3 - (-2.5)] = [1, -0.5], z0 = 0.2, β = 0.1, λ_D = λ_U = 1.
    # desirable: 1 - σ(0.1·(1 - 0.2)) = σ(-0.08) = 0.480011; undesirable: 1 - σ(0.1·(0.2 + 0.5)) = σ(-0.07) = 0.482507.
    kwargs = dict(policy=torch.tensor([-1.0, -3.0]), ref=torch.tensor([-2.0, -2.5]),
                  desirable=torch.tensor([True, False]), kl_ref=torch.tensor(0.2),
                  beta=0.1, lambda_d=1.0, lambda_u=1.0)
    return kwargs, torch.tensor([1 / (1 + math.exp(0.08)), 1 / (1 + math.exp(0.07))])


SPEC = MethodSpec(
    name="kto", kind="unpaired", fn=kto_loss, defaults={"beta": 0.1, "lambda_d": 1.0, "lambda_u": 1.0},
    search={"beta": ("choice", 0.03, 0.1, 0.3, 1.0)},
    paper="Ethayarajh et al. 2024, arXiv:2402.01306", url="https://arxiv.org/abs/2402.01306", docs="kto",
    reference=_reference, validate=_validate,
    summary="unpaired sigmoid value of the log-ratio against a KL reference point, β = 0.1, λ_D = λ_U = 1",
)
