"""StableMax cross-entropy. Prieto et al., ICLR 2025, "Grokking at the Edge of Numerical Stability"
(arXiv:2501.04697), §5 and Proposition 1; docs/methods/stablemax.md.

    s(x) = x + 1 (x ≥ 0),  1 / (1 − x) (x < 0);   StableMax(z)_i = s(z_i) / Σ_j s(z_j)
    ℓ(z, y) = −log StableMax(z)_y

s is positive, continuous with a continuous first derivative at 0 (value 1, slope 1 on both sides)
and grows only linearly, so pushing a probability to 1 needs enormous logits and the loss reaches
exactly 0 only at absurd scales (float64: gap 2·10⁹ vs ≈ 37 for softmax). Equivalently
StableMax(z) = softmax(g(z)) with g(x) = log s(x) = sign(x)·log1p(|x|) (Prop. 1). Unlike softmax
it is not shift-invariant. Predictions still use argmax z (s is increasing).

Computed as in the reference code: the ratio s_y / Σ s in float64 (`precision`), the loss
returned in float32 for the trainer. The reference adds 1e-30 to 1 − x; that is a no-op here
because 1 − x ≥ 1 on the branch that uses it. The 1/(1 − x) branch sees x ≤ 0 only (clamp), so
at x = 1 the branch torch.where discards is not an inf whose zero gradient would turn into NaN.

Card defaults: float64 loss and AdamW β₂ = 0.999 (Fig. 1/4 runs), the betas as an optimiser
hyperparameter so a track can still run StableMax under the shared β₂.
"""
import torch

from lossbench.methods.base import MethodSpec, require_choice
from lossbench.methods.softmax_ce import PAPER, PRECISIONS, URL


def s(x):
    """The StableMax activation, elementwise."""
    return torch.where(x < 0, 1.0 / (1.0 - x.clamp(max=0)), x + 1.0)


def stablemax(logits, dim: int = -1):
    """StableMax probabilities along `dim`."""
    sx = s(logits)
    return sx / sx.sum(dim=dim, keepdim=True)


def stablemax_ce(logits, targets, *, precision: str = "float64"):
    """Per-example `−log StableMax(z)_y`, evaluated in `precision`, returned in float32."""
    p = stablemax(logits.to(PRECISIONS[precision]))
    return -torch.log(p.gather(-1, targets[:, None]).squeeze(-1)).float()


def _validate(hp):
    require_choice("stablemax", hp, "precision", tuple(PRECISIONS))


def _reference():
    # Card G2: z = [2, 0, −1] → s = [3, 1, 1/2], sum 9/2, StableMax = [2/3, 2/9, 1/9];
    # losses −log(2/3) = 0.405465 (y = 0) and log 9 = 2.197225 (y = 2).
    logits = torch.tensor([[2.0, 0.0, -1.0], [2.0, 0.0, -1.0]])
    return dict(logits=logits, targets=torch.tensor([0, 2])), torch.tensor([0.405465, 2.197225])


SPEC = MethodSpec(
    name="stablemax", kind="loss", fn=stablemax_ce,
    defaults={"precision": "float64", "betas": [0.9, 0.999]}, optimizer_hparams=("betas",),
    paper=PAPER, url=URL, docs="stablemax", reference=_reference, validate=_validate,
    summary="StableMax cross-entropy: s(x) = x+1 / 1/(1−x) in place of exp, float64 (no Softmax Collapse)",
)
