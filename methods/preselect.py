"""PreSelect: keep the chunks whose loss best predicts which models are better.

Shum et al., "Predictive Data Selection: The Data That Predicts Is the Data That Teaches",
arXiv:2503.00808. docs/methods/preselect.md.

Predictive strength (the card's reconstruction; the paper's exact formula is unverified): order the
M reference checkpoints by held-out score; S(d) is the fraction of checkpoint pairs whose loss on
chunk d is ordered the other way round (the better model has the lower loss), in [0, 1].
  S(d) = (1/Z) Σ_{pairs a, b: score_a < score_b} agree(a, b),  agree = 1 if loss_b(d) < loss_a(d),
                                                                       0 if loss_b(d) > loss_a(d),
Choices of ours, stated because the card leaves them open:
- equal losses count ½ rather than 0, so reversing all losses maps S to 1 − S and a chunk every
  checkpoint finds equally hard scores ½ (no information), not 0; pairs of checkpoints with equal
  scores carry no order and are left out of Z;
- S depends on the losses only through their order, so bits per token, nats per token or bits
  per character give the same S;
- the paper trains a fastText classifier on top/bottom-S documents to score a corpus too large
  for every reference model; here the reference stage scores every pool chunk, so S ranks the pool
  directly (the classifier would only approximate it);
- S takes at most M(M−1)+1 values, so ties are many: they are broken by a permutation drawn from
  the run's selection seed, not by index, which would favour whichever domain comes first in the
  pool. The mask is still a pure function of (features, seed).
"""
import torch

from lossbench.methods.base import MethodSpec
from lossbench.methods.selection import as_float, keep_top


def predictive_strength(ref_losses, ref_scores):
    """S [D] float64 in [0, 1] from losses [D, M] and checkpoint scores [M] (higher = better)."""
    losses, scores = as_float(ref_losses), as_float(ref_scores)
    i, j = torch.triu_indices(len(scores), len(scores), offset=1)
    score_order = torch.sign(scores[j] - scores[i])  # +1: checkpoint j is the better one
    loss_order = torch.sign(losses[:, i] - losses[:, j])  # +1: checkpoint j has the lower loss
    ordered = score_order != 0
    if not bool(ordered.any()):
        raise ValueError("preselect: all reference scores are equal, so no pair of checkpoints is ordered")
    agree = (1 + score_order * loss_order)[:, ordered] / 2  # 1 agree, ½ tied losses, 0 disagree
    return agree.mean(dim=1)


def preselect(*, ratio: float, ref_losses, ref_scores, seed: int):
    """Keep mask [D] of the round(ratio·D) chunks with the highest predictive strength."""
    strength = predictive_strength(ref_losses, ref_scores)
    tiebreak = torch.randperm(len(strength), generator=torch.Generator().manual_seed(int(seed)))
    return keep_top(strength, ratio, tiebreak=tiebreak)


def _reference():
    # Scores [1, 2, 3]. Chunk 0 losses [3, 2, 1] agree on all 3 pairs: S = 1. Chunk 1 [1, 2, 3]: S = 0.
    # Chunk 2 [2, 1, 3]: pairs (1,2) agree, (1,3) and (2,3) disagree: S = 1/3. Chunk 3 [2, 2, 1]:
    # (1,2) tied ½, (1,3) and (2,3) agree: S = 5/6. Ratio 0.5 keeps chunks 0 and 3 (by hand).
    kw = dict(ratio=0.5, ref_losses=torch.tensor([[3.0, 2, 1], [1, 2, 3], [2, 1, 3], [2, 2, 1]]),
              ref_scores=torch.tensor([1.0, 2, 3]), seed=0)
    return kw, torch.tensor([True, False, False, True])


SPEC = MethodSpec(
    name="preselect", kind="selection", fn=preselect, defaults={},
    paper="Shum et al. 2025 (PreSelect), arXiv:2503.00808", url="https://arxiv.org/abs/2503.00808", docs="preselect",
    reference=_reference, needs=("ref_losses", "ref_scores", "seed"),
    summary="PreSelect: keep chunks whose loss ranks the reference checkpoints like their held-out scores",
)
