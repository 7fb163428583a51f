"""Threshold-Consistent Margin (TCM) loss on top of Multi-Similarity. Zhang, Xu, Tang, Fang, Wu, Tighe &
Xing, "Threshold-Consistent Margin Loss for Open-World Deep Metric Learning", ICLR 2024, arXiv:2307.04047
(Sec. 4: the regulariser; Sec. 5.2: its defaults).

docs/methods/tcm.md. TCM is a regulariser added to a base DML loss; here the base is the Multi-Similarity
loss of methods/multi_similarity.py (one of the paper's base losses), called, not copied. With S_ij the
cosine similarity of the L2-normalised embeddings, S⁺ the similarities of the ordered positive pairs
(i, j), i ≠ j, same label, and S⁻ those of the negative pairs of the batch (no miner):

  L_TCM = λ⁺ · Σ_{s∈S⁺} (m⁺ − s)·1[s ≤ m⁺] / Σ_{s∈S⁺} 1[s ≤ m⁺]
        + λ⁻ · Σ_{s∈S⁻} (s − m⁻)·1[s ≥ m⁻] / Σ_{s∈S⁻} 1[s ≥ m⁻]     (an empty term is 0),
  L     = L_MS(S; α, β, λ_MS, ε) + L_TCM.

Each term is averaged over its violating ("hard") pairs only: a positive pair below the positive margin m⁺
is pulled up with unit slope, a negative pair above the negative margin m⁻ is pushed down, and pairs
beyond their margin add nothing. Defaults m⁺ = 0.9, m⁻ = 0.5, λ⁺ = λ⁻ = 1 (the values pytorch-metric-
learning's ThresholdConsistentMarginLoss takes from the paper's Sec. 5.2); MS keeps its own defaults.
λ⁺ = λ⁻ = 0 gives the MS loss exactly. tests/methods/test_tcm.py checks the regulariser and its gradient
against pytorch-metric-learning's ThresholdConsistentMarginLoss.
"""
import torch

from lossbench.methods.base import MethodSpec, require_in, require_nonnegative
from lossbench.methods.multi_similarity import _validate as _validate_ms
from lossbench.methods.multi_similarity import SPEC as MS
from lossbench.methods.multi_similarity import ms_from_similarity
from lossbench.methods.pairs import cosine_similarity, pair_masks, unit_circle_batch


def _mean_over(values, keep):
    """Mean of `values` where `keep` (0, with a zero gradient, where nothing is kept)."""
    return torch.where(keep, values, 0.0).sum() / keep.sum().clamp_min(1)


def tcm_from_similarity(sim, targets, *, m_pos: float, m_neg: float, lambda_pos: float, lambda_neg: float):
    """The TCM regulariser of a [B, B] similarity matrix (the module docstring's L_TCM)."""
    pos, neg = pair_masks(targets)
    hard_pos = pos & (sim <= m_pos)
    hard_neg = neg & (sim >= m_neg)
    return lambda_pos * _mean_over(m_pos - sim, hard_pos) + lambda_neg * _mean_over(sim - m_neg, hard_neg)


def tcm(embeddings, targets, *, alpha: float, beta: float, lam: float, epsilon: float, m_pos: float,
        m_neg: float, lambda_pos: float, lambda_neg: float):
    sim = cosine_similarity(embeddings)
    return (ms_from_similarity(sim, targets, alpha=alpha, beta=beta, lam=lam, epsilon=epsilon)
            + tcm_from_similarity(sim, targets, m_pos=m_pos, m_neg=m_neg, lambda_pos=lambda_pos,
                                  lambda_neg=lambda_neg))


def _validate(hp):
    _validate_ms(hp)
    require_nonnegative("tcm", hp, "lambda_pos", "lambda_neg")
    require_in("tcm", hp, "m_pos", -1.0, 1.0, closed_high=True)
    require_in("tcm", hp, "m_neg", -1.0, 1.0, closed_high=True)


def _reference():
    # Worked by hand on multi_similarity's reference batch: unit vectors at 0°, 60° (class 0), 90°, 180°
    # (class 1), MS defaults (its loss there: 0.433814), m⁺ = 0.9, m⁻ = 0.5, λ⁺ = λ⁻ = 1.
    # Positive pairs (each twice): S01 = 0.5, S23 = 0, all ≤ 0.9 → mean(0.4, 0.4, 0.9, 0.9) = 0.65.
    # Negative pairs: S02 = 0, S03 = −1, S12 = cos 30° = 0.866025, S13 = −0.5; only S12 ≥ 0.5 (twice) →
    # 0.366025. L = 0.433814 + 0.65 + 0.366025 = 1.449839.
    kw = dict(**unit_circle_batch([0.0, 60.0, 90.0, 180.0], [0, 0, 1, 1]),
              **MS.defaults, m_pos=0.9, m_neg=0.5, lambda_pos=1.0, lambda_neg=1.0)
    return kw, torch.tensor(1.449839)


SPEC = MethodSpec(
    name="tcm", kind="embedding", fn=tcm,
    defaults={**MS.defaults, "m_pos": 0.9, "m_neg": 0.5, "lambda_pos": 1.0, "lambda_neg": 1.0},
    search={"m_pos": ("choice", 0.7, 0.8, 0.9), "m_neg": ("choice", 0.3, 0.4, 0.5),
            "lambda_pos": ("choice", 0.5, 1.0), "lambda_neg": ("choice", 0.5, 1.0)},
    paper="Zhang et al., ICLR 2024, arXiv:2307.04047", url="https://arxiv.org/abs/2307.04047",
    docs="tcm", version=1, reference=_reference, validate=_validate,
    summary="Multi-Similarity plus a regulariser on hard pairs beyond two fixed cosine margins "
            "(one threshold for every class)",
)
