"""SRPO: Self-Improving Robust Preference Optimization. Choi, Ahmadian, Geist, Pietquin, Azar 2025
(ICLR), arXiv:2406.01660. docs/methods/srpo.md.

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
unconfirmed), and the identities are re-derived here from the min-max objective. The engine fills the
answer-conditioned log-probs (need `revision_logps`) through the testbed's revision format
(`preference.revision_prompts`: prompt, earlier answer, EOS, SEP, then the new answer).
"""
from dataclasses import replace

import torch

from lossbench.methods.base import MethodSpec, PairBatch, require_in, require_positive
from lossbench.methods.dpo import reference_pair


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


def _validate(hp):
    require_positive("srpo", hp, "beta")
    require_in("srpo", hp, "alpha", 0.0, 1.0, closed_high=True)


def _reference():
    # The family pair (r(y_w) = 1, r(y_l) = −0.5) with revision log-ratios r†(w|l) = 2, r†(l|l) = 0,
    # r†(w|w) = 1, r†(l|w) = −1 (π_ref −2 everywhere). β = 0.1: generative 0.1·(2 + 1 + 1 + 0.5) − 1 = −0.55;
    # given y_l 0.5 − 0.2 = 0.3; given y_w 0.5 − 0.2 = 0.3. α = 0.8: 0.2·0.3025 + 0.8·(0.09 + 0.09) = 0.2045.
    pol = {"wl": 0.0, "ll": -2.0, "ww": -1.0, "lw": -3.0}
    ref = torch.tensor([-2.0])
    batch = replace(reference_pair(), **{f"policy_rev_{k}": torch.tensor([v]) for k, v in pol.items()},
                    **{f"ref_rev_{k}": ref for k in pol})
    return dict(batch=batch, beta=0.1, alpha=0.8), torch.tensor([0.2045])


SPEC = MethodSpec(
    name="srpo", kind="pairwise", fn=srpo_loss, defaults={"beta": 0.1, "alpha": 0.8},
    search={"beta": ("choice", 0.01, 0.1, 0.5, 1.0)}, needs=("revision_logps",),
    paper="Choi, Ahmadian et al., ICLR 2025, arXiv:2406.01660", url="https://arxiv.org/abs/2406.01660",
    docs="srpo", reference=_reference, validate=_validate,
    summary="squared residuals of the min-max optimum's identities for the generative policy and the "
            "same LM as self-improvement policy (given an earlier answer), α = 0.8, β = 0.1",
)
