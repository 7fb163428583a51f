"""Curriculum sample weights: hard samples down-weighted early, annealed linearly to uniform.

MacAvaney, Nardini, Perego, Tonellotto, Goharian, Frieder, "Training Curricula for Open Domain
Answer Re-Ranking", SIGIR 2020, arXiv:2004.14269 (docs/methods/curriculum.md).

Verified in the authors' OpenNIR trainers (Georgetown-IR-Lab/OpenNIR@49bf6b0,
onir/trainers/pointwise_cl.py and pairwise_cl.py): a difficulty heuristic D ∈ [0, 1] (1 = easy)
gives the weight W = D·(1 − p) + p with p = epoch / eoc_epoch, and 1 from eoc_epoch on (code
default eoc_epoch = 20), so the curriculum interpolates linearly from the heuristic to uniform.
The heuristics are static retrieval signals (the answer's BM25 reciprocal rank, normalised score
or a KDE score); the abstract's "down-weights difficult samples early in the training process ...
gradually shifts to weighting all samples equally" is the schedule. Note: both trainers multiply
the already mean-reduced batch loss by the batch *mean* of W, so the released code rescales whole
batches; we weight samples, as the abstract describes.

Adaptation here, where no retrieval score exists: D is the easiness of each sequence in its batch
by its current (detached) loss, D_i = 1 − (ℓ_i − ℓ_min) / max(ℓ_max − ℓ_min, 1e−6), and p is the
fraction of training done over `anneal`, continuous rather than per epoch. Weights are normalised
to sum 1, so the loss scale stays that of the token mean (the code's mean W < 1 also lowers the
effective learning rate early).
`anneal` = 0.5 is our default: the paper's end-of-curriculum point for our budgets is unverified.
"""
import torch

from lossbench.methods.base import MethodSpec, require_in


def curriculum_weights(sample_losses, *, progress: float, anneal: float):
    """Detached weights [N] summing to 1 (float32); uniform once progress >= anneal."""
    loss = sample_losses.detach().double()
    lo = loss.min()
    easiness = 1 - (loss - lo) / torch.clamp(loss.max() - lo, min=1e-6)  # equal losses: all 1
    t = min(progress / anneal, 1.0) if anneal > 0 else 1.0
    w = easiness * (1 - t) + t  # the paper's W = D·(1 − p) + p
    return (w / w.sum()).float()


def _validate(hp):
    require_in("curriculum", hp, "anneal", 0, 1, closed_high=True)


def _reference():
    # Losses [1, 2, 3] -> D = [1, 0.5, 0]; progress 0.25 of anneal 0.5 -> t = 0.5, W = D/2 + 1/2
    # = [1, 0.75, 0.5], sum 2.25 -> [0.444444, 0.333333, 0.222222] (by hand).
    kw = dict(sample_losses=torch.tensor([1.0, 2.0, 3.0]), progress=0.25, anneal=0.5)
    return kw, torch.tensor([4 / 9, 3 / 9, 2 / 9])


SPEC = MethodSpec(
    name="curriculum", kind="sample_weight", fn=curriculum_weights, defaults={"anneal": 0.5},
    search={"anneal": ("choice", 0.25, 0.5, 0.75)},
    paper="MacAvaney et al. SIGIR 2020 (Training Curricula), arXiv:2004.14269",
    url="https://arxiv.org/abs/2004.14269", docs="curriculum",
    reference=_reference, validate=_validate,
    summary="curriculum: high-loss sequences down-weighted early, linearly annealed to uniform by 50 % of training",
)
