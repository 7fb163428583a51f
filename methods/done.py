"""DONE, weights-only variant. Sow et al., ICLR 2024, "Doubly Robust Instance-Reweighted
Adversarial Training" (OpenReview OF5x1dzWSS). docs/methods/done.md.

The paper's instance weights solve max_{w ∈ Δ} Σ_i w_i ℓ_i^adv − r·KL(w ‖ uniform), whose closed
form is w ∝ exp(ℓ^adv / r): a softmax of the adversarial losses at temperature r. This module
uses those weights (detached, normalised over the batch) inside plain PGD-AT: loss_i = B·w_i·ℓ_i,
so the batch mean is Σ_i w_i ℓ_i and r → ∞ is PGD-AT exactly. It is **not** the full algorithm:
the paper's compositional implicit differentiation (a running estimate of the mean-exp term and
implicit gradients through the log-barrier attack) is not implemented (its code was not found).
"""
import torch

from lossbench.methods.base import MethodSpec, require_positive
from lossbench.methods.erm import cross_entropy


def dro_weights(losses, *, r: float):
    """KL-regularised DRO weights softmax(ℓ / r) over the batch, detached, summing to 1."""
    return torch.softmax(losses.detach().double() / r, dim=0).float()


def done(logits, targets, *, r: float):
    ce = cross_entropy(logits, targets)
    return len(ce) * dro_weights(ce, r=r) * ce


def _validate(hp):
    require_positive("done", hp, "r")


def _reference():
    # z = [[2, 0], [0, 0]], y = [0, 0]: ℓ = [0.126928, 0.693147]; r = 1: w = softmax(ℓ) =
    # [0.362110, 0.637890] (float64); loss = 2·w·ℓ = [0.0919237, 0.8843037]
    return (dict(logits=torch.tensor([[2.0, 0.0], [0.0, 0.0]]), targets=torch.tensor([0, 0]), r=1.0),
            torch.tensor([0.0919237, 0.8843037]))


SPEC = MethodSpec(
    name="done", kind="adversarial", fn=done, defaults={"r": 5.0}, search={"r": ("log_uniform", 1.0, 10.0)},
    paper="Sow et al. 2024, ICLR (OpenReview OF5x1dzWSS)", url="https://openreview.net/forum?id=OF5x1dzWSS",
    docs="done", reference=_reference, validate=_validate,
    summary="PGD-AT with KL-DRO instance weights softmax(ℓ_adv / r) (weights-only DONE, no CID)",
)
