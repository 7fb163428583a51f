"""Self-distillation with ground-truth weighting. Borup & Andersen, NeurIPS 2021, "Even your
Teacher Needs Guidance: Ground-Truth Targets Dampen Regularization Imposed by Self-Distillation"
(arXiv:2102.13088; code Kennethborup/self_distillation). Card C15 in
docs/methods/self_distill.md.

Round r ≥ 1 trains a fresh model of the same architecture on the targets
m = α·onehot(y) + (1 − α)·softmax(f^(r−1)(x)), f^(0) the plain-CE model; the trainer runs round 0
and `rounds` distillation rounds (teacher="self", cost (rounds + 1)× a run). With α = 0 repeated
distillation amplifies the regularisation towards collapse; α > 0 dampens it and converges to a
non-zero limit (paper, kernel-ridge theory; tests/methods/test_distillation.py checks it on the
README's toy).

`target_loss` "ce" (default; the card: CE against m) or "mse", the authors' ResNet loss *(code,
self_distiller.py)*: α·mean_k (p_k − onehot_k)² + (1 − α)·mean_k (p_k − q_k)², p and q the student's
and teacher's softmax (the code's F.mse_loss averages over batch and classes; here over classes,
the trainer averages the batch). That equals mean_k (p_k − m_k)² plus a constant in z.
Defaults: α = 0.6 (README command, ResNet-50 on CIFAR-10); rounds = 2, shortened from the README's
`--distillation-steps 5`, which trains 5 models, the first without a teacher (rounds = 4 here).
The code's L2 term reg_coef·Σ‖θ‖ (unsquared norms) and Adam belong to the protocol, not this loss.
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_choice, require_in, require_positive

TARGET_LOSSES = ("ce", "mse")


def soft_target_ce(logits, targets, *, teacher_logits, alpha: float, target_loss: str):
    """Per-example loss against α·onehot(y) + (1 − α)·softmax(teacher): CE, or the code's MSE."""
    onehot = F.one_hot(targets, logits.shape[-1]).float()
    q = teacher_logits.float().softmax(-1)
    if target_loss == "mse":
        p = logits.float().softmax(-1)
        return alpha * (p - onehot).square().mean(-1) + (1 - alpha) * (p - q).square().mean(-1)
    return -((alpha * onehot + (1 - alpha) * q) * F.log_softmax(logits.float(), -1)).sum(-1)


def _validate(hp):
    require_in("self_distill", hp, "alpha", 0, 1, closed_high=True)
    require_positive("self_distill", hp, "rounds")
    if int(hp["rounds"]) != hp["rounds"]:
        raise ValueError(f"self_distill: rounds must be an integer, got {hp['rounds']}")
    require_choice("self_distill", hp, "target_loss", TARGET_LOSSES)


def _reference():
    # z = [2, 0], teacher [0, 0], y 0, α 0.6: target (0.8, 0.2); −0.8·log 0.880797 − 0.2·log 0.119203
    # = 0.8·0.126928 + 0.2·2.126928 = 0.526928
    return (dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0]), teacher_logits=torch.tensor([[0.0, 0.0]]),
                 alpha=0.6, target_loss="ce"), torch.tensor([0.526928]))


SPEC = MethodSpec(
    name="self_distill", kind="loss", fn=soft_target_ce,
    defaults={"alpha": 0.6, "rounds": 2, "target_loss": "ce"},
    search={"alpha": ("uniform", 0.0, 1.0)}, needs=("teacher_logits",), teacher="self",
    trainer_hparams=("rounds",),
    paper="Borup & Andersen 2021, arXiv:2102.13088", url="https://arxiv.org/abs/2102.13088", docs="self_distill",
    reference=_reference, validate=_validate,
    summary="rounds of self-distillation on α·one-hot + (1 − α)·previous-round softmax targets",
)
