"""LDR-KL and adaptive ALDR-KL. Zhu, Ying, Yang, "Label Distributionally Robust Losses for Multi-class
Classification: Consistency, Robustness and Adaptivity", ICML 2023, arXiv:2112.14869.

docs/methods/ldr.md. With margins d_k = z_k - z_y + c·1[k≠y],

    LDR-KL:  ℓ_λ = max_{q∈Δ} Σ_k q_k d_k - λ·KL(q ‖ 1/K) = λ·log((1/K) Σ_k exp(d_k/λ)),

computed with logsumexp. λ → 0 gives the Crammer–Singer hinge max(0, max_{k≠y} d_k), λ → ∞ the mean of
d_k, and λ = 1, c = 0 gives CE - log K.

The reference code (Optimization-AI/ICML2023_LDR) normalises the logits first, and the card treats that
as part of the method: LDR uses z ← softplus(z), z ← z / mean_k z ("softplus_mean"); ALDR uses
z ← z / (‖z‖₁/K) ("l1_mean"; softplus first only on CIFAR-100, which is "softplus_mean" again since
softplus outputs are positive). "none" uses raw logits (the card's unit tests).

"softplus_mean" on rows whose every logit is below -20 is computed as K·softmax(z), which is what
softplus(z)/mean softplus(z) equals there (softplus = exp to 1e-9 relative): the formula is then
shift-invariant and so is the loss, however negative the row (a clamp of the mean at 1e-12 used to
change the loss once every logit was below about -27.6, and softplus underflows to 0 below -104).

ALDR-KL keeps a temperature λ_i per training example (state, init λ₀). Each step, as in the code:
q̂ = renormalise(softmax(z̃/λ_i) + 1e-5), KL_i = Σ_k q̂_k log(K q̂_k), λ_i ← λ₀(1 - KL_i/(α log K))
(detached, returned as the new state), loss = LDR-KL at λ_i - (α log K/(2λ₀))(λ_i - λ₀)². So
λ_i ∈ [λ₀(1 - 1/α), λ₀]: confident examples get a smaller temperature (closer to the hinge).

Defaults are the code's: c = 0.1, λ = λ₀ = 10, α = 2 (the λ grid {0.1, 1, 10} is commented out there).
Caveat (card C5, measured on MNIST-1D): λ = 10 with softplus+mean normalisation is strong under label
noise but collapses on clean long-tailed data (balanced accuracy .39 vs .57 for CE at ρ = 10);
tune lam over {0.1, 1, 10} per track.
"""
import math

import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_positive

NORMALIZE = ("softplus_mean", "l1_mean", "none")
_EPS = 1e-12  # guards the l1_mean division (an all-zero row) and ALDR's temperature
# Below this every softplus(z) = log1p(e^z) equals e^z to 1e-9 relative, far under float32 rounding.
_SOFTPLUS_IS_EXP = -20.0


def normalize_logits(z, mode: str):
    """The reference code's output normalisation (see module docstring)."""
    if mode == "none":
        return z
    if mode == "softplus_mean":
        # A row whose largest logit is below -20 has softplus = exp on every entry, so
        # softplus(z)/mean softplus(z) = K·softmax(z): computed that way it is exact (and shift-invariant
        # like the formula) however negative the row, where softplus would underflow or a clamp on the
        # mean would change the loss. Other rows have mean >= softplus(-20)/K > 0: the formula as is.
        sp = F.softplus(z)
        mean = sp.mean(-1, keepdim=True)
        exp_rows = z.amax(-1, keepdim=True) < _SOFTPLUS_IS_EXP
        direct = sp / torch.where(exp_rows, torch.ones_like(mean), mean)
        return torch.where(exp_rows, z.shape[-1] * torch.softmax(z, -1), direct)
    if mode == "l1_mean":
        return z / z.abs().mean(-1, keepdim=True).clamp_min(_EPS)
    raise ValueError(f"ldr: unknown normalize {mode!r}; valid: {NORMALIZE}")


def ldr_kl_value(z, targets, lam, c: float):
    """λ·log((1/K) Σ_k exp(d_k/λ)) per example; `lam` is a float or a per-example tensor [B]."""
    lam = torch.as_tensor(lam, dtype=z.dtype, device=z.device).reshape(-1, 1)
    idx = targets[:, None]
    margin = torch.full_like(z, c).scatter(-1, idx, 0.0)
    d = z - z.gather(-1, idx) + margin
    return (lam * (torch.logsumexp(d / lam, -1, keepdim=True) - math.log(z.shape[-1]))).squeeze(-1)


def ldr_kl(logits, targets, *, lam: float, c: float, normalize: str):
    return ldr_kl_value(normalize_logits(logits.float(), normalize), targets, lam, c)


def aldr_kl(logits, targets, *, example_state, lam0: float, alpha: float, c: float, normalize: str):
    """Returns (loss [B], new per-example temperature [B], detached)."""
    z = normalize_logits(logits.float(), normalize)
    log_k = math.log(z.shape[-1])
    with torch.no_grad():  # λ_i is a detached statistic in the code, not a function of the weights
        lam_prev = example_state.to(device=z.device, dtype=z.dtype).clamp_min(_EPS)
        q = torch.softmax(z / lam_prev[:, None], -1) + 1e-5
        q = q / q.sum(-1, keepdim=True)
        # KL(q̂ ‖ uniform) lies in [0, log K]; clamping only removes float round-off, so λ_i stays in range.
        kl = (q * (q * z.shape[-1]).log()).sum(-1).clamp(0.0, log_k)
        lam = lam0 * (1.0 - kl / (alpha * log_k))
    loss = ldr_kl_value(z, targets, lam, c) - (alpha * log_k / (2.0 * lam0)) * (lam - lam0) ** 2
    return loss, lam


def _check_common(name, hp):
    if hp["c"] < 0:
        raise ValueError(f"{name}: margin c must be >= 0, got {hp['c']}")
    if hp["normalize"] not in NORMALIZE:
        raise ValueError(f"{name}: unknown normalize {hp['normalize']!r}; valid: {NORMALIZE}")


def _validate_ldr(hp):
    _check_common("ldr_kl", hp)
    require_positive("ldr_kl", hp, "lam")


def _validate_aldr(hp):
    _check_common("aldr_kl", hp)
    require_positive("aldr_kl", hp, "lam0")
    if hp["alpha"] <= 1:  # λ_i >= λ₀(1 - 1/α) must stay positive
        raise ValueError(f"aldr_kl: alpha must be > 1, got {hp['alpha']}")


def _ref_ldr():
    # Card C5: z = [2, 0], y = 0, λ = 1, c = 0, no normalisation: d = [0, -2],
    # log((1 + e^-2)/2) = 0.126928 - log 2 = -0.566219 (= CE - log K).
    kw = dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0]), lam=1.0, c=0.0, normalize="none")
    return kw, torch.tensor([-0.566219])


def _ref_aldr():
    # Worked in float64 (λ₀ = 1, α = 2, c = 0, state 1, no normalisation). Row 1, z = [2, 0]:
    # softmax = [0.880797, 0.119203], +1e-5 and renormalise, KL = 0.327798, λ = 1 - KL/(2 log 2) =
    # 0.763544, loss = λ·log((1 + e^{-2/λ})/2) - log 2·(λ - 1)² = -0.514312. Row 2, z = [0, 0]:
    # q̂ uniform, KL = 0, λ = λ₀ = 1, d = [0, 0], loss = 0.
    kw = dict(logits=torch.tensor([[2.0, 0.0], [0.0, 0.0]]), targets=torch.tensor([0, 0]),
              example_state=torch.tensor([1.0, 1.0]), lam0=1.0, alpha=2.0, c=0.0, normalize="none")
    return kw, (torch.tensor([-0.514312, 0.0]), torch.tensor([0.763544, 1.0]))


_PAPER = "Zhu, Ying, Yang, ICML 2023, arXiv:2112.14869"
_URL = "https://arxiv.org/abs/2112.14869"

LDR_KL = MethodSpec(
    name="ldr_kl", kind="loss", fn=ldr_kl,
    # Reference-code defaults (card C5); λ = 10 collapses on clean long-tailed data, tune lam.
    defaults={"lam": 10.0, "c": 0.1, "normalize": "softplus_mean"},
    search={"lam": ("choice", 0.1, 1.0, 10.0)},
    paper=_PAPER, url=_URL, docs="ldr", version=1, reference=_ref_ldr, validate=_validate_ldr,
    summary="worst case over label distributions with a KL penalty: λ·logmeanexp(margins/λ)",
)

ALDR_KL = MethodSpec(
    name="aldr_kl", kind="loss", fn=aldr_kl,
    defaults={"lam0": 10.0, "alpha": 2.0, "c": 0.1, "normalize": "l1_mean"},
    search={"lam0": ("choice", 0.1, 1.0, 10.0)},
    paper=_PAPER, url=_URL, docs="ldr", version=1, reference=_ref_aldr, validate=_validate_aldr,
    needs=("example_state",), init_state=lambda hp: float(hp["lam0"]),
    summary="LDR-KL with a per-example temperature that shrinks for confident examples",
)
