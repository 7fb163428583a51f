"""Supervised contrastive loss (SupCon), the L_out variant. Khosla et al., "Supervised Contrastive
Learning", NeurIPS 2020, arXiv:2004.11362, Sec. 3.2, Eq. 2; authors' code HobbitLong/SupContrast
(losses.py, SupConLoss).

docs/methods/supcon.md. The batch's examples are the views (no augmentation on this protocol): with z_i
the L2-normalised embeddings, A(i) every other example of the batch and P(i) ⊆ A(i) those of anchor i's
label,

  ℓ_i = −(1/|P(i)|) Σ_{p ∈ P(i)} log( exp(z_i·z_p/τ) / Σ_{a ∈ A(i)} exp(z_i·z_a/τ) ),
  L   = mean of ℓ_i over the anchors with |P(i)| ≥ 1 (0 if none).

The paper sums ℓ_i over anchors; the authors' code and pytorch-metric-learning's SupConLoss take the
mean (the latter over the anchors whose loss is non-zero, which
tests/methods/test_supcon.py checks to float32 precision). Default τ = 0.1, the paper's (Sec. 4: "0.1
worked best"); the authors' code defaults to 0.07 and also multiplies the loss by τ/0.07 (a constant
rescaling, left out here as in the paper's Eq. 2 and in pytorch-metric-learning).
"""
import torch

from lossbench.methods.base import MethodSpec, require_positive
from lossbench.methods.pairs import cosine_similarity, mean_over_positives, off_diagonal_log_softmax, unit_circle_batch


def supcon_per_anchor(logits, targets):
    """(ℓ_i [B], has-a-positive [B]) of a [B, B] logit matrix (row i: anchor i; the diagonal is ignored)."""
    mean_log_prob, has_pos = mean_over_positives(off_diagonal_log_softmax(logits), targets)
    return -mean_log_prob, has_pos


def supcon_from_logits(logits, targets):
    """SupCon of a [B, B] logit matrix S/τ: the mean of ℓ_i over anchors that have a positive."""
    per, has_pos = supcon_per_anchor(logits, targets)
    return per[has_pos].sum() / has_pos.sum().clamp_min(1)


def supcon(embeddings, targets, *, temperature: float):
    return supcon_from_logits(cosine_similarity(embeddings) / temperature, targets)


def _validate(hp):
    require_positive("supcon", hp, "temperature")


def _reference():
    # Worked by hand. Unit vectors at 0°, 60° (class 0) and 90° (class 1); τ = 0.5, so the logits are
    # 2·cos: l01 = 1, l02 = 0, l12 = 2·cos 30° = 1.732051.
    # Anchor 0: −log(e^1 / (e^1 + e^0)) = log(1 + e^−1) = 0.313262.
    # Anchor 1: −log(e^1 / (e^1 + e^1.732051)) = log(1 + e^0.732051) = 1.124715.
    # Anchor 2 has no positive and is left out. L = (0.313262 + 1.124715) / 2 = 0.718989.
    kw = dict(**unit_circle_batch([0.0, 60.0, 90.0], [0, 0, 1]),
              temperature=0.5)
    return kw, torch.tensor(0.718989)


SPEC = MethodSpec(
    name="supcon", kind="embedding", fn=supcon, defaults={"temperature": 0.1},
    search={"temperature": ("choice", 0.05, 0.07, 0.1, 0.2, 0.5)},
    paper="Khosla et al., NeurIPS 2020, arXiv:2004.11362", url="https://arxiv.org/abs/2004.11362",
    docs="supcon", version=1, reference=_reference, validate=_validate,
    summary="softmax over the batch per anchor, every same-label example a positive (L_out, temperature τ)",
)
