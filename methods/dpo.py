"""Direct Preference Optimization. Rafailov et al. 2023, arXiv:2305.18290, eq. (7).

docs/methods/dpo.md. `L = softplus(-β h)` with the margin of sequence
log-ratios `h = Δ(y_w) − Δ(y_l)`, `Δ(y) = log π_θ(y|x) − log π_ref(y|x)` (summed over response
tokens). The helpers here are the shared vocabulary of the DPO family: other modules build on them.
"""
import math

import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, PairBatch, require_positive


def log_ratios(batch: PairBatch):
    """(Δ(y_w), Δ(y_l)) in float32."""
    return (batch.policy_chosen.float() - batch.ref_chosen.float(),
            batch.policy_rejected.float() - batch.ref_rejected.float())


def dpo_margin(batch: PairBatch):
    """h = Δ(y_w) − Δ(y_l)."""
    chosen, rejected = log_ratios(batch)
    return chosen - rejected


def per_token(total, length):
    """A summed log-prob or log-ratio as a per-token average; an empty response divides by 1, not 0."""
    return total.float() / length.float().clamp_min(1)


def token_log_ratios(batch: PairBatch):
    """Per-token (ρ(y_w), ρ(y_l)), ρ_t = log π_θ(y_t|s_t) − log π_ref(y_t|s_t): [B, T] in float32, padding
    included (mask it with `masked_token_sum`)."""
    return (batch.policy_chosen_tok.float() - batch.ref_chosen_tok.float(),
            batch.policy_rejected_tok.float() - batch.ref_rejected_tok.float())


def masked_token_sum(values, weights, response):
    """Σ_t weights_t · values_t over response tokens ([B, T] → [B], float32). Both factors are zeroed at
    padding before the product, so non-finite padding values give neither NaN sums nor NaN gradients."""
    r = response.bool()
    return (torch.where(r, weights.float(), 0.0) * torch.where(r, values.float(), 0.0)).sum(-1)


def normalised_margin(batch: PairBatch):
    """h̄ = Δ(y_w)/|y_w| − Δ(y_l)/|y_l|."""
    chosen, rejected = log_ratios(batch)
    return per_token(chosen, batch.chosen_len) - per_token(rejected, batch.rejected_len)


def logistic_loss(z):
    """ℓ(z) = −log σ(z) = softplus(−z), stable for large |z|."""
    return F.softplus(-z)


def reference_pair() -> PairBatch:
    """The family's hand-worked pair, shared by the `_reference()` checks: log π_θ = (−1, −3),
    log π_ref = (−2, −2.5), so Δ(y_w) = 1, Δ(y_l) = −0.5, h = 1.5; lengths 4 and 5. Add fields a method
    needs with `dataclasses.replace(reference_pair(), rm_margin=...)`."""
    return PairBatch(policy_chosen=torch.tensor([-1.0]), policy_rejected=torch.tensor([-3.0]),
                     ref_chosen=torch.tensor([-2.0]), ref_rejected=torch.tensor([-2.5]),
                     chosen_len=torch.tensor([4.0]), rejected_len=torch.tensor([5.0]))


def dpo_loss(batch: PairBatch, *, beta: float):
    return logistic_loss(beta * dpo_margin(batch))


def _validate(hp):
    require_positive("dpo", hp, "beta")


def _reference():
    # Δ(y_w) = -1 - (-2) = 1, Δ(y_l) = -3 - (-2.5) = -0.5, h = 1.5; β = 0.1:
    # softplus(-0.15) = log(1 + e^-0.15) = 0.620957.
    batch = reference_pair()
    return dict(batch=batch, beta=0.1), torch.tensor([math.log1p(math.exp(-0.15))])


DPO = MethodSpec(
    name="dpo", kind="pairwise", fn=dpo_loss, defaults={"beta": 0.1},
    search={"beta": ("choice", 0.03, 0.1, 0.3, 1.0)},
    paper="Rafailov et al. 2023, arXiv:2305.18290", url="https://arxiv.org/abs/2305.18290", docs="dpo",
    reference=_reference, validate=_validate,
    summary="logistic loss on the margin of policy/reference log-ratios, β = 0.1",
)
