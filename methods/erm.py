"""Cross-entropy (empirical risk minimisation), the baseline of every classification track.

docs/methods/erm.md. No label smoothing.
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec


def cross_entropy(logits, targets):
    """Per-example `-log softmax(z)_y`, computed in float32 whatever the input dtype."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def _reference():
    # -log(e^2 / (e^2 + 1)) = log(1 + e^-2) = 0.126928 (card notation section).
    return dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0])), torch.tensor([0.126928])


SPEC = MethodSpec(
    name="erm", kind="loss", fn=cross_entropy, defaults={},
    paper="cross-entropy baseline", url="https://en.wikipedia.org/wiki/Cross-entropy", docs="erm",
    reference=_reference, summary="plain softmax cross-entropy",
)
