"""SparsePO. Christopoulou et al. 2024, "SparsePO: Controlling Preference Alignment of LLMs via Sparse
Token Masks", arXiv:2410.05102 (Findings of EMNLP 2025); code huawei-noah/HEBO/SparsePO.

docs/methods/sparsepo.md. A TDPO-1 objective whose per-token rewards and per-token KL
terms are weighted by non-negative masks (ρ_t, κ_t as in the card's notation):

    u    = Σ_t m^u_t(y_w) ρ_t(y_w) − Σ_t m^u_t(y_l) ρ_t(y_l)
    K(y) = Σ_t m^d_t(y) κ_t(y),   κ_t = KL(π_ref(·|s_t) ‖ π_θ(·|s_t)) ≥ 0
    L    = ℓ(β [u + K(y_w) − K(y_l)]) + λ_u (‖m^u(y_w)‖₁ + ‖m^u(y_l)‖₁) + λ_d (‖m^d(y_w)‖₁ + ‖m^d(y_l)‖₁)

Sign of the KL term, checked against code (search tool, stored copies): TDPO's reference `tdpo_loss`
uses `logits = margin − (rejected_kl − chosen_kl)`, i.e. `+K(y_w) − K(y_l)` with κ = KL(π_ref‖π_θ);
SparsePO's `sparse_trainer.py` stores `Σ_v π_ref (log π_θ − log π_ref) = −κ_t` per token and uses
`−logsigmoid(β (u − d))` with `d = Σ m^d(−κ)(y_w) − Σ m^d(−κ)(y_l)`, which is the same expression.
The card's sign is right.

Departure from the card's literal formula (follows the official trainer): in "common" mode (one mask
for reward and KL, README's `sparse-common`, `rw_kl_independent=False`) the trainer halves both λ
("make up for double adding"), so the penalty is (λ_u + λ_d)/2 · (‖m(y_w)‖₁ + ‖m(y_l)‖₁), not
(λ_u + λ_d) · (…). With the README's HH values λ_u = λ_d = 0.001 that is 0.001 per unit of mask mass.
The ‖·‖₁ run over response tokens only (the trainer multiplies by the loss mask first).

Masks are inputs (`needs="token_masks"`): the mask module runs on the reference model's hidden states
and is a model hook the trainer owns. `SparseTokenMask` below is the paper's learned "simple_all"
architecture for that hook; its outputs carry gradients into this loss through the masked sums and
the λ terms. Mask weight decay (0.01 in the README) is an optimizer setting.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, PairBatch, require_nonnegative, require_positive
from lossbench.methods.dpo import logistic_loss, masked_token_sum, token_log_ratios

MODES = ("common", "indp")


def _l1(mask, response):
    return torch.where(response.bool(), mask.float().abs(), 0.0).sum(-1)


def sparsepo_loss(batch: PairBatch, *, beta: float, lambda_u: float, lambda_d: float, mode: str):
    mu_w, mu_l = batch.mask_u_chosen, batch.mask_u_rejected
    if mode == "common":
        md_w, md_l = mu_w, mu_l  # one mask for reward and KL; the mask_d fields are ignored
    else:
        md_w, md_l = batch.mask_d_chosen, batch.mask_d_rejected
        if md_w is None or md_l is None:
            raise ValueError("sparsepo: mode 'indp' needs mask_d_chosen and mask_d_rejected")
    resp_w, resp_l = batch.chosen_mask, batch.rejected_mask
    rho_w, rho_l = token_log_ratios(batch)
    u = masked_token_sum(rho_w, mu_w, resp_w) - masked_token_sum(rho_l, mu_l, resp_l)
    k_w = masked_token_sum(batch.kl_chosen_tok, md_w, resp_w)
    k_l = masked_token_sum(batch.kl_rejected_tok, md_l, resp_l)
    loss = logistic_loss(beta * (u + k_w - k_l))
    if mode == "common":
        # official trainer: the shared mask would otherwise be penalised twice
        return loss + 0.5 * (lambda_u + lambda_d) * (_l1(mu_w, resp_w) + _l1(mu_l, resp_l))
    return (loss + lambda_u * (_l1(mu_w, resp_w) + _l1(mu_l, resp_l))
            + lambda_d * (_l1(md_w, resp_w) + _l1(md_l, resp_l)))


class SparseTokenMask(nn.Module):
    """The paper's learned mask, "simple_all": for each of L layers h_l [B, T, d] of the *reference*
    model, LayerNorm → Linear(d→1) → ReLU → dropout; then a bias-free Linear(L→1) mixer → ReLU →
    dropout. ReLU makes the output ≥ 0 with exact zeros (the sparsity). Returns [B, T] in float32.

    As in the official `SimpleMaskAllLayers`, one LayerNorm is shared by all layers (the card says
    "per layer"). The trainer aligns positions (the official hook feeds layers 1..L, i.e. without the
    embedding output, at the positions that predict each response token).

    Parameters are drawn from `generator` (never the global RNG), with nn.Linear's default bounds
    U(±1/√fan_in). Dropout defaults to 0: the official config says 0.01, but its trainer runs with
    `disable_dropout=True`, which zeroes every nn.Dropout in the policy, mask heads included
    (they are submodules of the wrapped model). With dropout > 0, training mode needs a generator
    in `forward`.
    """

    def __init__(self, hidden_size: int, num_layers: int, *, generator: torch.Generator,
                 dropout: float = 0.0, eps: float = 1e-5):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"SparseTokenMask: dropout must be in [0, 1), got {dropout}")
        self.num_layers, self.dropout = num_layers, dropout
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

        def uniform(shape, fan_in):
            bound = 1.0 / math.sqrt(fan_in)
            return nn.Parameter((torch.rand(shape, generator=generator, device=generator.device) * 2 - 1) * bound)

        self.layer_weight = uniform((num_layers, hidden_size), hidden_size)  # L stacked Linear(d→1)
        self.layer_bias = uniform((num_layers,), hidden_size)
        self.mixer = uniform((num_layers,), num_layers)  # Linear(L→1, bias=False)

    def _drop(self, x, generator):
        if not self.training or self.dropout == 0.0:
            return x
        if generator is None:
            raise ValueError("SparseTokenMask: dropout in training mode needs a generator")
        keep = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device) >= self.dropout
        return x * keep / (1.0 - self.dropout)

    def forward(self, hidden_states, generator: torch.Generator | None = None):
        if len(hidden_states) != self.num_layers:
            raise ValueError(f"SparseTokenMask: expected {self.num_layers} layers, got {len(hidden_states)}")
        h = torch.stack([self.norm(x.float()) for x in hidden_states], -2)  # [B, T, L, d]
        per_layer = F.relu((h * self.layer_weight).sum(-1) + self.layer_bias)  # [B, T, L]
        mixed = F.relu((self._drop(per_layer, generator) * self.mixer).sum(-1))  # [B, T]
        return self._drop(mixed, generator)


def _validate(hp):
    require_positive("sparsepo", hp, "beta")
    require_nonnegative("sparsepo", hp, "lambda_u", "lambda_d")
    if hp["mode"] not in MODES:
        raise ValueError(f"sparsepo: mode must be one of {MODES}, got {hp['mode']!r}")


def _reference():
    # One pair, T = 3; the rejected response has 2 tokens (third position is padding, garbage values).
    # y_w: ρ = [-1+1.5, -2+1.5, -0.5+1] = [0.5, -0.5, 0.5], m = [1, 0, 2]  -> Σ mρ = 0.5 + 0 + 1.0 = 1.5
    #      κ = [0.1, 0.2, 0.3]                                            -> K   = 0.1 + 0 + 0.6 = 0.7
    # y_l: ρ = [-2+1, -1+1] = [-1, 0], m = [0.5, 3]                      -> Σ mρ = -0.5
    #      κ = [0.4, 0.1]                                                 -> K   = 0.2 + 0.3 = 0.5
    # u = 1.5 - (-0.5) = 2.0; β = 0.5: β(u + 0.7 - 0.5) = 1.1; ℓ(1.1) = log(1 + e^-1.1) = 0.2873353.
    # common mode, λ_u = 0.01, λ_d = 0.03: (0.01 + 0.03)/2 · (‖m_w‖₁ + ‖m_l‖₁) = 0.02 · (3 + 3.5) = 0.13.
    # Total 0.4173353.
    t = torch.tensor
    batch = PairBatch(
        policy_chosen=t([-3.5]), policy_rejected=t([-3.0]), ref_chosen=t([-4.0]), ref_rejected=t([-2.0]),
        chosen_len=t([3.0]), rejected_len=t([2.0]),
        policy_chosen_tok=t([[-1.0, -2.0, -0.5]]), ref_chosen_tok=t([[-1.5, -1.5, -1.0]]),
        policy_rejected_tok=t([[-2.0, -1.0, 9.0]]), ref_rejected_tok=t([[-1.0, -1.0, 0.0]]),
        chosen_mask=t([[1.0, 1.0, 1.0]]), rejected_mask=t([[1.0, 1.0, 0.0]]),
        kl_chosen_tok=t([[0.1, 0.2, 0.3]]), kl_rejected_tok=t([[0.4, 0.1, 5.0]]),
        mask_u_chosen=t([[1.0, 0.0, 2.0]]), mask_u_rejected=t([[0.5, 3.0, 7.0]]),
    )
    kwargs = dict(batch=batch, beta=0.5, lambda_u=0.01, lambda_d=0.03, mode="common")
    return kwargs, torch.tensor([math.log1p(math.exp(-1.1)) + 0.13])


SPEC = MethodSpec(
    name="sparsepo", kind="pairwise", fn=sparsepo_loss,
    # README table, HH sparse-common: β 0.1, l1_norm_param_u = l1_norm_param_d = 0.001 (IMDb/TL;DR: β 0.8)
    defaults={"beta": 0.1, "lambda_u": 0.001, "lambda_d": 0.001, "mode": "common"},
    search={"beta": ("choice", 0.1, 0.3, 0.8), "lambda_u": ("choice", 0.0, 0.001, 0.01),
            "lambda_d": ("choice", 0.0, 0.001, 0.01)},
    paper="Christopoulou et al. 2024, arXiv:2410.05102", url="https://arxiv.org/abs/2410.05102", docs="sparsepo",
    version=1, reference=_reference, needs=("token_logps", "token_kl", "token_masks"), validate=_validate,
    summary="TDPO-1 with learned sparse per-token masks on rewards and KL, L1 mask penalty",
)
