"""Focal loss. Lin et al. 2017, "Focal Loss for Dense Object Detection", arXiv:1708.02002, eq. (5).

Card C3 in shared/methods/classification.md. gamma = 2 is the paper's default (the LDAM-DRW code's
long-tail baseline uses gamma = 1; set it per track if comparing against that table).
"""
import torch
import torch.nn.functional as F

from methods.base import MethodSpec, require_nonnegative


def focal_loss(logits, targets, *, gamma: float):
    logp_y = F.log_softmax(logits.float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    return -((1.0 - logp_y.exp()) ** gamma) * logp_y


def _validate(hp):
    require_nonnegative("focal", hp, "gamma")


def _reference():
    # z = [2, 0], y = 0: p_y = 0.880797, (1 - p_y)^2 = 0.0142094, times CE 0.126928 = 0.0018036.
    return dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0]), gamma=2.0), torch.tensor([0.0018036])


SPEC = MethodSpec(
    name="focal", kind="loss", fn=focal_loss, defaults={"gamma": 2.0},
    search={"gamma": ("uniform", 0.0, 5.0)},
    paper="Lin et al. 2017, arXiv:1708.02002", url="https://arxiv.org/abs/1708.02002", card="C3",
    reference=_reference, validate=_validate,
    summary="down-weights well-classified examples by (1 - p_y)^gamma",
)
