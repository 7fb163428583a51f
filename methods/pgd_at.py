"""PGD adversarial training (Madry et al., ICLR 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks", arXiv:1706.06083): CE on ℓ∞ PGD examples. The baseline of the adversarial
methods (docs/methods/pgd_at.md); the trainer crafts the examples
under the protocol's `attack` (lossbench/adversarial.py), this module only scores them.
"""
import torch

from lossbench.methods.base import MethodSpec
from lossbench.methods.erm import cross_entropy


def pgd_at(logits, targets):
    """Per-example CE of the adversarial logits."""
    return cross_entropy(logits, targets)


def _reference():
    # the CE of z = [2, 0], y = 0 (card notation): log(1 + e^-2) = 0.126928
    return dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0])), torch.tensor([0.126928])


SPEC = MethodSpec(
    name="pgd_at", kind="adversarial", fn=pgd_at, defaults={},
    paper="Madry et al. 2018, arXiv:1706.06083", url="https://arxiv.org/abs/1706.06083", docs="pgd_at",
    reference=_reference, summary="PGD adversarial training: CE on ℓ∞ PGD examples",
)
