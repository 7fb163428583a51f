"""⊥Grad: project out the gradient's component along the weights before the optimiser step.
Prieto et al., ICLR 2025, "Grokking at the Edge of Numerical Stability" (arXiv:2501.04697), §6,
Eq. 12 and Proposition 2 (the orthogonal part is still a descent direction); card G3.

    g⊥ = g − (⟨θ, g⟩ / (⟨θ, θ⟩ + 1e−30)) θ,   then   g⊥ ← g⊥ · ‖g‖ / (‖g⊥‖ + 1e−30)

For a positively homogeneous net (the bias-free ReLU MLP) the component along θ only scales the
logits — naïve loss minimisation, which drives Softmax Collapse — so removing it keeps the update
on what changes predictions. The base optimiser is the protocol's (AdamW: ⊥AdamW; SGD: ⊥SGD)
with its betas/eps passed explicitly: the reference script's wrapper silently stepped an inner
AdamW with library defaults (card §1.4, "reproduction trap"); ours steps exactly what the protocol
says. Weight decay is left to the base optimiser (0 in the card's runs).

`orthograd` projects per parameter tensor, as the reference `orthograd.py` does;
`orthograd_global` projects the concatenation of all parameters (the paper's θ as one vector),
a separate spec because the two differ whenever the layers' cosines differ. The projection is
computed in float64 and cast back, so the result is orthogonal to ~1e-16 rather than ~1e-7.

`orthograd_released` is `orthograd` stepped the way the paper's released runs were (its Fig. 1 and
Fig. 6 ⊥AdamW curves): the official `grokking_experiments.py` builds the `OrthoGrad` wrapper with only
`lr` and `weight_decay` (the `betas=(0.9, beta2)` it computes for AdamW is never passed on) and then
loads the base AdamW's state dict into the wrapper, whose param groups are not the inner AdamW's; the
inner AdamW that steps keeps torch's defaults, β = (0.9, 0.999) and ε = 1e−8, instead of the β₂ = 0.99
and ε = 1e−25 of the script's flags (card §1.4; read in the official code). This spec sets those two
as `optimizer_hparams`, overriding the protocol's AdamW betas/eps; lr and weight decay stay the
protocol's, as the wrapper passed them. AdamW protocols only (an SGD protocol refuses it: ⊥SGD got its
lr and momentum 0.8 passed correctly). `orthograd` keeps the protocol's betas/eps (the paper's stated
settings).
"""
import torch

from lossbench.methods.base import MethodSpec
from lossbench.methods.softmax_ce import PAPER, URL

EPS = 1e-30  # the reference's guard for θ = 0 and g⊥ = 0


def _project(w, g, rescale: bool):
    """g⊥ of flat float64 vectors w, g (rescaled to ‖g‖ when `rescale`)."""
    out = g - (torch.dot(w, g) / (torch.dot(w, w) + EPS)) * w
    if rescale:
        out = out * (g.norm() / (out.norm() + EPS))
    return out


def orthograd(params, grads, *, rescale: bool = True):
    """⊥Grad per parameter tensor: a tuple of new gradients, one per (param, grad)."""
    return tuple(_project(p.detach().double().flatten(), g.double().flatten(), rescale).view_as(g).to(g.dtype)
                 for p, g in zip(params, grads))


def orthograd_global(params, grads, *, rescale: bool = True):
    """⊥Grad over the concatenation of every parameter: one projection, one rescale."""
    flat = _project(torch.cat([p.detach().double().flatten() for p in params]),
                    torch.cat([g.double().flatten() for g in grads]), rescale)
    return tuple(part.view_as(g).to(g.dtype) for part, g in zip(flat.split([g.numel() for g in grads]), grads))


def _reference():
    # Card G3: θ = [1, 0], g = [1, 1] → g − 1·θ = [0, 1], rescaled to ‖g‖ = √2: [0, 1.414214].
    return dict(params=[torch.tensor([1.0, 0.0])], grads=[torch.tensor([1.0, 1.0])]), (torch.tensor([0.0, 1.414214]),)


def _reference_global():
    # θ = ([1], [1]), g = ([1], [0]) as two tensors; globally θ = [1, 1], g = [1, 0]:
    # ⟨θ,g⟩/⟨θ,θ⟩ = 1/2, g⊥ = [1/2, −1/2], norm 1/√2, rescaled to ‖g‖ = 1: [0.707107, −0.707107].
    # (Per tensor the first gradient would be projected to 0 and the second left at 0.)
    params, grads = [torch.tensor([1.0]), torch.tensor([1.0])], [torch.tensor([1.0]), torch.tensor([0.0])]
    return dict(params=params, grads=grads), (torch.tensor([0.707107]), torch.tensor([-0.707107]))


SPEC = MethodSpec(
    name="orthograd", kind="grad_transform", fn=orthograd, defaults={"rescale": True},
    paper=PAPER, url=URL, docs="orthograd", reference=_reference,
    summary="⊥Grad: gradient projected orthogonal to each weight tensor, rescaled to its norm (⊥AdamW under AdamW)",
)

GLOBAL = MethodSpec(
    name="orthograd_global", kind="grad_transform", fn=orthograd_global, defaults={"rescale": True},
    paper=PAPER, url=URL, docs="orthograd", reference=_reference_global,
    summary="⊥Grad over all parameters as one vector (the per-tensor reference code's global variant)",
)

RELEASED = MethodSpec(
    name="orthograd_released", kind="grad_transform", fn=orthograd,
    # the inner AdamW of the released script: torch's defaults (module docstring), lists like stablemax's betas
    defaults={"rescale": True, "betas": [0.9, 0.999], "eps": 1e-8}, optimizer_hparams=("betas", "eps"),
    paper=PAPER, url=URL, docs="orthograd", reference=_reference,
    summary="⊥Grad per tensor with the released runs' inner AdamW (β₂ 0.999, ε 1e-8, not the flags' 0.99, 1e-25)",
)
