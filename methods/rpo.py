"""RPO (DPO + SFT regulariser). Liu et al. 2024, "Provably Mitigating Overoptimization in RLHF: Your SFT
Loss is Implicitly an Adversarial Regularizer", NeurIPS 2024, arXiv:2405.16436.

docs/methods/rpo.md: `L = L_DPO(β) + η·L_SFT` with `L_SFT = −log π_θ(y_w|x)` on the
chosen response (the baseline distribution). The official repo has two variants, selected by `sft`:
"sum" (cumulative NLL over response tokens, the alignment-handbook code) and "mean" (token-average NLL,
the OpenRLHF code and TRL's `sft` term). We default to "mean" so η does not grow with response length.

Over a batch the two "mean" codes differ (`nll_reduction`, used with sft = "mean" only):

- "pair_mean" (default): each pair's term is −log π(y_w)/|y_w|, and the trainer's batch mean averages
  those per-pair means, (1/B)·Σ_i −log π(y_w,i)/|y_w,i|. This is the official repo's OpenRLHF code (the
  negated batch mean of per-sequence mean log-probs), so it stays the default.
- "token_mean": every chosen token of the batch weighs the same, Σ_i −log π(y_w,i) / Σ_i |y_w,i|: a
  cross-entropy over the batch's flattened chosen tokens, as TRL's `sft` / `rpo_alpha` term computes it.
  The per-pair term is −log π(y_w,i)/mean_j |y_w,j|, so that the trainer's batch mean is exactly that
  ratio (the per-pair values then depend on the batch's lengths; their mean is what is optimised).

Defaults: η = 0.005 (both official recipes). β = 0.1 is the suite's DPO default; the paper's recipes used
β = 0.01 ("beta" series) and β = 0.05 ("gemma" series), both in the search grid. Whether the paper's η also
multiplies β is **unverified**; here η multiplies the NLL alone.
"""
import math

import torch

from lossbench.methods.base import MethodSpec, PairBatch, require_choice, require_nonnegative, require_positive
from lossbench.methods.dpo import dpo_loss, per_token, reference_pair

SFT_VARIANTS = ("sum", "mean")
NLL_REDUCTIONS = ("pair_mean", "token_mean")


def rpo_loss(batch: PairBatch, *, beta: float, eta: float, sft: str, nll_reduction: str = "pair_mean"):
    if sft == "sum":
        nll = -batch.policy_chosen.float()
    elif nll_reduction == "token_mean":  # batch mean of this = Σ_i −log π(y_w,i) / Σ_i |y_w,i|
        nll = -batch.policy_chosen.float() / batch.chosen_len.float().mean().clamp_min(1)
    else:
        nll = -per_token(batch.policy_chosen, batch.chosen_len)
    return dpo_loss(batch, beta=beta) + eta * nll


def _validate(hp):
    require_positive("rpo", hp, "beta")
    require_nonnegative("rpo", hp, "eta")
    if hp["sft"] not in SFT_VARIANTS:
        raise ValueError(f"rpo: sft must be one of {SFT_VARIANTS}, got {hp['sft']!r}")
    require_choice("rpo", hp, "nll_reduction", NLL_REDUCTIONS)
    if hp["sft"] == "sum" and hp["nll_reduction"] != "pair_mean":
        raise ValueError("rpo: nll_reduction='token_mean' weights the token-average NLL (sft='mean'); "
                         "sft='sum' is already a per-token sum")


def _reference():
    # DPO part: h = (-1 + 2) - (-3 + 2.5) = 1.5, ℓ(0.15) = log(1 + e^-0.15) = 0.620957;
    # "mean" SFT: -(-1)/4 = 0.25, times η = 0.005 -> 0.00125; total 0.622207.
    batch = reference_pair()
    return (dict(batch=batch, beta=0.1, eta=0.005, sft="mean", nll_reduction="pair_mean"),
            torch.tensor([math.log1p(math.exp(-0.15)) + 0.00125]))


SPEC = MethodSpec(
    name="rpo", kind="pairwise", fn=rpo_loss, defaults={"beta": 0.1, "eta": 0.005, "sft": "mean",
                                                               "nll_reduction": "pair_mean"},
    search={"beta": ("choice", 0.01, 0.05, 0.1), "eta": ("choice", 0.001, 0.005, 0.02, 0.1)},
    paper="Liu et al. 2024, arXiv:2405.16436", url="https://arxiv.org/abs/2405.16436", docs="rpo",
    reference=_reference, validate=_validate,
    summary="DPO plus η-weighted token-average NLL of the chosen response, β = 0.1, η = 0.005",
)
