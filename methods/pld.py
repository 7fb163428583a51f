"""Plackett-Luce Distillation. "PLD: A Choice-Theoretic List-Wise Knowledge Distillation"
(arXiv:2506.12542, §4). docs/methods/pld.md.

The teacher-optimal ranking π* puts the true class first, then the others by descending teacher
logit. With student logits s and teacher softmax q = softmax(t/τ), the loss is the q-weighted
Plackett-Luce negative log-likelihood of π*:

    ℓ = Σ_k q_{π*_k} · [ logsumexp_{j ≥ k} s_{π*_j} − s_{π*_k} ],

computed in O(K log K) by sorting and a reverse cumulative logsumexp. Weights (1, 0, …, 0) give
CE; it is convex and invariant to s + c·1, and replaces CE + KD (no separate KD weight). Default
τ = 4 (paper §5.1, CIFAR-100).
"""
import torch

from lossbench.methods.base import MethodSpec, require_positive


def teacher_ranking(teacher_logits, targets):
    """π* [B, K]: the target first, then the other classes by descending teacher logit (stable)."""
    t = teacher_logits.float().clone()
    t.scatter_(1, targets[:, None], float("inf"))
    return torch.sort(t, dim=1, descending=True, stable=True).indices


def pld(logits, targets, *, teacher_logits, tau: float):
    order = teacher_ranking(teacher_logits, targets)
    s = logits.float().gather(1, order)
    q = torch.softmax(teacher_logits.float() / tau, -1).gather(1, order)
    tail_lse = torch.logcumsumexp(s.flip(1), dim=1).flip(1)  # logsumexp_{j ≥ k} s_{π*_j}
    return (q * (tail_lse - s)).sum(1)


def _validate(hp):
    require_positive("pld", hp, "tau")


def _reference():
    # s = [2, 0, 1], t = [1, 0, 3], y 0, τ 1: π* = (0, 2, 1); q = softmax(t) at π* =
    # (0.114195, 0.843795, 0.042010); terms: k1 logsumexp(2, 1, 0) − 2 = 0.407606, k2
    # logsumexp(1, 0) − 1 = 0.313262, k3 0 → 0.114195·0.407606 + 0.843795·0.313262 = 0.310875 (float64)
    return (dict(logits=torch.tensor([[2.0, 0.0, 1.0]]), targets=torch.tensor([0]),
                 teacher_logits=torch.tensor([[1.0, 0.0, 3.0]]), tau=1.0), torch.tensor([0.310875]))


SPEC = MethodSpec(
    name="pld", kind="loss", fn=pld, defaults={"tau": 4.0}, search={"tau": ("uniform", 1.0, 8.0)},
    needs=("teacher_logits",), teacher="stage",
    paper="PLD 2025, arXiv:2506.12542", url="https://arxiv.org/abs/2506.12542", docs="pld",
    reference=_reference, validate=_validate,
    summary="teacher-weighted Plackett-Luce likelihood of the ranking (target, then teacher order)",
)
