"""ℓ∞ PGD (Madry et al. 2018) for adversarial training and for the robust-accuracy metric.

Card P3 "adversarial extras": PGD-20, ε = 8/255, step 2/255 on CIFAR pixels in [0, 1]. The attack
works on the trainer's raw inputs (pixels in [0, 1] for images, the stored features otherwise),
before normalisation, so ε means the same thing for every model. A protocol's `attack` block:

    attack: {eps: 0.0314, step_size: 0.00784, steps: 5, eval_steps: 20, random_start: true}

`steps` is the training attack (adversarial methods only), `eval_steps` the one every method's
test robust accuracy is measured under.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pgd_attack(logits_fn, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float, steps: int,
               random_start: bool = True, gen: torch.Generator | None = None,
               bounds: tuple[float, float] | None = None) -> torch.Tensor:
    """Adversarial inputs within ‖δ‖∞ ≤ eps of `x` that raise the CE of `logits_fn` at labels `y`.

    `steps` signed-gradient ascent steps of `step_size`, each projected back onto the ε-ball (and
    onto `bounds`, e.g. (0, 1) for pixels); a uniform random start in the ball when `random_start`
    (drawn from `gen`, never the global RNG). Returns a detached tensor; the caller decides the
    model's mode (eval, so BatchNorm statistics are not updated by attack passes).
    """
    x = x.detach()
    delta = torch.zeros_like(x)
    if random_start and eps > 0:
        delta = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    x_adv = _project(x + delta, x, eps, bounds)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(logits_fn(x_adv).float(), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, eps, bounds)
    return x_adv.detach()


def _project(x_adv, x, eps, bounds):
    x_adv = torch.max(torch.min(x_adv, x + eps), x - eps)
    return x_adv.clamp(*bounds) if bounds is not None else x_adv
