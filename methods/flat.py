"""FLAT: LLM unlearning via loss adjustment with only forget data. Wang, Wei, Liu, Pang, Liu, Shah,
Bao, Liu, Wei 2025 (ICLR), "LLM Unlearning via Loss Adjustment with Only Forget Data",
arXiv:2410.11143; official code UCSC-REAL/FLAT (`get_contrastive_loss`).

docs/methods/flat.md. For a forget prompt with its forget answer y_f and a template answer y_e
(SynthPref: a filler-only answer, the "I don't know" analogue), P_f and P_e are the policy's mean
token probabilities of the two answers, and FLAT maximises the variational f-divergence bound
g(P_e) − f*(g(P_f)) between them, i.e. minimises

    L = −g(P_e) + f*(g(P_f))

    tv       g = tanh(v)/2,             f*(g) = tanh(v)/2        L = −tanh(P_e)/2 + tanh(P_f)/2  (code default)
    kl       g = v,                     f*(g) = exp(v − 1)       L = −P_e + exp(P_f − 1)
    js       g = log 2 − softplus(−v),  f*(g) = softplus(v) − log 2   L = softplus(−P_e) + softplus(P_f) − 2 log 2
    pearson  g = v,                     f*(g) = v²/4 + v         L = −P_e + P_f²/4 + P_f

No reference model and no weight hyperparameter: the divergence decides how the "learn the template"
and "unlearn the forget answer" gradients are weighted. The official code averages the token
probabilities over the batch (padded length as denominator) before g; lossbench averages over each
answer's own tokens and applies g per example (the engine reduces per-example losses).
"""
import math

import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec

LOG2 = math.log(2.0)
DIVERGENCES = {  # (−g(P_e), f*(g(P_f))) as functions of the mean token probabilities
    "tv": (lambda e: -torch.tanh(e) / 2, lambda f: torch.tanh(f) / 2),
    "kl": (lambda e: -e, lambda f: torch.exp(f - 1)),
    "js": (lambda e: F.softplus(-e) - LOG2, lambda f: F.softplus(f) - LOG2),
    "pearson": (lambda e: -e, lambda f: f * f / 4 + f),
}


def mean_token_probability(tokens, mask):
    """Mean of p(y_t) over each answer's tokens: per-token log-probs and mask [..., T] -> [...]."""
    mask = mask.float()
    return (tokens.float().exp() * mask).sum(-1) / mask.sum(-1).clamp_min(1)


def flat_loss(policy, ref, tokens, mask, *, divergence: str):
    """Per-example FLAT loss [B] from the per-token log-probs of (forget answer, template answer)
    `tokens` [B, 2, T] and their mask. `policy` and `ref` (summed log-probs) are not used: FLAT
    needs no reference model."""
    p = mean_token_probability(tokens, mask)
    template_term, forget_term = DIVERGENCES[divergence]
    return template_term(p[:, 1]) + forget_term(p[:, 0])


def _validate(hp):
    if hp["divergence"] not in DIVERGENCES:
        raise ValueError(f"flat: unknown divergence {hp['divergence']!r}; valid: {sorted(DIVERGENCES)}")


def _reference():
    # forget answer: tokens with p = 0.5 and 0.3 (mask 1, 1, 0) -> P_f = 0.4; template: p = 0.2 -> P_e = 0.2
    # TV: −tanh(0.2)/2 + tanh(0.4)/2 = −0.0986877 + 0.1899882 = 0.0913005
    tokens = torch.log(torch.tensor([[[0.5, 0.3, 1.0], [0.2, 1.0, 1.0]]]))
    mask = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])
    kwargs = dict(policy=tokens[:, 0, :2].sum(-1), ref=torch.zeros(1), tokens=tokens, mask=mask, divergence="tv")
    return kwargs, torch.tensor([(math.tanh(0.4) - math.tanh(0.2)) / 2])


SPEC = MethodSpec(
    name="flat", kind="unlearning", fn=flat_loss, needs=("template_answers",),
    defaults={"divergence": "tv"},  # official config/forget.yaml: Total-Variation
    search={"divergence": ("choice", "tv", "kl", "js", "pearson")},
    paper="Wang et al. 2025, arXiv:2410.11143", url="https://arxiv.org/abs/2410.11143", docs="flat",
    version=1, reference=_reference, validate=_validate,
    summary="unlearning from forget data only: −g(P_template) + f*(g(P_forget)) on mean token probabilities (TV)",
)
