"""FRUGAL (Zmushko et al., 2024, "FRUGAL: Memory-Efficient Optimization by Reducing State Overhead
for Scalable Training"), card O2, with the card's "random rows" subspace (block-style selection).

Each 2-D parameter (a Linear weight [out, in]) is split by rows: a fraction `density` of its rows
is state-full and updated with AdamW, whose moments exist for those rows only (state [k, in], so
optimizer memory is ∝ density); the other rows take a state-free signSGD step of lr ×
`inactive_lr_scale`. Every `update_gap` steps a new row subset is drawn from the optimizer's own
generator (seeded by `seed`, never the global RNG) and the moments and bias-correction count
restart, since moments of other rows say nothing about the new ones. Parameters that are not 2-D
(biases, norms) are always state-full AdamW. density 1 is AdamW; density 0 is signSGD on the
matrices.

Facts taken from the authors' supplementary code (hungquangbui02022003/FRUGAL, frugal/
proj_optimizer_templates.py, coordinate_projector.py, adamw.py; read, not copied): the subspace is
re-drawn when the step count before the update is a multiple of update_gap (so at step 0, T, 2T,
...); with their default reset_statistics=True the moments are zeroed AND the Adam step count goes
back to 0, so bias correction restarts after every switch (followed here); decoupled weight decay
multiplies every coordinate of a projected matrix, active or not (followed); Adam is
m/(sqrt(v)/sqrt(1-β2^t) + eps) · lr/(1-β1^t) (same); the inactive part gets −lr·inactive_lr_scale·
sign(g) (their proj_params_lr_scale, default 1, is not exposed). Departures: they pick random
*columns* by default (coord_choice="columns", k = floor(ρ·n)) and draw from the global RNG; we pick
rows (output units, the card's choice here), k = round(ρ·n), from our own seeded generator. They
project only the attention/MLP Linear weights of a transformer (not embeddings or the LM head);
here every 2-D parameter is projected, the classifier head included. So density 1 equals AdamW
only between re-selections (the reset restarts the moments every update_gap steps, as theirs does).
"""
from __future__ import annotations

import math

import torch


class Frugal(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, density=0.25,
                 update_gap=200, inactive_lr_scale=1.0, seed=0):
        if not 0.0 <= density <= 1.0:
            raise ValueError(f"frugal: density must be in [0, 1], got {density}")
        if update_gap < 1:
            raise ValueError(f"frugal: update_gap must be >= 1, got {update_gap}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, density=density,
                                      update_gap=update_gap, inactive_lr_scale=inactive_lr_scale))
        self.gen = torch.Generator().manual_seed(seed)
        self.steps = 0

    def _select(self, p, group, state):
        """Draw the state-full rows of matrix `p` and reset its moments for them."""
        rows = p.shape[0]
        k = round(group["density"] * rows)
        state["rows"] = torch.randperm(rows, generator=self.gen)[:k].sort().values.to(p.device)
        state["step"] = 0
        state["exp_avg"] = torch.zeros((k, *p.shape[1:]), dtype=p.dtype, device=p.device)
        state["exp_avg_sq"] = torch.zeros_like(state["exp_avg"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        reselect = self.steps % self.param_groups[0]["update_gap"] == 0
        self.steps += 1
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                matrix = p.dim() == 2
                if matrix and (reselect or "rows" not in state):
                    self._select(p, group, state)
                elif not matrix and not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                if wd:
                    p.mul_(1 - lr * wd)  # decoupled, as AdamW, on every coordinate
                if not matrix:
                    p.add_(self._adam(group, state, p.grad))
                    continue
                rows = state["rows"]
                active = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
                active[rows] = True
                if rows.numel():
                    p[rows] += self._adam(group, state, p.grad[rows])
                inactive = ~active
                if inactive.any():
                    p[inactive] -= lr * group["inactive_lr_scale"] * p.grad[inactive].sign()
        return loss

    @staticmethod
    def _adam(group, state, grad):
        """The AdamW step (without decay) for `grad` and the moments in `state`."""
        beta1, beta2 = group["betas"]
        state["step"] += 1
        state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bc1, bc2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
        denom = (state["exp_avg_sq"] / bc2).sqrt().add_(group["eps"])
        return -group["lr"] / bc1 * state["exp_avg"] / denom
