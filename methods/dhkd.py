"""Dual-Head Knowledge Distillation. Yang, Zong, Huang, Feng, An, "Dual-Head Knowledge
Distillation: Enhancing Logits Utilization with an Auxiliary Head" (arXiv:2411.08937; code
penghui-yang/DHKD). docs/methods/dhkd.md.

Main head z¹ (the one that predicts): γ·CE(z¹, y) + α·T_kd²·KL(σ(t/T_kd) ‖ σ(z¹/T_kd)) (card).
Auxiliary head z² on the same features: a per-class sigmoid (logit-level) match of the teacher,
summed over classes and scaled by T², which unlike the softmax KL is not invariant to shifting all
logits. Putting it on the main head next to CE collapses the classifier; a second head keeps its
benefit on the backbone (paper abstract). The trainer builds that head when a method needs
`aux_logits`; the returned loss is the per-example sum of both heads' terms.

`aux_loss` picks the auxiliary term, both read in the code *(code)*:
  "binary_kl"       T²·Σ_k KL(Bern(sig(t_k/T)) ‖ Bern(sig(z²_k/T)))  (distiller_zoo/BinaryKL.py)
  "binary_kl_norm"  T²·Σ_k KL(Bern(½) ‖ Bern(sig((z²_k − t_k)/T)))  (distiller_zoo/BinaryKLNorm.py)
Both are 0 iff z² = t. The code clamps the sigmoids to [1e-8, 1 − 1e-8]; log-sigmoids here are
exact instead (they differ only where |logit/T| > 18, where the clamp also zeroes the gradient).

Defaults T_kd 4, T 2, γ 1, α 1 and aux_loss "binary_kl" follow the card. Departure of the card from
the released code *(code, helper/loops.py and train_student.py)*: `--distill dhkd` trains
γ·CE(z¹, y) + α·BinaryKLNorm(z², t) — no softmax KD term on the main head (`--kd_T` is read only by
`--distill kd`), α weighting the auxiliary term. With the README's CIFAR-100 command (γ = α = 1,
T = 2) that is exactly alpha = 0, aux_loss = "binary_kl_norm" here. The optional gradient-alignment
optimiser (`--ga`) and the non-linear auxiliary head are not part of the loss.
"""
import math

import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_choice, require_nonnegative, require_positive
from lossbench.methods.erm import cross_entropy
from lossbench.methods.kd import tempered_kl

AUX_LOSSES = ("binary_kl", "binary_kl_norm")


def binary_kl(teacher_logits, student_logits, temperature: float):
    """Per-example T²·Σ_k KL(Bern(sig(t_k/T)) ‖ Bern(sig(s_k/T))) [B]; 0 iff s = t."""
    t, s = teacher_logits.float() / temperature, student_logits.float() / temperature
    q = torch.sigmoid(t)
    # KL of Bernoullis from log-sigmoids: q·(log q − log p) + (1 − q)·(log(1−q) − log(1−p))
    kl = q * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - q) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return temperature ** 2 * kl.sum(-1)


def binary_kl_norm(teacher_logits, student_logits, temperature: float):
    """Per-example T²·Σ_k KL(Bern(½) ‖ Bern(sig((s_k − t_k)/T))) [B]; 0 iff s = t."""
    d = (student_logits.float() - teacher_logits.float()) / temperature
    kl = -math.log(2.0) - 0.5 * (F.logsigmoid(d) + F.logsigmoid(-d))
    return temperature ** 2 * kl.sum(-1)


_AUX = {"binary_kl": binary_kl, "binary_kl_norm": binary_kl_norm}


def dhkd(logits, targets, *, teacher_logits, aux_logits, gamma: float, alpha: float, t_kd: float,
         t_bin: float, aux_loss: str):
    main = gamma * cross_entropy(logits, targets) + alpha * tempered_kl(teacher_logits, logits, t_kd)
    return main + _AUX[aux_loss](teacher_logits, aux_logits, t_bin)


def _validate(hp):
    require_nonnegative("dhkd", hp, "gamma", "alpha")
    require_positive("dhkd", hp, "t_kd", "t_bin")
    require_choice("dhkd", hp, "aux_loss", AUX_LOSSES)


def _reference():
    # z¹ = z² = [2, 0], t = [0, 2], y 0, γ = α = 1, T_kd = T = 1: CE 0.126928 + softmax KL 1.523188
    # (as methods/kd.py) + BinaryKL: class 0 KL(Bern(0.5) ‖ Bern(0.880797)) = 0.433781, class 1
    # KL(Bern(0.880797) ‖ Bern(0.5)) = 0.327813 (float64) → total 2.411710
    z = torch.tensor([[2.0, 0.0]])
    return (dict(logits=z, targets=torch.tensor([0]), teacher_logits=torch.tensor([[0.0, 2.0]]), aux_logits=z,
                 gamma=1.0, alpha=1.0, t_kd=1.0, t_bin=1.0, aux_loss="binary_kl"), torch.tensor([2.411710]))


SPEC = MethodSpec(
    name="dhkd", kind="loss", fn=dhkd,
    defaults={"gamma": 1.0, "alpha": 1.0, "t_kd": 4.0, "t_bin": 2.0, "aux_loss": "binary_kl"},
    search={"alpha": ("log_uniform", 0.1, 1.0)}, needs=("teacher_logits", "aux_logits"), teacher="stage",
    paper="Yang et al. 2024, arXiv:2411.08937", url="https://arxiv.org/abs/2411.08937", docs="dhkd",
    reference=_reference, validate=_validate,
    summary="KD on the main head + per-class sigmoid BinaryKL to the teacher on an auxiliary head",
)
