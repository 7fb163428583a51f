"""Triplet margin loss with batch-hard mining. Schroff, Kalenichenko & Philbin, "FaceNet", CVPR 2015,
arXiv:1503.03832 (the triplet loss); Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for
Person Re-Identification", 2017, arXiv:1703.07737 (batch-hard mining).

docs/methods/triplet.md. With d_ij the Euclidean distance between L2-normalised embeddings, each
anchor i that has a positive and a negative in the batch forms one triplet from its hardest
positive and hardest negative:

  ℓ_i = [max_{j: y_j = y_i, j ≠ i} d_ij − min_{k: y_k ≠ y_i} d_ik + m]_+,   L = mean⁺_i ℓ_i,

mean⁺ the mean over the non-zero ℓ_i (0 if none), as pytorch-metric-learning's TripletMarginLoss with
its BatchHardMiner reduces (AvgNonZeroReducer; Hermans et al. average over all anchors, which only
rescales the step). Default margin m = 0.1 on the unit sphere (pytorch-metric-learning's default is
0.05; the reality check, arXiv:2003.08505, tuned the triplet margin to about 0.1). Written here
rather than called from pytorch-metric-learning so that it is a pure tensor function like every
method; tests/methods/test_embedding_baselines.py checks it against the library.
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_nonnegative
from lossbench.methods.pairs import distances, mean_nonzero, pair_masks, unit_circle_batch


def triplet_batch_hard(embeddings, targets, *, margin: float):
    d = distances(embeddings)
    pos, neg = pair_masks(targets)
    hardest_pos = torch.where(pos, d, -torch.inf).amax(1)
    hardest_neg = torch.where(neg, d, torch.inf).amin(1)
    has_triplet = pos.any(1) & neg.any(1)
    return mean_nonzero(F.relu(hardest_pos - hardest_neg + margin)[has_triplet])


def _validate(hp):
    require_nonnegative("triplet", hp, "margin")


def _reference():
    # Worked by hand. Unit vectors at 0°, 60° (class 0), 90°, 180° (class 1); m = 0.1; d = 2 sin(Δ/2).
    # Anchor 0: hardest pos d01 = 1, hardest neg min(d02, d03) = 1.414214 → [1 − 1.414214 + 0.1]_+ = 0.
    # Anchor 1: pos d10 = 1, neg d12 = 2 sin 15° = 0.517638 → 0.582362.
    # Anchor 2: pos d23 = 1.414214, neg d21 = 0.517638 → 0.996576.
    # Anchor 3: pos d32 = 1.414214, neg min(d30 = 2, d31 = 2 sin 60° = 1.732051) → [−0.217837]_+ = 0.
    # Mean over the two non-zero anchors: (0.582362 + 0.996576) / 2 = 0.789469.
    kw = dict(**unit_circle_batch([0.0, 60.0, 90.0, 180.0], [0, 0, 1, 1]),
              margin=0.1)
    return kw, torch.tensor(0.789469)


SPEC = MethodSpec(
    name="triplet", kind="embedding", fn=triplet_batch_hard, defaults={"margin": 0.1},
    search={"margin": ("choice", 0.05, 0.1, 0.2, 0.4)},
    paper="Hermans et al. 2017, arXiv:1703.07737 (batch-hard; triplet loss: Schroff et al., CVPR 2015)",
    url="https://arxiv.org/abs/1703.07737", docs="triplet", version=1, reference=_reference,
    validate=_validate, summary="per anchor, its hardest positive closer than its hardest negative by a margin",
)
