"""Focal loss. Lin et al. 2017, "Focal Loss for Dense Object Detection", arXiv:1708.02002, eq. (5).

docs/methods/focal.md. gamma = 2 is the paper's default (the LDAM-DRW code's
long-tail baseline uses gamma = 1; set it per track if comparing against that table).

Numerics: 1 - p_y is computed as -expm1(log p_y), which keeps it nonzero while p_y is within float32
rounding of 1, and the modulating factor (1 - p_y)^gamma is taken only where 1 - p_y > 0: where it
is exactly 0 (p_y == 1 in float32) the factor is the constant 0^gamma. Without that guard the pow's
derivative gamma·(1 - p_y)^(gamma - 1) is infinite at 0 for 0 < gamma < 1 (a fifth of the search
range U(0, 5)) and the example's gradient is NaN; the true gradient there is 0 to float32 precision.
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_nonnegative


def focal_loss(logits, targets, *, gamma: float):
    logp_y = F.log_softmax(logits.float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    one_minus_p = -torch.expm1(logp_y)  # >= 0; stays > 0 closer to p_y = 1 than 1 - exp(log p_y)
    positive = one_minus_p > 0
    # where 1 - p_y == 0 the factor is the constant 0^gamma (1 for gamma = 0): no infinite pow derivative
    factor = torch.where(positive, torch.where(positive, one_minus_p, 1.0) ** gamma, 0.0 ** gamma)
    return -factor * logp_y


def _validate(hp):
    require_nonnegative("focal", hp, "gamma")


def _reference():
    # z = [2, 0], y = 0: p_y = 0.880797, (1 - p_y)^2 = 0.0142094, times CE 0.126928 = 0.0018036.
    return dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0]), gamma=2.0), torch.tensor([0.0018036])


SPEC = MethodSpec(
    name="focal", kind="loss", fn=focal_loss, defaults={"gamma": 2.0},
    search={"gamma": ("uniform", 0.0, 5.0)},
    paper="Lin et al. 2017, arXiv:1708.02002", url="https://arxiv.org/abs/1708.02002", docs="focal", version=2,
    reference=_reference, validate=_validate,
    summary="down-weights well-classified examples by (1 - p_y)^gamma",
)
