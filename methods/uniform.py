"""Uniform sample weights: the ERM baseline of the LM-pretraining track.

docs/methods/uniform.md: "Uniform" is the token-weighted mean
Σ_i Σ_t ℓ_{i,t} / Σ_i n_i. With w_i = 1/N the trainer's N·Σ_i w_i·(n_i/Σ_j n_j)·ℓ_i is exactly
that mean, so every `sample_weight` method is compared against the same loss scale.
"""
import torch

from lossbench.methods.base import MethodSpec


def uniform_weights(sample_losses, *, progress=None):
    """1/N for each of the N samples, float32, on the losses' device (no gradient)."""
    n = sample_losses.shape[0]
    return torch.full((n,), 1.0 / n, dtype=torch.float32, device=sample_losses.device)


def _reference():
    # Four samples: 1/4 each, whatever their losses.
    return dict(sample_losses=torch.tensor([0.5, 9.0, 2.0, 2.0]), progress=0.3), torch.full((4,), 0.25)


SPEC = MethodSpec(
    name="uniform", kind="sample_weight", fn=uniform_weights, defaults={},
    paper="token-mean cross-entropy baseline", url="https://en.wikipedia.org/wiki/Cross-entropy", docs="uniform",
    reference=_reference, summary="plain next-token prediction: every sequence weighted 1/N (token mean)",
)
