"""Optimizers by name, for every trainer (classification, grokking, LM pretraining).

sgd, adam, adamw are torch's; sgdp and adamp the authors' package (`adamp`, Heo et al., ICLR 2021,
card O1); frugal (lossbench/optim/frugal.py, card O2) and weight_compander (lossbench/optim/compander.py,
card O3: SGD on the weights reparameterised as a·arctan(v/b)) are written here. A config is
{name, lr, ...}; keys a given optimizer does not take are refused by the protocol schema.
"""
from __future__ import annotations

import torch

OPTIMIZERS = ("sgd", "adam", "adamw", "sgdp", "adamp", "frugal", "weight_compander")


def build_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    cfg = dict(cfg)
    name = cfg.pop("name")
    wd = cfg.get("weight_decay", 0.0)
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.0),
                               nesterov=cfg.get("nesterov", False), weight_decay=wd)
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        # fused kernels: about half the per-step optimiser overhead of the default for tiny models
        return cls(params, lr=cfg["lr"], weight_decay=wd, betas=tuple(cfg.get("betas", (0.9, 0.999))),
                   eps=cfg.get("eps", 1e-8), fused=True)
    if name == "adamp":
        from adamp import AdamP

        return AdamP(params, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.999))), eps=cfg.get("eps", 1e-8),
                     weight_decay=wd, delta=cfg.get("delta", 0.1), wd_ratio=cfg.get("wd_ratio", 0.1),
                     nesterov=cfg.get("nesterov", False))
    if name == "sgdp":
        from adamp import SGDP

        return SGDP(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.0), weight_decay=wd,
                    nesterov=cfg.get("nesterov", False), delta=cfg.get("delta", 0.1),
                    wd_ratio=cfg.get("wd_ratio", 0.1))
    if name == "frugal":
        from lossbench.optim.frugal import Frugal

        return Frugal(params, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.999))), eps=cfg.get("eps", 1e-8),
                      weight_decay=wd, density=cfg.get("density", 0.25), update_gap=cfg.get("update_gap", 200),
                      inactive_lr_scale=cfg.get("inactive_lr_scale", 1.0), seed=cfg.get("seed", 0))
    if name == "weight_compander":
        from lossbench.optim.compander import WeightCompander

        return WeightCompander(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.0),
                               nesterov=cfg.get("nesterov", False), weight_decay=wd, a=cfg.get("a", 1.0),
                               b=cfg.get("b", 0.6))
    raise KeyError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps in its state (moments, momentum buffers)."""
    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
               if isinstance(v, torch.Tensor))
