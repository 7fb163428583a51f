"""Spherical Z-loss. de Brébisson & Vincent 2016, "The Z-loss: a shift and scale invariant classification
loss belonging to the Spherical Family", arXiv:1604.08859.

docs/methods/zloss_spherical.md. Not the PaLM "z-loss" (a log²Z penalty). Standardise the
logits, ẑ_y = (z_y - mean_k z_k) / std_k(z), then ℓ = (1/a)·softplus(a·(b - ẑ_y)). The loss depends on z
only through ẑ, so ℓ(αz + β) = ℓ(z) for α > 0; note ẑ_y ≤ sqrt(K - 1), so b above that never saturates.

Std is the population std (divide by K), as in the authors' Theano example (the factored-output-layer
code: sigma = sqrt(mean(o²) - mean(o)²)). We compute sqrt(var + ε²) with ε = 1e-6 instead of the card's
std + ε: the two differ by less than ε, and sqrt(var) has an infinite derivative at constant logits.

Defaults a = 1, b = 0 are NOT the paper's tuned values (not found; card C6 lists them as unverified).
They are the values in the authors' own example code, which trains with softplus((mean - o_c)/std),
i.e. a = 1, b = 0. Tune a ∈ {0.1, 1, 10}, b ∈ {0, 1, 5, 10} (the card's grid, plus the default b = 0).
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_positive

_EPS = 1e-6


def zloss_spherical(logits, targets, *, a: float, b: float):
    z = logits.float()
    var = z.var(-1, unbiased=False, keepdim=True)  # centred two-pass variance: no cancellation at 1e4
    z_hat = (z - z.mean(-1, keepdim=True)) / (var + _EPS**2).sqrt()
    z_hat_y = z_hat.gather(-1, targets[:, None]).squeeze(-1)
    return F.softplus(a * (b - z_hat_y)) / a


def _validate(hp):
    require_positive("zloss_spherical", hp, "a")


def _reference():
    # Card C6: z = [2, 0], y = 0, a = b = 1: mean 1, population std 1, ẑ_y = 1, softplus(0) = log 2.
    kw = dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0]), a=1.0, b=1.0)
    return kw, torch.tensor([0.693147])


SPEC = MethodSpec(
    name="zloss_spherical", kind="loss", fn=zloss_spherical,
    defaults={"a": 1.0, "b": 0.0},  # authors' example code, not tuned values from the paper (docstring)
    search={"a": ("choice", 0.1, 1.0, 10.0), "b": ("choice", 0.0, 1.0, 5.0, 10.0)},
    paper="de Brébisson & Vincent 2016, arXiv:1604.08859", url="https://arxiv.org/abs/1604.08859",
    docs="zloss_spherical", version=1, reference=_reference, validate=_validate,
    summary="softplus of the standardised true-class logit; shift and scale invariant",
)
