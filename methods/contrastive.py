"""Contrastive loss with margins. Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an
Invariant Mapping", CVPR 2006 (the pair loss), in the form of Musgrave, Belongie & Lim, "A Metric
Learning Reality Check", ECCV 2020, arXiv:2003.08505, and pytorch-metric-learning's ContrastiveLoss.

docs/methods/contrastive.md. With d_ij the Euclidean distance between L2-normalised embeddings and
every ordered pair (i, j), i ≠ j, of the batch (no miner):

  L = mean⁺_{same label} [d_ij − m_pos]_+ + mean⁺_{different labels} [m_neg − d_ij]_+,

mean⁺ the mean over the pairs whose term is non-zero (0 if none: pytorch-metric-learning's
AvgNonZeroReducer, applied to positive and negative pairs separately). Defaults m_pos = 0, m_neg = 1
(pytorch-metric-learning's). Hadsell et al. square both hinges and sum over pairs; the unsquared
form with two margins is the one the reality check benchmarks, and tests/methods/test_embedding_
baselines.py checks it against pytorch-metric-learning.
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_nonnegative
from lossbench.methods.pairs import distances, mean_nonzero, pair_masks, unit_circle_batch


def contrastive(embeddings, targets, *, pos_margin: float, neg_margin: float):
    d = distances(embeddings)
    pos, neg = pair_masks(targets)
    return mean_nonzero(F.relu(d - pos_margin)[pos]) + mean_nonzero(F.relu(neg_margin - d)[neg])


def _validate(hp):
    require_nonnegative("contrastive", hp, "pos_margin", "neg_margin")


def _reference():
    # Worked by hand. Unit vectors at 0°, 60° (class 0) and 90° (class 1); m_pos = 0, m_neg = 1.
    # Distances: d01 = 2 sin 30° = 1, d02 = 2 sin 45° = 1.414214, d12 = 2 sin 15° = 0.517638.
    # Positive pairs (0,1), (1,0): both 1 → mean 1. Negative pairs: [1 − 1.414]_+ = 0 (twice),
    # [1 − 0.517638]_+ = 0.482362 (twice) → mean over non-zero 0.482362. L = 1.482362.
    kw = dict(**unit_circle_batch([0.0, 60.0, 90.0], [0, 0, 1]),
              pos_margin=0.0, neg_margin=1.0)
    return kw, torch.tensor(1.482362)


SPEC = MethodSpec(
    name="contrastive", kind="embedding", fn=contrastive, defaults={"pos_margin": 0.0, "neg_margin": 1.0},
    search={"neg_margin": ("choice", 0.5, 0.8, 1.0, 1.2)},
    paper="Hadsell et al., CVPR 2006 (form: Musgrave et al., arXiv:2003.08505)",
    url="https://doi.org/10.1109/CVPR.2006.100", docs="contrastive", version=1, reference=_reference,
    validate=_validate, summary="pulls same-label pairs together, pushes other pairs beyond a margin (all pairs)",
)
