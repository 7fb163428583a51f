"""Logit adjustment (loss and post-hoc) and Balanced Softmax.

Menon et al., "Long-tail learning via logit adjustment", ICLR 2021, arXiv:2007.07314: the
logit-adjusted loss ℓ = CE(z + τ log π, y), and the post-hoc correction, predict
argmax_k z_k − τ log π_k after plain CE training. Ren et al., "Balanced Meta-Softmax for
Long-Tailed Visual Recognition", NeurIPS 2020, arXiv:2007.10740: Balanced Softmax CE(z + log n, y),
which is the τ = 1 LA loss (softmax ignores the constant log N). Card C4 in
docs/methods/logit_adjustment.md (formulas from the card; the papers' equation numbers unchecked).

In the log-prior a zero-count class is counted as one example instead of getting log 0 = −inf
(the reference code adds 1e-12 inside the log for the same reason, which would give an empty class
a +27.6τ bonus at post-hoc prediction). Positive counts are used as given, so every reference
value below is exact.
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, per_counts, require_nonnegative
from lossbench.methods.erm import cross_entropy


@per_counts
def log_prior(class_counts):
    """log π_k [K] in float32, with empty classes counted as one example."""
    n = class_counts.float()
    n = torch.where(n > 0, n, torch.ones_like(n))
    return n.log() - n.sum().log()


def logit_adjusted_loss(logits, targets, *, class_counts, tau: float):
    z = logits.float() + tau * log_prior(class_counts).to(logits.device)
    return F.cross_entropy(z, targets, reduction="none")


def _ce_train(logits, targets, *, tau: float):
    # Post-hoc LA trains with plain CE; tau only matters in `posthoc_predict`.
    return cross_entropy(logits, targets)


def posthoc_predict(logits, class_counts, *, tau: float):
    """Test-time scores z − τ log π: rare classes gain, so the argmax moves toward them."""
    return logits.float() - tau * log_prior(class_counts).to(logits.device)


def _validate(hp):
    require_nonnegative("logit adjustment", hp, "tau")


def _reference():
    # z = [2, 0], π = [0.9, 0.1], τ = 1: adjusted z = [2 + log 0.9, log 0.1] = [1.894639, −2.302585].
    # y = 0: log(1 + e^{−4.197225}) = 0.0149253; y = 1: 4.197225 + 0.0149253 = 4.212150 (float64).
    kw = dict(logits=torch.tensor([[2.0, 0.0], [2.0, 0.0]]), targets=torch.tensor([0, 1]),
              class_counts=torch.tensor([9.0, 1.0]), tau=1.0)
    return kw, torch.tensor([0.0149253, 4.212150])


def _reference_bs():
    # log n = log π + log N, and CE ignores the constant: counts [900, 100] give the LA numbers.
    kw, expected = _reference()
    return {**kw, "class_counts": torch.tensor([900.0, 100.0])}, expected


def _reference_posthoc():
    # Training loss is plain CE: log(1 + e^{−2}) = 0.126928 (card C0).
    kw = dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0]), tau=1.0)
    return kw, torch.tensor([0.126928])


_MENON = "Menon et al. ICLR 2021, arXiv:2007.07314"
_MENON_URL = "https://arxiv.org/abs/2007.07314"

LA_LOSS = MethodSpec(
    name="logit_adjust", kind="loss", fn=logit_adjusted_loss, defaults={"tau": 1.0},
    search={"tau": ("uniform", 0.0, 2.0)},
    paper=_MENON, url=_MENON_URL, docs="logit_adjustment", version=1, reference=_reference,
    needs=("class_counts",), validate=_validate,
    summary="cross-entropy on logits shifted by τ·log prior (logit-adjusted loss)",
)

BALANCED_SOFTMAX = MethodSpec(
    name="balanced_softmax", kind="loss", fn=logit_adjusted_loss, defaults={"tau": 1.0},
    paper="Ren et al. NeurIPS 2020, arXiv:2007.10740", url="https://arxiv.org/abs/2007.10740",
    docs="logit_adjustment", version=1, reference=_reference_bs, needs=("class_counts",), validate=_validate,
    summary="cross-entropy on z + log n_k (Balanced Softmax; equals the τ = 1 LA loss)",
)

POSTHOC = MethodSpec(
    name="posthoc_la", kind="loss", fn=_ce_train, defaults={"tau": 1.0},
    search={"tau": ("uniform", 0.0, 2.0)},
    paper=_MENON, url=_MENON_URL, docs="logit_adjustment", version=1, reference=_reference_posthoc,
    predict=posthoc_predict, validate=_validate,
    summary="plain CE training, predict with z − τ·log prior (post-hoc logit adjustment)",
)
