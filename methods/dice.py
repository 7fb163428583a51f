"""Self-adjusting Dice loss. Li et al., "Dice Loss for Data-imbalanced NLP Tasks", ACL 2020,
arXiv:1911.02855, Sec. 3 (DSC with the (1 - p)^α self-adjusting factor).

docs/methods/dice.md. Two variants:

- `dice` (SPEC, per-example, the paper's form on the true class): with w = (1 - p_y)^α·p_y,
  ℓ = 1 - (2w + γ)/(w + 1 + γ). α = 0 is plain smoothed Dice. Defaults α = 1, γ = 1, the common
  multi-class re-implementation (the paper's per-task α/γ values are unverified). With α = 1 the loss
  depends on (1 - p_y)p_y and is minimised at p_y = ½, not 1: it limits confidence; argmax stays
  correct for K ≥ 3 because the other classes share the remaining ½ (for K = 2 it is a tie).
- `dice_batch` (DICE_BATCH, batch-level, the official code ShannonAI/dice_loss_for_NLP): per class c over
  the batch, with p̃ = (1 - p)^α·p, ℓ = Σ_c [1 - (2Σ_i p̃_ic y_ic + s)/(Σ_i p̃_ic + Σ_i y_ic + s)]
  (squared terms in the denominator if `square_denominator`). Code defaults: s = 1e-4, α = 0, not
  squared. Departures: the code's OHEM option is not implemented; and in the code's non-squared branch
  with its default mean reduction the intersection is per example while the denominator sums the batch,
  which scales the numerator by 1/B — we use the formula as the code's docstring and the card write it.
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_nonnegative, require_positive


def dice(logits, targets, *, alpha: float, gamma: float):
    p_y = torch.softmax(logits.float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    w = (1.0 - p_y) ** alpha * p_y
    return 1.0 - (2.0 * w + gamma) / (w + 1.0 + gamma)


def dice_batch(logits, targets, *, alpha: float, smooth: float, square_denominator: bool):
    p = torch.softmax(logits.float(), -1)
    p_tilde = (1.0 - p) ** alpha * p
    y = F.one_hot(targets, p.shape[-1]).float()
    inter = (p_tilde * y).sum(0)
    if square_denominator:
        denom = (p_tilde**2).sum(0) + (y**2).sum(0)
    else:
        denom = p_tilde.sum(0) + y.sum(0)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).sum()


def _validate(hp):
    require_nonnegative("dice", hp, "alpha", "gamma")


def _validate_batch(hp):
    require_nonnegative("dice_batch", hp, "alpha")
    require_positive("dice_batch", hp, "smooth")  # the only guard against 0/0 for a class absent from the batch


def _reference():
    # Card C8: z = [2, 0], y = 0, α = γ = 1: p_y = 0.880797, w = 0.119203·0.880797 = 0.104994,
    # 1 - (2w + 1)/(w + 2) = 1 - 1.209988/2.104994 = 0.425182.
    kw = dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0]), alpha=1.0, gamma=1.0)
    return kw, torch.tensor([0.425182])


def _ref_batch():
    # Worked in float64. K = 2, logits [0, z], z = [0.4, -0.4, 0.2, -1.0], y = [1, 0, 1, 0], α = 0,
    # s = 1e-4: p_1 = sigmoid(z) = [0.598688, 0.401312, 0.549834, 0.268941]. Class 1: 1 -
    # (2·1.148522 + s)/(1.818775 + 2 + s) = 0.398476; class 0: 1 - (2·1.329746 + s)/(2.181225 + 2 + s)
    # = 0.363935; sum 0.762412.
    kw = dict(logits=torch.tensor([[0.0, 0.4], [0.0, -0.4], [0.0, 0.2], [0.0, -1.0]]),
              targets=torch.tensor([1, 0, 1, 0]), alpha=0.0, smooth=1e-4, square_denominator=False)
    return kw, torch.tensor(0.762412)


_PAPER = "Li et al., ACL 2020, arXiv:1911.02855"
_URL = "https://arxiv.org/abs/1911.02855"

SPEC = MethodSpec(
    name="dice", kind="loss", fn=dice, defaults={"alpha": 1.0, "gamma": 1.0},
    search={"alpha": ("choice", 0.0, 0.5, 1.0), "gamma": ("choice", 0.1, 1.0)},
    paper=_PAPER, url=_URL, docs="dice", version=1, reference=_reference, validate=_validate,
    summary="per-example self-adjusting Dice on p_y; minimised at p_y = 1/2, limits confidence",
)

DICE_BATCH = MethodSpec(
    name="dice_batch", kind="batch_loss", fn=dice_batch,
    defaults={"alpha": 0.0, "smooth": 1e-4, "square_denominator": False},  # official code defaults
    search={"alpha": ("choice", 0.0, 0.5, 1.0), "square_denominator": ("choice", False, True)},
    paper=_PAPER, url=_URL, docs="dice", version=1, reference=_ref_batch, validate=_validate_batch,
    summary="official batch-level Dice: 1 - soft Dice per class over the batch, summed over classes",
)
