"""Temperature sampling, its scalarized (upweighted) twin, and Cooldown.

Li, Xu, Tan, Murray, Khashabi, "Upsample or Upweight? Balanced Training on Heavily Imbalanced
Datasets", NAACL 2025, arXiv:2410.04579. Groups (languages in the paper) are classes here.
docs/methods/temperature_sampling.md.

- Temperature sampling draws class k with q_k(τ) = n_k^{1/τ} / Σ_j n_j^{1/τ}: τ = 1 is proportional
  (q = π), τ -> ∞ uniform over the classes present (class-balanced resampling), τ = 2 square-root.
- Scalarization samples proportionally and multiplies the loss of class k by q_k(τ)/π_k: same
  objective (Theorem 1), larger minibatch-gradient variance (Theorem 2).
- Cooldown: τ_start = 5 for the first half of training, then τ_end = 1 (one switch, decreasing).
  The paper's schedule is unverified (docs/methods/temperature_sampling.md); the card also
  asks for a linear-decay variant: τ_start until the switch, then linear in progress to τ_end at
  the end of training (`cooldown_linear`).

Classes with zero count get probability 0 (and weight 0), whatever τ.
"""
import math

import torch

from lossbench.methods.base import MethodSpec, require_in, require_positive


def temperature_probs(class_counts, *, tau: float):
    """q(τ) [K] in float32, computed as softmax(log n / τ) so τ = inf and n = 0 need no special case."""
    n = class_counts.double()
    if not bool((n > 0).any()):
        raise ValueError("temperature sampling: every class count is zero")
    # log(max(n, 1)) / inf = 0 for every present class; absent classes get -inf, i.e. q_k = 0.
    scores = torch.where(n > 0, n.clamp_min(1.0).log() / tau, torch.full_like(n, -math.inf))
    return torch.softmax(scores, dim=0).float()


def class_balanced_sampling(class_counts, progress=None):
    return temperature_probs(class_counts, tau=math.inf)


def temperature_sampling(class_counts, progress=None, *, tau: float):
    return temperature_probs(class_counts, tau=tau)


def cooldown(class_counts, progress, *, tau_start: float, tau_end: float, switch: float):
    return temperature_probs(class_counts, tau=tau_start if progress < switch else tau_end)


def cooldown_linear(class_counts, progress, *, tau_start: float, tau_end: float, switch: float):
    """τ_start until `switch`, then τ linear in progress down to τ_end at progress 1."""
    decay = min(max((progress - switch) / max(1.0 - switch, 1e-12), 0.0), 1.0)
    return temperature_probs(class_counts, tau=tau_start + (tau_end - tau_start) * decay)


def temperature_upweight(targets, *, class_counts, tau: float):
    """Per-example weight q_y(τ)/π_y for proportionally sampled batches (the paper's scalarization)."""
    prior = temperature_probs(class_counts, tau=1.0).double()
    q = temperature_probs(class_counts, tau=tau).double()
    w = torch.where(prior > 0, q / prior.clamp_min(1e-300), torch.zeros_like(q))
    return w.float().to(targets.device)[targets].detach()


def _validate_tau(hp):
    require_positive("temperature sampling", hp, "tau")  # float('inf') is allowed: uniform sampling


def _validate_cooldown(hp):
    require_positive("cooldown", hp, "tau_start", "tau_end")
    require_in("cooldown", hp, "switch", 0, 1, closed_high=True)  # a fraction of the training budget


# Worked in float64 for counts [5000, 500, 50] (π = [0.900901, 0.090090, 0.009009]):
# n^{1/5} = [5.49280, 3.46572, 2.18672] -> q(5) = [0.492838, 0.310960, 0.196202].
_COUNTS = [5000.0, 500.0, 50.0]
_Q5 = [0.49283795, 0.31095973, 0.19620232]


def _ref_resample():
    # An empty class gets 0; the three present classes share the mass equally.
    return dict(class_counts=torch.tensor(_COUNTS + [0.0]), progress=0.3), torch.tensor([1 / 3] * 3 + [0.0])


def _ref_temp_sample():
    return dict(class_counts=torch.tensor(_COUNTS), progress=0.3, tau=5.0), torch.tensor(_Q5)


def _ref_cooldown():
    # At progress = switch τ_end = 1 applies, so q = π = n / 5550.
    kw = dict(class_counts=torch.tensor(_COUNTS), progress=0.5, tau_start=5.0, tau_end=1.0, switch=0.5)
    return kw, torch.tensor([5000 / 5550, 500 / 5550, 50 / 5550])


def _ref_cooldown_linear():
    # Progress 0.75 is half-way from the switch (0.5) to the end: τ = 3, q = n^(1/3)/Σ = [17.0998,
    # 7.93701, 3.68403]/28.7208 (float64).
    kw = dict(class_counts=torch.tensor(_COUNTS), progress=0.75, tau_start=5.0, tau_end=1.0, switch=0.5)
    return kw, torch.tensor([0.59537902, 0.27635046, 0.12827052])


def _ref_upweight():
    # q(5) / π = [0.492838/0.900901, 0.310960/0.090090, 0.196202/0.009009] = [0.547050, 3.451653, 21.778458]
    kw = dict(targets=torch.tensor([2, 0, 1]), class_counts=torch.tensor(_COUNTS), tau=5.0)
    return kw, torch.tensor([21.77845781, 0.54705013, 3.45165295])


_PAPER = "Li et al. NAACL 2025 (Upsample or Upweight?), arXiv:2410.04579"
_URL = "https://arxiv.org/abs/2410.04579"

RESAMPLE = MethodSpec(
    name="resample", kind="sampler", fn=class_balanced_sampling, defaults={},
    paper=_PAPER, url=_URL, docs="temperature_sampling", version=1, reference=_ref_resample,
    summary="class-balanced resampling: every present class drawn equally often (τ -> ∞)",
)

TEMP_SAMPLE = MethodSpec(
    name="temp_sample", kind="sampler", fn=temperature_sampling, defaults={"tau": 5.0},
    search={"tau": ("choice", 1.0, 2.0, 5.0, 100.0)},
    paper=_PAPER, url=_URL, docs="temperature_sampling", version=1, reference=_ref_temp_sample,
    validate=_validate_tau,
    summary="temperature sampling: class k drawn with prob ∝ n_k^(1/τ), static τ = 5",
)

COOLDOWN = MethodSpec(
    name="cooldown", kind="sampler", fn=cooldown,
    defaults={"tau_start": 5.0, "tau_end": 1.0, "switch": 0.5},
    search={"tau_start": ("choice", 2.0, 5.0, 10.0), "switch": ("choice", 0.25, 0.5, 0.75)},
    paper=_PAPER, url=_URL, docs="temperature_sampling", version=1, reference=_ref_cooldown,
    validate=_validate_cooldown,
    summary="Cooldown: temperature sampling with τ = 5 for the first half, then τ = 1",
)

COOLDOWN_LINEAR = MethodSpec(
    name="cooldown_linear", kind="sampler", fn=cooldown_linear,
    defaults={"tau_start": 5.0, "tau_end": 1.0, "switch": 0.5},
    search={"tau_start": ("choice", 2.0, 5.0, 10.0), "switch": ("choice", 0.25, 0.5, 0.75)},
    paper=_PAPER, url=_URL, docs="temperature_sampling", version=1, reference=_ref_cooldown_linear,
    validate=_validate_cooldown,
    summary="Cooldown, linear decay: τ = 5 for the first half, then linearly down to τ = 1 at the end",
)

TEMP_UPWEIGHT = MethodSpec(
    name="temp_upweight", kind="reweight", fn=temperature_upweight, defaults={"tau": 5.0},
    search={"tau": ("choice", 2.0, 5.0, 100.0)},
    paper=_PAPER, url=_URL, docs="temperature_sampling", version=1, reference=_ref_upweight,
    needs=("class_counts",), validate=_validate_tau,
    summary="scalarization: proportional sampling, loss of class y weighted by q_y(τ)/π_y, τ = 5",
)
