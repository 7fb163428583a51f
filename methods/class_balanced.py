"""Class-balanced upweighting: inverse frequency, effective number, and deferred re-weighting (DRW).

Effective number: Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of Samples",
arXiv:1901.05555, class-balanced weight w_k ∝ (1 - β) / (1 - β^{n_k}) (inverse effective number).
DRW: Cao et al. 2019, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
arXiv:1906.07413, Alg. 1: weights are all 1 until a late epoch (160 of 200 in the LDAM-DRW code),
then effective-number weights with β = 0.9999. docs/methods/class_balanced.md.

Class weights are normalised so that Σ_k w_k = K, as in the LDAM-DRW code. The per-example weight
is w_{y_i}; the trainer takes the batch mean of w_i·CE_i, i.e. divides by the batch size B. The two
sources reduce differently, so `reduction` says which divisor the batch's weighted loss gets:

- "batch": Σ_i w_{y_i}·CE_i / B, the weights as above. The class-balanced loss code (Cui et al.,
  softmax CE through tf.losses.softmax_cross_entropy with per-example weights, whose default
  reduction divides by the number of nonzero weights = B) does this: the default of cb_inverse and
  cb_effective.
- "weight_sum": Σ_i w_{y_i}·CE_i / Σ_i w_{y_i}, as the LDAM-DRW code's nn.CrossEntropyLoss(weight=w)
  mean does: the default of drw. The returned weights are rescaled per batch by B/Σ_i w_{y_i} (still
  detached), so the trainer's batch mean is that ratio. It matters: on CIFAR-10-LT ρ = 100 the
  effective-number weights of a batch average 0.171, so under SGD "batch" turns the DRW switch into a
  ~6× cut of the step size as well as a reweighting; "weight_sum" keeps the loss scale.

drw is version 2 since its default became "weight_sum" (issue 16; version 1 divided by B).
Classes with zero count get weight 0 and the present classes share the total K (the card does not
cover empty classes; the formula would divide by zero there).
"""
import math

import torch

from lossbench.methods.base import MethodSpec, per_counts, require_choice, require_in

REDUCTIONS = ("batch", "weight_sum")


@per_counts
def class_weights(class_counts, *, beta: float):
    """Effective-number class weights [K], Σ_k w_k = K; β = 1 is inverse frequency (its limit)."""
    n = class_counts.double()  # float64: β^n with β = 0.9999 and n ~ 5000 loses digits in float32
    present = n > 0
    safe_n = torch.where(present, n, torch.ones_like(n))  # empty classes are zeroed below
    if beta >= 1.0:
        raw = 1.0 / safe_n
    else:
        # The constant (1 - β) cancels in the normalisation; 1 - β^n = -expm1(n log β) keeps its
        # digits as β -> 1, and β = 0 gives log β = -inf, i.e. 1 - β^n = 1 (uniform).
        log_beta = math.log(beta) if beta > 0 else -math.inf
        raw = 1.0 / (-torch.expm1(safe_n * log_beta)).clamp_min(1e-300)
    raw = torch.where(present, raw, torch.zeros_like(raw))
    return (raw * (n.numel() / raw.sum().clamp_min(1e-300))).float()


def reduce_weights(w, reduction: str):
    """Per-example weights for the trainer's batch mean: as they are ("batch"), or times B/Σ_i w_i so
    the mean of w·CE is Σ w·CE / Σ w ("weight_sum"; a batch of zero weights stays zero)."""
    if reduction == "weight_sum":
        total = w.sum()
        return (w * (w.numel() / torch.where(total > 0, total, torch.ones_like(total)))).detach()
    if reduction != "batch":
        raise ValueError(f"class-balanced: unknown reduction {reduction!r}; valid: {REDUCTIONS}")
    return w.detach()


def inverse_frequency(targets, *, class_counts, reduction: str = "batch"):
    return reduce_weights(class_weights(class_counts, beta=1.0).to(targets.device)[targets], reduction)


def effective_number(targets, *, class_counts, beta: float, reduction: str = "batch"):
    return reduce_weights(class_weights(class_counts, beta=beta).to(targets.device)[targets], reduction)


def deferred_reweighting(targets, *, class_counts, progress: float, beta: float, switch: float,
                         reduction: str = "weight_sum"):
    if progress < switch:  # unweighted: both reductions divide by B
        return torch.ones(targets.shape, dtype=torch.float32, device=targets.device)
    return effective_number(targets, class_counts=class_counts, beta=beta, reduction=reduction)


def _validate_reduction(hp):
    require_choice("class-balanced", hp, "reduction", REDUCTIONS)


def _validate_beta(hp):
    require_in("class-balanced", hp, "beta", 0, 1, closed_high=True)
    _validate_reduction(hp)


def _validate_drw(hp):
    _validate_beta(hp)
    require_in("drw", hp, "switch", 0, 1, closed_high=True)  # a fraction of the training budget


# Worked in float64 for counts [5000, 500, 50] (card C1 unit test).
_COUNTS = [5000.0, 500.0, 50.0]
_INVERSE = [0.02702703, 0.27027027, 2.7027027]  # (1/n) * 3 / Σ(1/n) = [1, 10, 100] * 3/111
_EFFECTIVE = [0.03410736, 0.27516723, 2.69072541]  # 1/(1 - 0.9999^n), scaled to sum 3


def _ref_inverse():
    kw = dict(targets=torch.tensor([0, 1, 2, 2]), class_counts=torch.tensor(_COUNTS))
    return kw, torch.tensor(_INVERSE + _INVERSE[2:])


def _ref_effective():
    kw = dict(targets=torch.tensor([0, 1, 2, 2]), class_counts=torch.tensor(_COUNTS), beta=0.9999)
    return kw, torch.tensor(_EFFECTIVE + _EFFECTIVE[2:])


def _ref_drw():
    # progress exactly at the switch: epoch 160 of 200 already uses the effective-number weights.
    # One example per class: Σ_i w_i = K = B, so "weight_sum" leaves the class weights as they are.
    kw = dict(targets=torch.tensor([0, 1, 2]), class_counts=torch.tensor(_COUNTS), progress=0.8,
              beta=0.9999, switch=0.8, reduction="weight_sum")
    return kw, torch.tensor(_EFFECTIVE)


_CUI = "Cui et al. 2019, arXiv:1901.05555"
_CUI_URL = "https://arxiv.org/abs/1901.05555"

INVERSE = MethodSpec(
    name="cb_inverse", kind="reweight", fn=inverse_frequency, defaults={"reduction": "batch"},
    paper=_CUI, url=_CUI_URL, docs="class_balanced", version=1,
    reference=_ref_inverse, needs=("class_counts",), validate=_validate_reduction,
    summary="weights each example by 1/n_y, class weights normalised to sum K",
)

EFFECTIVE = MethodSpec(
    name="cb_effective", kind="reweight", fn=effective_number, defaults={"beta": 0.9999, "reduction": "batch"},
    search={"beta": ("choice", 0.9, 0.99, 0.999, 0.9999)},
    paper=_CUI, url=_CUI_URL, docs="class_balanced", version=1,
    reference=_ref_effective, needs=("class_counts",), validate=_validate_beta,
    summary="weights each example by the inverse effective number (1-β)/(1-β^n_y), sum K",
)

DRW = MethodSpec(
    name="drw", kind="reweight", fn=deferred_reweighting,
    defaults={"beta": 0.9999, "switch": 0.8, "reduction": "weight_sum"},
    search={"beta": ("choice", 0.99, 0.999, 0.9999), "switch": ("choice", 0.6, 0.7, 0.8, 0.9)},
    paper="Cao et al. 2019 (LDAM-DRW), arXiv:1906.07413", url="https://arxiv.org/abs/1906.07413",
    docs="class_balanced", version=2, reference=_ref_drw, needs=("class_counts", "progress"),
    validate=_validate_drw,
    summary="unweighted until progress >= switch (epoch 160/200), then effective-number weights",
)
