"""DLSR: dynamic loss-based sample reweighting.

Sow et al., "Dynamic Loss-Based Sample Reweighting for Improved Large Language Model Pretraining",
ICLR 2025, arXiv:2502.06733. docs/methods/dlsr.md; the steps below were
read in the authors' GPT-2 code (sowmaster/Sample-Level-Loss-Reweighting-ICLR-2025) per the card.

Per batch of N sequences with mean token losses ℓ_i:
  1. min-max normalise to [−δ, δ]: x_i = δ·(2ℓ_i − ℓ_max − ℓ_min) / max(ℓ_max − ℓ_min, 1e−6);
  2. apply a strategy f: LinUpper min(x + δ, δ) (down-weights low-loss samples, code name
     `linupper`), Quadratic 1 − x²/δ² (down-weights both tails, `mid`), Extremes |x| (`extremes`);
  3. w = softmax(f(x) / r): the closed form of the KL-regularised weight choice, r → ∞ uniform.
Before `burn_in` (a fraction of training; the code's 1000 of 20k steps = 5 %) the weights are
uniform, since early losses do not yet separate informative from uninformative samples.
The three strategies are one function with the strategy as a parameter.
"""
import functools

import torch

from lossbench.methods.base import MethodSpec, require_in, require_positive
from lossbench.methods.uniform import uniform_weights

STRATEGIES = {
    "linupper": lambda x, delta: torch.clamp(x + delta, max=delta),
    "quadratic": lambda x, delta: 1 - x.square() / delta**2,
    "extremes": lambda x, delta: x.abs(),
}


def dlsr_weights(sample_losses, *, progress: float, strategy: str, r: float, delta: float, burn_in: float):
    """Detached weights [N] summing to 1 (float32); uniform while progress < burn_in."""
    if progress < burn_in:
        return uniform_weights(sample_losses)
    loss = sample_losses.detach().double()  # float64: the min-max step must not round ties apart
    lo, hi = loss.min(), loss.max()
    x = delta * (2 * loss - hi - lo) / torch.clamp(hi - lo, min=1e-6)
    # softmax subtracts max f before exp, the card's stability step.
    return torch.softmax(STRATEGIES[strategy](x, delta) / r, dim=0).float()


def _validate(hp):
    require_positive("dlsr", hp, "r", "delta")
    require_in("dlsr", hp, "burn_in", 0, 1, closed_high=True)


def _reference(expected):
    # Losses [1, 2, 3] -> x = [−1, 0, 1]; r = 1. LinUpper f = [0, 1, 1]: w = [1, e, e]/(1 + 2e)
    # = [0.15536, 0.42232, 0.42232]; Quadratic f = [0, 1, 0]: [1, e, 1]/(2 + e) = [0.21194, 0.57612,
    # 0.21194]; Extremes f = [1, 0, 1]: [e, 1, e]/(1 + 2e). Card L1 unit test (a), by hand.
    kw = dict(sample_losses=torch.tensor([1.0, 2.0, 3.0]), progress=0.5, r=1.0, delta=1.0, burn_in=0.05)
    return lambda: (kw, torch.tensor(expected))


def _spec(strategy, r, expected, summary):
    return MethodSpec(
        name=f"dlsr_{strategy}", kind="sample_weight", fn=functools.partial(dlsr_weights, strategy=strategy),
        # r: the released GPT-2 configs (card L1 table): Quadratic 1.0 (124 M), Extremes and LinUpper 0.4.
        defaults={"r": r, "delta": 1.0, "burn_in": 0.05},
        search={"r": ("choice", 0.4, 1.0, 3.0), "burn_in": ("choice", 0.05, 0.1)},
        paper="Sow et al. ICLR 2025 (DLSR), arXiv:2502.06733", url="https://arxiv.org/abs/2502.06733",
        docs="dlsr", reference=_reference(expected), validate=_validate, summary=summary,
    )


LINUPPER = _spec("linupper", 0.4, [0.15536, 0.42232, 0.42232],
                 "DLSR LinUpper: softmax(min(x+1, 1)/r) of min-max-normalised sample losses, r = 0.4")
QUADRATIC = _spec("quadratic", 1.0, [0.21194, 0.57612, 0.21194],
                  "DLSR Quadratic: softmax((1 − x²)/r), down-weights both loss tails, r = 1")
EXTREMES = _spec("extremes", 0.4, [0.42232, 0.15536, 0.42232],
                 "DLSR Extremes: softmax(|x|/r), up-weights both loss tails, r = 0.4")
