"""Weight Compander (Cakaj, Mehnert & Yang, "Weight Compander: A Simple Weight Reparameterization for
Regularization", IJCNN 2023, arXiv:2306.16993), card O3, as an optimizer.

The paper reparameterises every weight matrix and kernel as w = Ψ(v) = a·arctan(v/b), with a, b > 0
shared by the whole network (biases and normalisation parameters stay plain); it initialises
v = Ψ⁻¹(w₀) = b·tan(w₀/a), so the network starts at its ordinary initialisation; it applies weight
decay to w = Ψ(v), not to v; and it trains v with SGD and momentum by plain autograd (its main
setting). Ψ'(v) = a·b/(b² + v²) is largest at v = 0 (a/b): small weights move fast and are pushed
away from zero, large ones are compressed (|w| < aπ/2 always).

Because v ↦ w is a bijection, the same training runs on the model's ordinary weights: this optimizer
keeps v in its state, forms autograd's gradient of v by the chain rule, g_v = Ψ'(v)·(∂L/∂w + λ·w)
(the penalty λ/2·‖Ψ(v)‖²), takes torch's SGD step (momentum, Nesterov, no dampening) on v and writes
w = Ψ(v) back. Models and trainers stay unchanged; tests/harness/test_optim.py checks the steps
against an explicitly reparameterised model (torch.nn.utils.parametrize). Parameters with fewer
than 2 dimensions take torch's plain SGD step with coupled weight decay.

Defaults a = 1.0, b = 0.6: the paper's choice for ResNet18 and ResNet50 on CIFAR-10 (its Table I; it
picks (a, b) per network from a grid over {0.5, 0.6, ..., 1.0}). Not implemented: the paper's Adam
variant (Powerpropagation's rescaled adaptive step) and its learnable (a, b).
"""
from __future__ import annotations

import math

import torch


def compand(v: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Ψ(v) = a·arctan(v/b)."""
    return a * torch.atan(v / b)


def expand(w: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Ψ⁻¹(w) = b·tan(w/a), defined for |w| < aπ/2."""
    return b * torch.tan(w / a)


def compand_slope(v: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Ψ'(v) = a·b/(b² + v²)."""
    return a * b / (b * b + v * v)


class WeightCompander(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 a: float = 1.0, b: float = 0.6):
        if not (lr > 0 and a > 0 and b > 0 and momentum >= 0 and weight_decay >= 0):
            raise ValueError(f"weight_compander: need lr, a, b > 0 and momentum, weight_decay >= 0; got lr {lr}, "
                             f"a {a}, b {b}, momentum {momentum}, weight_decay {weight_decay}")
        if nesterov and momentum == 0:
            raise ValueError("weight_compander: nesterov needs momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, a=a, b=b))

    def _raw(self, p: torch.Tensor, a: float, b: float) -> torch.Tensor:
        """v of a companded weight, created from w on its first step."""
        state = self.state[p]
        if "v" not in state:
            if (p.abs() >= a * math.pi / 2).any():
                raise ValueError(f"weight_compander: a weight of magnitude {p.abs().max().item():.3g} has no "
                                 f"v with a·arctan(v/b) equal to it (|w| must be < aπ/2 = {a * math.pi / 2:.3g}); "
                                 "raise a")
            state["v"] = expand(p.detach(), a, b)
        return state["v"]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom, wd, a, b = (group[k] for k in ("lr", "momentum", "weight_decay", "a", "b"))
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=wd) if wd else p.grad  # decay on w = Ψ(v), as the paper
                companded = p.dim() >= 2
                if companded:
                    target = self._raw(p, a, b)
                    grad = grad * compand_slope(target, a, b)  # the chain rule: autograd's gradient of v
                else:
                    target = p
                if mom:
                    buf = self.state[p].get("momentum_buffer")
                    if buf is None:
                        buf = self.state[p]["momentum_buffer"] = grad.clone()
                    else:
                        buf.mul_(mom).add_(grad)
                    grad = grad.add(buf, alpha=mom) if group["nesterov"] else buf
                target.add_(grad, alpha=-lr)
                if companded:
                    p.copy_(compand(target, a, b))
        return loss
