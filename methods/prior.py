"""PRIOR: token weights from a reference LM's probability of each target token.

Chen, Peng, Zhang, Ji, "Prioritizing Image-Related Tokens Enhances Vision-Language Pre-Training",
arXiv:2505.08971. docs/methods/prior.md (text-only adaptation: the
reference is a short-context, small or bigram LM whose log-probs are precomputed per token).

w_{i,t} ∝ g(p_ref(y_{i,t} | y_{i,<t})) with g decreasing, so tokens the reference finds hard get
more weight; trainer loss Σ w·ℓ / Σ mask. The paper's exact g, exponent, clipping and
normalisation are unverified (card); ours are the card's defaults:
  form "one_minus_p": g(p) = (1 − p)^α, bounded in [0, 1]; α = 0 is plain NTP;
  form "inv_p":       g(p) = min(p^−α, clip), the card's alternative.
Weights are renormalised to mean 1 over the batch's valid tokens, so the loss keeps NTP's scale.
"""
import torch

from lossbench.methods.base import MethodSpec, require_choice, require_nonnegative, require_positive

FORMS = ("one_minus_p", "inv_p")


def prior_weights(ref_logp, mask, *, progress=None, alpha: float, form: str, clip: float):
    """Detached weights [N, T] (float32): 0 off the mask, mean 1 over the masked-in tokens."""
    mask = mask.bool()
    logp = torch.where(mask, ref_logp.detach().double(), 0.0)  # padding may hold -inf or garbage
    if form == "one_minus_p":
        g = (-torch.expm1(logp)).clamp_min(0) ** alpha  # 1 − p without cancellation; 0^0 = 1
    else:
        g = torch.exp(-alpha * logp).clamp(max=clip)
    g = torch.where(mask, g, 0.0)
    total = g.sum()
    # A batch where every valid token has p_ref = 1 carries no signal: fall back to NTP.
    w = g * (mask.sum() / total) if total > 0 else mask.double()
    return w.float()


def _validate(hp):
    require_nonnegative("prior", hp, "alpha")
    require_positive("prior", hp, "clip")
    require_choice("prior", hp, "form", FORMS)


def _reference():
    # p_ref = [0.5, 0.75, 0.9, (masked)], α = 1: g = [0.5, 0.25, 0.1], sum 0.85, three valid tokens,
    # so w = g·3/0.85 = [1.764706, 0.882353, 0.352941], 0 on the masked one (by hand).
    p = torch.tensor([[0.5, 0.75, 0.9, 0.2]])
    kw = dict(ref_logp=p.log(), mask=torch.tensor([[True, True, True, False]]), progress=0.5,
              alpha=1.0, form="one_minus_p", clip=10.0)
    return kw, torch.tensor([[1.764706, 0.882353, 0.352941, 0.0]])


SPEC = MethodSpec(
    name="prior", kind="token_weight", fn=prior_weights,
    defaults={"alpha": 1.0, "form": "one_minus_p", "clip": 10.0},  # clip: our choice, used by "inv_p" only
    search={"alpha": ("choice", 0.5, 1.0, 2.0)},
    paper="Chen et al. 2025 (PRIOR), arXiv:2505.08971", url="https://arxiv.org/abs/2505.08971", docs="prior",
    reference=_reference, validate=_validate,
    summary="token weights (1 − p_ref)^α from a reference LM, renormalised to mean 1 (α = 1)",
)
