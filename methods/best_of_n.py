"""Best-of-n sampling: no training; each answer is the proxy reward model's favourite of n samples
from π_ref. The inference-time baseline of the RLHF literature (Nakano et al. 2021, WebGPT; Gao,
Schulman, Hilton 2023, "Scaling Laws for Reward Model Overoptimization", arXiv:2210.10760).

docs/methods/best_of_n.md. For n candidates y_1..y_n ~ π_ref(·|x) with proxy scores s_i:

    ŷ = y_{argmax_i s_i}        (first index on ties)
    KL(π_bon ‖ π_ref) = log n − (n − 1)/n      (the analytic value the literature plots against)

The method's `fn` is the selection rule; the engine draws the candidates and reports the analytic
KL, since the best-of-n policy has no density of its own to score samples with.
"""
import torch

from lossbench.methods.base import MethodSpec
from lossbench.overopt import bon_kl  # noqa: F401  (the KL it reports, shared with the best-of-n curves)


def best_of_n(scores, *, n: int | None = None):
    """Index of the best of n candidates per prompt: scores [P, n] -> [P] (long). Given `n`, the
    scores must have that many columns."""
    scores = torch.as_tensor(scores)
    if n is not None and scores.shape[-1] != n:
        raise ValueError(f"best_of_n: {scores.shape[-1]} candidates per prompt, expected n = {n}")
    return scores.argmax(-1)


def _validate(hp):
    if int(hp["n"]) != hp["n"] or hp["n"] < 1:
        raise ValueError(f"best_of_n: n must be a positive integer, got {hp['n']}")


def _reference():
    # argmax per row, first index on a tie
    return dict(scores=torch.tensor([[0.1, 2.0, -1.0], [3.0, 3.0, 1.0]])), torch.tensor([1, 0])


SPEC = MethodSpec(
    name="best_of_n", kind="decoding", fn=best_of_n, defaults={"n": 16},
    search={"n": ("choice", 2, 4, 8, 16, 32, 64, 128, 256)}, needs=("proxy_reward",),
    paper="Gao et al. 2023, arXiv:2210.10760", url="https://arxiv.org/abs/2210.10760", docs="best_of_n",
    version=1, reference=_reference, validate=_validate,
    summary="no training: the proxy RM's best of n π_ref samples; KL = log n − (n−1)/n",
)
