"""SRAT — Separable Reweighted Adversarial Training. Wang, Xu, Liu, Li, Thuraisingham, Tang,
"Imbalanced Adversarial Training with Reweighting" (arXiv:2107.13639). Card C11 in
docs/methods/srat.md.

The paper's finding: under adversarial training on imbalanced data, plain class upweighting
trades head-class for tail-class robustness because the learned features separate poorly; SRAT
reweights the adversarial CE *and* adds a feature-separability term. The exact separability loss
and schedule were not read (the card marks them unverified), so this module implements the card's
stated form, labelled as such:

    loss_i = w_{y_i}(progress) · CE(z_i^adv, y_i) + λ_sep · sep_i,
    sep_i  = (1 − cos(f_i, μ_{y_i})) + mean_{k ≠ y_i} max(0, cos(f_i, μ_k)),

where f_i are the penultimate features of the adversarial example, μ_k the batch mean of class k's
(detached, L2-normalised) features, and w the effective-number class weights (β) switched on DRW-
style after `switch` of the budget (methods/class_balanced.py). sep pulls an example towards its
own class centroid and away from every other class's direction; classes absent from the batch are
skipped.
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_in, require_nonnegative
from lossbench.methods.class_balanced import deferred_reweighting
from lossbench.methods.erm import cross_entropy


def separability(features, targets):
    """Per-example feature-separability penalty [B] against the batch's class centroids."""
    f = F.normalize(features.float(), dim=1)
    k = int(targets.max()) + 1
    onehot = F.one_hot(targets, k).float()
    counts = onehot.sum(0)
    centroids = F.normalize((onehot.T @ f.detach()) / counts.clamp_min(1)[:, None], dim=1)  # [k, F]
    cos = f @ centroids.T  # [B, k]
    present = counts > 0
    own = cos.gather(1, targets[:, None]).squeeze(1)
    others = present[None, :] & ~onehot.bool()
    push = (cos.clamp_min(0) * others).sum(1) / others.sum(1).clamp_min(1)
    return (1 - own) + push


def srat(logits, targets, *, features, class_counts, progress, beta: float, switch: float, lam_sep: float):
    w = deferred_reweighting(targets, class_counts=class_counts, progress=progress, beta=beta, switch=switch)
    return w * cross_entropy(logits, targets) + lam_sep * separability(features, targets)


def _validate(hp):
    require_in("srat", hp, "beta", 0, 1, closed_high=True)
    require_in("srat", hp, "switch", 0, 1, closed_high=True)
    require_nonnegative("srat", hp, "lam_sep")


def _reference():
    # Two examples of class 0 with orthogonal unit features, one of class 1: centroid 0 is
    # (1, 1)/√2, so cos = 1/√2 for both, own term 1 − 0.707107 = 0.292893; class 1's feature
    # (−1, 0) gives cos with centroid 0 of −0.707107 → no push; examples 0/1 have cos with μ_1 =
    # (−1, 0) of −1 and 0 → no push. Before the switch the weights are 1, so loss = CE + 0.5·sep:
    # CE of z = [2, 0] (y 0) 0.126928, z = [0, 0] 0.693147 → [0.273375, 0.839594, 0.693147].
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    return (dict(logits=torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), targets=torch.tensor([0, 0, 1]),
                 features=feats, class_counts=torch.tensor([10.0, 1.0]), progress=0.0, beta=0.9999,
                 switch=0.8, lam_sep=0.5),
            torch.tensor([0.273375, 0.839594, 0.693147]))


SPEC = MethodSpec(
    name="srat", kind="adversarial", fn=srat,
    defaults={"beta": 0.9999, "switch": 0.8, "lam_sep": 0.1},
    search={"lam_sep": ("log_uniform", 0.1, 1.0)}, needs=("features", "class_counts", "progress"),
    paper="Wang et al. 2021, arXiv:2107.13639", url="https://arxiv.org/abs/2107.13639", docs="srat",
    reference=_reference, validate=_validate,
    summary="PGD-AT with deferred class weights + a feature-separability term (form unverified: our reconstruction)",
)
