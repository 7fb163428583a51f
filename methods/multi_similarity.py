"""Multi-Similarity (MS) loss. Wang et al., "Multi-Similarity Loss with General Pair Weighting for
Deep Metric Learning", CVPR 2019, arXiv:1904.06627, Sec. 4 (pair mining, then pair weighting).

docs/methods/multi_similarity.md. On a batch of L2-normalised embeddings with cosine similarities
S_ik, for each anchor i (P_i: the other examples of its class, N_i: the other classes):

  mining     keep negative k ∈ N_i if S_ik > min_{j ∈ P_i} S_ij − ε,
             keep positive k ∈ P_i if S_ik < max_{j ∈ N_i} S_ij + ε;
  weighting  L_i = (1/α) log(1 + Σ_{kept k ∈ P_i} exp(−α(S_ik − λ)))
                 + (1/β) log(1 + Σ_{kept k ∈ N_i} exp(β(S_ik − λ))),
  loss       L = (1/B) Σ_i L_i (an empty sum is 0: an anchor without a kept pair adds 0).

∂L/∂S_ik is the paper's pair weight: exp(β(S_ik − λ)) / (1 + Σ_kept exp(β(S_il − λ))) for a kept
negative (it grows with S_ik), −exp(−α(S_ik − λ)) / (1 + Σ_kept exp(−α(S_il − λ))) for a kept
positive (its size grows as S_ik falls), both divided by B.

Defaults α = 2, β = 50, ε = 0.1 (paper) and λ = 0.5: the authors' released code fixes the threshold
at 0.5 (the paper's text gives λ = 1, unverified here), and so does pytorch-metric-learning's
`MultiSimilarityLoss(base=0.5)`; on cosine similarities λ = 1 would put every negative below the
threshold, leaving negatives almost no weight. The reduction is pytorch-metric-learning's (its
`MultiSimilarityMiner(epsilon)` + `MultiSimilarityLoss` with the mean over all B anchors, which
tests/methods/test_multi_similarity.py checks to float32 precision); the released code instead drops
an anchor that keeps no positive or no negative pair (its kept negatives then add nothing), and
excludes positives with S ≥ 1 − 1e-5 rather than only the anchor itself.
"""
import torch

from lossbench.methods.base import MethodSpec, require_nonnegative, require_positive
from lossbench.methods.pairs import cosine_similarity, pair_masks, unit_circle_batch


def _log1p_sum_exp(x, keep):
    """log(1 + Σ_{k: keep_ik} exp(x_ik)) per row, stably (0 for a row that keeps nothing)."""
    x = torch.where(keep, x, -torch.inf)
    return torch.logsumexp(torch.cat([x, x.new_zeros(len(x), 1)], dim=1), dim=1)


def ms_from_similarity(sim, targets, *, alpha: float, beta: float, lam: float, epsilon: float):
    """The MS loss of a [B, B] similarity matrix (row i: anchor i); the module docstring's formula."""
    pos, neg = pair_masks(targets)
    min_pos = torch.where(pos, sim, torch.inf).amin(1, keepdim=True)
    max_neg = torch.where(neg, sim, -torch.inf).amax(1, keepdim=True)
    kept_neg = neg & (sim + epsilon > min_pos)
    kept_pos = pos & (sim - epsilon < max_neg)
    per_anchor = (_log1p_sum_exp(-alpha * (sim - lam), kept_pos) / alpha
                  + _log1p_sum_exp(beta * (sim - lam), kept_neg) / beta)
    return per_anchor.mean()


def multi_similarity(embeddings, targets, *, alpha: float, beta: float, lam: float, epsilon: float):
    return ms_from_similarity(cosine_similarity(embeddings), targets, alpha=alpha, beta=beta, lam=lam,
                              epsilon=epsilon)


def _validate(hp):
    require_positive("multi_similarity", hp, "alpha", "beta")
    require_nonnegative("multi_similarity", hp, "epsilon")


def _reference():
    # Worked by hand. Unit vectors at 0°, 60° (class 0) and 90°, 180° (class 1); α = 2, β = 50, λ = 0.5,
    # ε = 0.1. Similarities: S01 = 0.5, S02 = 0, S03 = −1, S12 = cos 30° = 0.866025, S13 = −0.5, S23 = 0.
    # Anchor 0: min pos 0.5, keeps negatives > 0.4: none; max neg 0, keeps positive 0.5 < 0.1: no → 0.
    # Anchor 1: min pos 0.5, keeps negative 2 (0.866 > 0.4); max neg 0.866, keeps positive 0 (0.5 < 0.966):
    #   (1/2) log(1 + e^0) + (1/50) log(1 + e^{50·0.366025}) = 0.346574 + 0.366025 = 0.712599.
    # Anchor 2: min pos 0, keeps negative 1 (0.866 > −0.1); max neg 0.866, keeps positive 3 (0 < 0.966):
    #   (1/2) log(1 + e^1) + 0.366025 = 0.656631 + 0.366025 = 1.022656.
    # Anchor 3: min pos 0, keeps negatives > −0.1: none; max neg −0.5, keeps positive 0 < −0.4: no → 0.
    # Mean over 4 anchors: (0.712599 + 1.022656) / 4 = 0.433814.
    kw = dict(**unit_circle_batch([0.0, 60.0, 90.0, 180.0], [0, 0, 1, 1]),
              alpha=2.0, beta=50.0, lam=0.5, epsilon=0.1)
    return kw, torch.tensor(0.433814)


SPEC = MethodSpec(
    name="multi_similarity", kind="embedding", fn=multi_similarity,
    defaults={"alpha": 2.0, "beta": 50.0, "lam": 0.5, "epsilon": 0.1},
    search={"alpha": ("choice", 1.0, 2.0, 4.0), "beta": ("choice", 20.0, 40.0, 50.0),
            "lam": ("choice", 0.5, 0.7, 1.0)},
    paper="Wang et al., CVPR 2019, arXiv:1904.06627", url="https://arxiv.org/abs/1904.06627",
    docs="multi_similarity", version=1, reference=_reference, validate=_validate,
    summary="mines informative pairs, then weights each by its own and its neighbours' similarities",
)
