"""Focal-style reweighting of the contrastive loss, from KaLM-Embedding-V2. Zhao et al.,
"KaLM-Embedding-V2: Superior Training Techniques and Data Inspire A Versatile Embedding Model", 2025,
arXiv:2506.20923 (training objective: InfoNCE with in-batch negatives, each sample's term scaled by a
focal-style weight that shrinks as the sample gets easy; after Lin et al.'s focal loss, arXiv:1708.02002).

docs/methods/kalm_focal.md. On the supervised batch (positives: the other examples of the anchor's
label), with ℓ_i SupCon's L_out term of anchor i (methods/supcon.py) and p_ij = exp(z_i·z_j/τ) /
Σ_{a≠i} exp(z_i·z_a/τ) on L2-normalised embeddings:

  P_i = Σ_{p ∈ P(i)} p_ip          (the softmax mass the anchor puts on its positives),
  w_i = (1 − P_i)^γ, detached      (focal-style weight: an easy anchor, P_i → 1, weighs → 0),
  L   = mean over anchors with a positive of w_i · ℓ_i.

With one positive per anchor (the paper's query–passage setting) P_i is the positive's probability and
w_i the paper's (1 − p)^γ. γ = 0 gives w_i = 1: exactly `supcon` (tests/methods/test_kalm_focal.py).
Reconstructed (docs/methods/kalm_focal.md): γ's default, the detached weight, and the multi-positive
P_i; the paper's online hard-negative mixing is not implemented.
"""
import torch

from lossbench.methods.base import MethodSpec, require_nonnegative, require_positive
from lossbench.methods.pairs import cosine_similarity, off_diagonal_log_softmax, pair_masks, unit_circle_batch
from lossbench.methods.supcon import supcon_per_anchor


def focal_weights(logits, targets, *, gamma: float):
    """Detached w_i = (1 − P_i)^γ [B]: P_i the softmax (over A(i)) mass on anchor i's positives."""
    pos, _ = pair_masks(targets)
    with torch.no_grad():
        prob = off_diagonal_log_softmax(logits).exp()
        mass = torch.where(pos, prob, torch.zeros((), dtype=prob.dtype, device=prob.device)).sum(1)
        return (1 - mass).clamp_min(0) ** gamma


def kalm_focal(embeddings, targets, *, temperature: float, gamma: float):
    logits = cosine_similarity(embeddings) / temperature
    per, has_pos = supcon_per_anchor(logits, targets)
    w = focal_weights(logits, targets, gamma=gamma)
    return (w * per)[has_pos].sum() / has_pos.sum().clamp_min(1)


def _validate(hp):
    require_positive("kalm_focal", hp, "temperature")
    require_nonnegative("kalm_focal", hp, "gamma")


def _reference():
    # Worked by hand. supcon's reference batch (0°, 60° class 0; 90° class 1; τ = 0.5), γ = 2.
    # Anchor 0: p01 = 1/(1 + e^−1) = 0.731059, ℓ_0 = 0.313262, w_0 = 0.268941² = 0.072329.
    # Anchor 1: p10 = 1/(1 + e^0.732051) = 0.324745, ℓ_1 = 1.124716, w_1 = 0.675255² = 0.455970.
    # L = (0.072329·0.313262 + 0.455970·1.124716) / 2 = (0.022658 + 0.512836) / 2 = 0.267747.
    kw = dict(**unit_circle_batch([0.0, 60.0, 90.0], [0, 0, 1]),
              temperature=0.5, gamma=2.0)
    return kw, torch.tensor(0.267747)


SPEC = MethodSpec(
    name="kalm_focal", kind="embedding", fn=kalm_focal, defaults={"temperature": 0.1, "gamma": 2.0},
    search={"temperature": ("choice", 0.05, 0.1, 0.2), "gamma": ("choice", 0.5, 1.0, 2.0, 3.0)},
    paper="Zhao et al. 2025, KaLM-Embedding-V2, arXiv:2506.20923", url="https://arxiv.org/abs/2506.20923",
    docs="kalm_focal", version=1, reference=_reference, validate=_validate,
    summary="SupCon/InfoNCE with focal-style per-anchor weights (1 − p_pos)^γ that down-weight easy anchors",
)
