"""TGDPO: token-level reward guidance for DPO. Zhu et al., ICML 2025, "TGDPO: Harnessing Token-Level
Reward Guidance for Enhancing Direct Preference Optimization", arXiv:2506.14574; code
dvlab-research/TGDPO (LLaMA-Factory based).

docs/methods/tgdpo.md. A frozen guidance policy π_g gives a token reward
`r̂_t(y) = β (log π_g(y_t|s_t) − log π_ref(y_t|s_t))`, which rescales each token's log-ratio ρ_t:

    L = ℓ( Σ_t β (1 + α r̂_t(y_w)) ρ_t(y_w) − Σ_t β (1 − α r̂_t(y_l)) ρ_t(y_l) )

Tokens the guide prefers in y_w, and tokens it dislikes in y_l, get a larger effective β. Checked
against the official trainer's "sigmoid" branch (stored copy, read with the search tool): same
expression, summed over the token axis; the guide and reference run without gradients, so r̂ is
detached here. The code does not clip the weights: they can go negative for large |r̂|; the trainer
may log that fraction (`token_weights` returns them).
"""
import math

import torch

from lossbench.methods.base import MethodSpec, PairBatch, require_nonnegative, require_positive
from lossbench.methods.dpo import logistic_loss, masked_token_sum, token_log_ratios


def token_weights(batch: PairBatch, *, beta: float, alpha: float):
    """Detached per-token weights (β(1 + α r̂(y_w)), β(1 − α r̂(y_l))), each [B, T]."""
    with torch.no_grad():
        r_w = beta * (batch.guide_chosen_tok.float() - batch.ref_chosen_tok.float())
        r_l = beta * (batch.guide_rejected_tok.float() - batch.ref_rejected_tok.float())
        return beta * (1 + alpha * r_w), beta * (1 - alpha * r_l)


def tgdpo_loss(batch: PairBatch, *, beta: float, alpha: float):
    w_w, w_l = token_weights(batch, beta=beta, alpha=alpha)
    rho_w, rho_l = token_log_ratios(batch)
    # masked_token_sum zeroes padding in both factors: non-finite padding values can't leak NaN into grads
    return logistic_loss(masked_token_sum(rho_w, w_w, batch.chosen_mask)
                         - masked_token_sum(rho_l, w_l, batch.rejected_mask))


def _validate(hp):
    require_positive("tgdpo", hp, "beta")
    require_nonnegative("tgdpo", hp, "alpha")


def _reference():
    # β = α = 0.5; two response tokens each, third position is padding (garbage values).
    # y_w: ρ = [-1+1.5, -2+1] = [0.5, -1];  r̂ = 0.5·([-0.5, -1] - [-1.5, -1]) = [0.5, 0]
    #      weights 0.5·(1 + 0.5·r̂) = [0.625, 0.5];  Σ = 0.3125 - 0.5 = -0.1875
    # y_l: ρ = [-2+1, -1+1.5] = [-1, 0.5];  r̂ = 0.5·([-3, -1.5] - [-1, -1.5]) = [-1, 0]
    #      weights 0.5·(1 - 0.5·r̂) = [0.75, 0.5];  Σ = -0.75 + 0.25 = -0.5
    # ℓ(-0.1875 + 0.5) = ℓ(0.3125) = log(1 + e^-0.3125) = log(1.7316156) = 0.5490549.
    t = torch.tensor
    batch = PairBatch(
        policy_chosen=t([-3.0]), policy_rejected=t([-3.0]), ref_chosen=t([-2.5]), ref_rejected=t([-2.5]),
        chosen_len=t([2.0]), rejected_len=t([2.0]),
        policy_chosen_tok=t([[-1.0, -2.0, 4.0]]), ref_chosen_tok=t([[-1.5, -1.0, -7.0]]),
        policy_rejected_tok=t([[-2.0, -1.0, 4.0]]), ref_rejected_tok=t([[-1.0, -1.5, -7.0]]),
        guide_chosen_tok=t([[-0.5, -1.0, 3.0]]), guide_rejected_tok=t([[-3.0, -1.5, 3.0]]),
        chosen_mask=t([[1.0, 1.0, 0.0]]), rejected_mask=t([[1.0, 1.0, 0.0]]),
    )
    return dict(batch=batch, beta=0.5, alpha=0.5), torch.tensor([math.log1p(math.exp(-0.3125))])


SPEC = MethodSpec(
    name="tgdpo", kind="pairwise", fn=tgdpo_loss,
    # official example config (examples/llama3_8b_instruct_tgdpo.yaml): pref_beta 0.1, tgdpo_alpha 0.5
    defaults={"beta": 0.1, "alpha": 0.5},
    search={"beta": ("choice", 0.03, 0.1, 0.3), "alpha": ("choice", 0.2, 0.5, 1.0)},
    paper="Zhu et al. 2025 (ICML), arXiv:2506.14574", url="https://arxiv.org/abs/2506.14574", docs="tgdpo",
    version=1, reference=_reference, needs=("token_logps", "guide_token_logps"), validate=_validate,
    summary="DPO with per-token β scaled by a frozen guide policy's token reward, α = 0.5",
)
