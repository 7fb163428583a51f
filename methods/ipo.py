"""Identity Preference Optimisation (IPO). Azar et al. 2023, "A General Theoretical Paradigm to Understand
Learning from Human Preferences", arXiv:2310.12036 (sampled IPO loss).

docs/methods/ipo.md: `L = (h̄ − 1/(2τ))²`. As in TRL (whose docs say the IPO authors
confirmed it), `h̄` is the margin of *length-averaged* log-ratios `Δ(y)/|y|`, not of sums. Regressing
the margin onto a finite target is what stops IPO from driving `h → ∞` the way DPO can on
deterministic preferences. τ is TRL's `beta`; here it is called `tau`.

Default τ = 0.1 is the usual TRL `beta` value, and the grid {0.01, 0.1, 0.5, 1.0} is from common
reproductions (**unverified**): the paper's experiments are illustrative, not LLM runs.
"""
import torch

from lossbench.methods.base import MethodSpec, PairBatch, require_positive
from lossbench.methods.dpo import normalised_margin, reference_pair


def ipo_loss(batch: PairBatch, *, tau: float):
    return (normalised_margin(batch) - 1.0 / (2.0 * tau)) ** 2


def _validate(hp):
    require_positive("ipo", hp, "tau")


def _reference():
    # Δ(y_w) = -1 - (-2) = 1 over 4 tokens, Δ(y_l) = -3 - (-2.5) = -0.5 over 5 tokens: h̄ = 0.25 + 0.1 = 0.35.
    # τ = 0.1: target 1/(2τ) = 5, loss (0.35 - 5)² = 4.65² = 21.6225.
    batch = reference_pair()
    return dict(batch=batch, tau=0.1), torch.tensor([21.6225])


SPEC = MethodSpec(
    name="ipo", kind="pairwise", fn=ipo_loss, defaults={"tau": 0.1},
    search={"tau": ("choice", 0.01, 0.1, 0.5, 1.0)},
    paper="Azar et al. 2023, arXiv:2310.12036", url="https://arxiv.org/abs/2310.12036", docs="ipo",
    reference=_reference, validate=_validate,
    summary="squared loss pulling the length-averaged log-ratio margin to 1/(2τ), τ = 0.1",
)
