"""SRPO: Self-Improving Robust Preference Optimization. Choi, Ahmadian, Geist, Pietquin, Azar 2025
(ICLR), arXiv:2406.01660. WORK IN PROGRESS: the loss only; the engine's answer-conditioned
forwards (need `revision_logps`), the SynthPref revision format and the N-revision evaluation are
not built yet, so the method is not registered.

One network plays two policies: the generative policy π(y|x) and the self-improvement policy
π†(y|x, y′), the same LM given the prompt and an earlier answer y′. With summed log-ratios
r(y) = log π(y|x) − log π_ref(y|x) and r†(y|y′) = log π†(y|x,y′) − log π_ref(y|x,y′), the
min-max objective's closed forms give two identities for a preferred y_w over y_l (hard labels,
P(y_w ≻ y_l) = 1; P(y ≻ y) = 1/2):

    β·(r†(y_w|y_l) − r†(y_l|y_l)) = 1/2          β·(r†(y_w|y_w) − r†(y_l|y_w)) = 1/2
    β·(r†(y_w|y_l) + r(y_w) − r†(y_l|y_w) − r(y_l)) = 1

and the offline loss regresses them (IPO-style squares):

    L = (1 − α)·(β·(r†(y_w|y_l) + r(y_w) − r†(y_l|y_w) − r(y_l)) − 1)²
        + α·[(1/2 − β·(r†(y_w|y_l) − r†(y_l|y_l)))² + (1/2 − β·(r†(y_w|y_w) − r†(y_l|y_w)))²]

No official code exists; α = 0.8 and β = 0.1 are an unmerged TRL port's values (the paper's own are
unconfirmed), and the identities are re-derived here from the min-max objective.
"""
import torch

from lossbench.methods.base import PairBatch


def _ratio(batch: PairBatch, pair: str):
    return getattr(batch, f"policy_rev_{pair}").float() - getattr(batch, f"ref_rev_{pair}").float()


def srpo_terms(batch: PairBatch, *, beta: float):
    """(generative residual, self-improvement residuals given y_l and given y_w) [B] each: zero at the optimum."""
    r_w = batch.policy_chosen.float() - batch.ref_chosen.float()
    r_l = batch.policy_rejected.float() - batch.ref_rejected.float()
    wl, ll, ww, lw = (_ratio(batch, p) for p in ("wl", "ll", "ww", "lw"))
    generative = beta * (wl + r_w - lw - r_l) - 1.0
    return generative, 0.5 - beta * (wl - ll), 0.5 - beta * (ww - lw)


def srpo_loss(batch: PairBatch, *, beta: float, alpha: float):
    generative, given_l, given_w = srpo_terms(batch, beta=beta)
    return (1 - alpha) * generative ** 2 + alpha * (given_l ** 2 + given_w ** 2)
