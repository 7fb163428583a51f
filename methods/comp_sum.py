"""Comp-sum losses: generalized cross-entropy (GCE) and mean absolute error (MAE).

Mao, Mohri, Zhong, "Cross-Entropy Loss Functions: Theoretical Analysis and Applications", ICML 2023,
arXiv:2304.07288: comp-sum losses Φ^τ(u) with u = Σ_{k≠y} exp(z_k − z_y) and
Φ^τ(u) = ((1+u)^{1−τ} − 1)/(1−τ) (τ ≠ 1), log(1+u) (τ = 1). τ = 0 sum-exponential, τ = 1 CE,
τ = 1+q GCE (1 − p_y^q)/q (Zhang & Sabuncu 2018, arXiv:1805.07836, q = 0.7), τ = 2 MAE 1 − p_y.
docs/methods/comp_sum.md (it flags this τ parametrisation as unverified
against the paper's text). GCE here is untruncated (Zhang & Sabuncu's truncation k = 0.5 and its
epoch-wise pruning are not part of this loss).
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_in


def comp_sum_loss(logits, targets, *, tau: float):
    """Φ^τ(u) per example. 1+u = 1/p_y, so (1+u)^{1−τ} = exp((1−τ)·CE): stable for large logits."""
    ce = -F.log_softmax(logits.float(), -1).gather(-1, targets[:, None]).squeeze(-1)  # log(1+u)
    a = 1.0 - tau
    if a == 0.0:
        return ce
    # expm1(a·ce)/a -> ce as a -> 0 without cancellation; for τ > 1 it is bounded by 1/(τ−1).
    return torch.expm1(a * ce) / a


def generalized_ce(logits, targets, *, q: float):
    return comp_sum_loss(logits, targets, tau=1.0 + q)


def mean_absolute_error(logits, targets):
    return comp_sum_loss(logits, targets, tau=2.0)


def _validate_gce(hp):
    require_in("gce", hp, "q", 0, 1, closed_high=True)  # q = 0 is the CE limit, q = 1 is MAE


def _ref_gce():
    # z = [2, 0], y = 0: p_y = 0.880797; (1 − p_y^0.7)/0.7 = 0.121453 (float64).
    return dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0]), q=0.7), torch.tensor([0.121453])


def _ref_mae():
    # z = [2, 0]: y = 0 → 1 − 0.880797 = 0.119203; y = 1 → 1 − 0.119203 = 0.880797.
    kw = dict(logits=torch.tensor([[2.0, 0.0], [2.0, 0.0]]), targets=torch.tensor([0, 1]))
    return kw, torch.tensor([0.119203, 0.880797])


GCE = MethodSpec(
    name="gce", kind="loss", fn=generalized_ce, defaults={"q": 0.7},
    search={"q": ("uniform", 0.1, 1.0)},
    paper="Zhang & Sabuncu 2018, arXiv:1805.07836; Mao et al. 2023, arXiv:2304.07288",
    url="https://arxiv.org/abs/1805.07836", docs="comp_sum", version=1, reference=_ref_gce,
    validate=_validate_gce,
    summary="generalized cross-entropy (1 − p_y^q)/q, the comp-sum loss with τ = 1 + q",
)

MAE = MethodSpec(
    name="mae", kind="loss", fn=mean_absolute_error, defaults={},
    paper="Mao et al. ICML 2023, arXiv:2304.07288", url="https://arxiv.org/abs/2304.07288",
    docs="comp_sum", version=1, reference=_ref_mae,
    summary="mean absolute error 1 − p_y, the bounded comp-sum loss with τ = 2",
)
