"""z-loss: a penalty α·lse(z)² on the softmax log-normaliser, pushing log Z towards 0 for stability.

PaLM (Chowdhery et al. 2022, arXiv:2204.02311), α = 1e-4; card L8 in
docs/methods/zloss.md. Not the spherical "Z-loss" of de Brébisson & Vincent
(methods/zloss_spherical.py), a different loss with a colliding name.

The per-token lse comes from the loss layer (lossbench/lm_loss.py), so the penalty costs nothing
extra. d/dz_v of α·lse² is 2α·lse·softmax(z)_v; CE is invariant to adding c to every logit, the
z-term is not (it becomes α(lse + c)²).
"""
import torch

from lossbench.methods.base import MethodSpec, require_nonnegative


def z_loss(lse, mask, *, alpha: float):
    """Per-token α·lse² [N, T] in float32, 0 where `mask` is False (ignored tokens count nothing)."""
    return torch.where(mask.bool(), alpha * lse.float().square(), 0.0)


def _validate(hp):
    require_nonnegative("zloss", hp, "alpha")


def _reference():
    # lse = [2, −3], second token masked: 1e-4·2² = 4e-4 and 0 (by hand).
    kw = dict(lse=torch.tensor([[2.0, -3.0]]), mask=torch.tensor([[True, False]]), alpha=1e-4)
    return kw, torch.tensor([[4e-4, 0.0]])


SPEC = MethodSpec(
    name="zloss", kind="token_penalty", fn=z_loss, defaults={"alpha": 1e-4},
    search={"alpha": ("choice", 1e-5, 1e-4, 1e-3)},
    paper="Chowdhery et al. 2022 (PaLM z-loss), arXiv:2204.02311", url="https://arxiv.org/abs/2204.02311",
    docs="zloss", reference=_reference, validate=_validate,
    summary="PaLM z-loss: adds α·log²Z per token to the cross-entropy, α = 1e-4",
)
