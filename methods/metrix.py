"""Metrix (Metric Mix), embedding mixup on top of the contrastive loss. Venkataramanan, Psomas, Kijak,
Amsaleg, Karantzalos & Avrithis, "It Takes Two to Tango: Mixup for Deep Metric Learning", ICLR 2022,
arXiv:2106.04990 (Sec. 3: labels of pairs as positive/negative, mixed with the examples; Metrix/embed);
official code billpsomas/Metrix_ICLR22 (train.py `embed_metrix_contrastive`, mixup/utils.py
`embed_posneg_pair_mixup_for_pos_anchor`, `embed_neg_pair_mixup_without_posanchor`, mixup/losses.py
`loss_posneg_mixup`), read at its newest commit.

docs/methods/metrix.md. With ê_i the L2-normalised embeddings and d(u, v) = ‖u − v/‖v‖‖ (the official
code's LpDistance, which normalises both sides):

  clean   L_c = contrastive(m_pos, m_neg) of methods/contrastive.py on the batch;
  pairs   every (anchor a, negative n ∈ N_a), mixed with the anchor's first positive p_a (lowest batch
          index; positive-negative mixing) or, for an anchor with no positive in the batch, with the
          anchor itself (anchor-negative mixing);
  mix     m = λ ê_{p_a} + (1 − λ) ê_n,  λ ~ Beta(α, α), one draw per batch;
  targets the mixed pair (a, m) is positive with weight λ and negative with weight 1 − λ:
          L_m = mean⁺ λ [d(ê_a, m) − m_pos]_+  +  mean⁺ (1 − λ) [m_neg − d(ê_a, m)]_+,
  loss    L = L_c + w · L_m,

mean⁺ the mean over the non-zero terms (pytorch-metric-learning's AvgNonZeroReducer, as in the official
code). Defaults α = 2 and w = 0.4 (official code: `--alpha 2.0`, the 0.4 weight of positive-negative
mixing); m_pos = 0, m_neg = 1: `contrastive`'s defaults, so that w = 0 is exactly the claim's baseline
(the official code uses m_neg = 0.5 for both terms; the search tries it).

λ is drawn with numpy's Generator seeded by a hash of (progress, the batch's labels): the embedding hook
passes no generator, and this keeps the method pure (no global RNG) and a run reproducible from its seeds
(the batch order is seeded). Reconstructions: docs/methods/metrix.md.
"""
import numpy as np
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_nonnegative, require_positive
from lossbench.methods.contrastive import contrastive
from lossbench.methods.pairs import mean_nonzero, pair_masks, unit_circle_batch
from lossbench.seeding import derive_seed


def mixed_triples(targets):
    """(anchor, partner, negative) index tensors, one row per (a, n ∈ N_a): the partner is a's first
    positive, or a itself when a has no positive in the batch."""
    pos, neg = pair_masks(targets)
    idx = torch.arange(len(targets), device=targets.device)
    first_pos = torch.where(pos, idx, len(targets)).amin(1)
    partner = torch.where(first_pos < len(targets), first_pos, idx)
    a, n = neg.nonzero(as_tuple=True)
    return a, partner[a], n


def mixed_term(embeddings, targets, lam: float, *, pos_margin: float, neg_margin: float):
    """L_m of the module docstring for a given λ. The mixed embeddings are never formed: with S = ê êᵀ
    and u = λ ê_p + (1 − λ) ê_n, ‖u‖² = λ² + (1 − λ)² + 2λ(1 − λ) S_pn and ê_a·u = λ S_ap + (1 − λ) S_an,
    so d(ê_a, u) = ‖ê_a − u/‖u‖‖ = √(2 − 2 ê_a·u/‖u‖): O(B²) from the Gram matrix instead of O(B²·D)
    for the B² triples (the same value to float rounding)."""
    e = F.normalize(embeddings.float(), dim=1)
    sim = e @ e.T
    a, p, n = mixed_triples(targets)
    norm = (lam ** 2 + (1 - lam) ** 2 + 2 * lam * (1 - lam) * sim[p, n]).clamp_min(1e-24).sqrt()
    cos = (lam * sim[a, p] + (1 - lam) * sim[a, n]) / norm
    d = (2 - 2 * cos).clamp_min(1e-12).sqrt()
    return mean_nonzero(lam * F.relu(d - pos_margin)) + mean_nonzero((1 - lam) * F.relu(neg_margin - d))


def draw_lambda(alpha: float, progress, targets) -> float:
    """λ ~ Beta(α, α) from a generator seeded by (progress, labels): same batch, same λ."""
    seed = derive_seed("metrix", repr(float(progress)), *targets.tolist())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def metrix_from_lambda(embeddings, targets, lam: float, *, pos_margin: float, neg_margin: float,
                       mix_weight: float):
    clean = contrastive(embeddings, targets, pos_margin=pos_margin, neg_margin=neg_margin)
    if mix_weight == 0:
        return clean
    return clean + mix_weight * mixed_term(embeddings, targets, lam, pos_margin=pos_margin, neg_margin=neg_margin)


def metrix(embeddings, targets, *, progress, alpha: float, mix_weight: float, pos_margin: float,
           neg_margin: float):
    return metrix_from_lambda(embeddings, targets, draw_lambda(alpha, progress, targets), pos_margin=pos_margin,
                              neg_margin=neg_margin, mix_weight=mix_weight)


def _validate(hp):
    require_positive("metrix", hp, "alpha")
    require_nonnegative("metrix", hp, "mix_weight", "pos_margin", "neg_margin")


def _reference():
    # Worked by hand: contrastive's reference batch (0°, 60° class 0; 90° class 1; m_pos = 0, m_neg = 1),
    # clean loss 1.482362. mix_weight = 0 leaves the clean loss whatever λ is drawn.
    kw = dict(**unit_circle_batch([0.0, 60.0, 90.0], [0, 0, 1]),
              progress=0.5, alpha=2.0, mix_weight=0.0, pos_margin=0.0, neg_margin=1.0)
    return kw, torch.tensor(1.482362)


SPEC = MethodSpec(
    name="metrix", kind="embedding", fn=metrix, needs=("progress",),
    defaults={"alpha": 2.0, "mix_weight": 0.4, "pos_margin": 0.0, "neg_margin": 1.0},
    search={"alpha": ("choice", 1.0, 2.0), "mix_weight": ("choice", 0.2, 0.4, 1.0),
            "neg_margin": ("choice", 0.5, 0.8, 1.0)},
    paper="Venkataramanan et al., ICLR 2022, arXiv:2106.04990", url="https://arxiv.org/abs/2106.04990",
    docs="metrix", version=1, reference=_reference, validate=_validate,
    summary="contrastive loss plus mixed positive-negative embeddings with interpolated pair labels (λ ~ Beta(α, α))",
)
