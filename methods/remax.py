"""ReMax: REINFORCE with the greedy response's reward as the baseline (no value network).
Li, Xu, Zhang, Liu, Sun, Luo 2024 (ICML), "ReMax: A Simple, Effective, and Efficient Reinforcement
Learning Method for Aligning Large Language Models", arXiv:2310.10505.

docs/methods/remax.md. Per prompt x: one response y ~ π_θ(·|x) and the greedy response ȳ of the
current policy, both scored by the proxy reward model r; with the KL-regularised reward
R(y) = r(x, y) − β·(log π_θ(y|x) − log π_ref(y|x)) (sequence level, detached):

    L = −clip(R(y) − R(ȳ), ±c) · log π_θ(y|x)

The baseline R(ȳ) depends on x and θ only, so the estimate stays unbiased (the paper's
proposition; lossbench/policy_gradient.py and its tests). c = 5 is the official code's
`clip_reward_value`. Where lossbench departs from the official trainer (per-token KL inside a
γ-discounted return, a token-mean loss, top-p 0.9 sampling) is listed on the docs page.
"""
from dataclasses import replace

import torch

from lossbench.methods.base import MethodSpec, require_positive
from lossbench.overopt import OBJECTIVES
from lossbench.policy_gradient import online_loss


def remax_loss(policy, ref, reward, greedy_policy, greedy_ref, greedy_reward, *, beta: float, clip: float):
    return online_loss(policy, ref, reward, greedy_policy, greedy_ref, greedy_reward, beta=beta,
                       baseline="greedy", clip=clip)


def _validate(hp):
    require_positive("remax", hp, "clip")
    if not hp["beta"] >= 0:
        raise ValueError(f"remax: beta must be >= 0, got {hp['beta']}")
    if hp.get("objective", "single") not in OBJECTIVES:
        raise ValueError(f"remax: unknown ensemble objective {hp['objective']!r}; valid: {list(OBJECTIVES)}")


def _reference():
    # R(y) = 2 − 0.1·(−3 − (−4)) = 1.9; R(ȳ) = 1 − 0.1·(−1 − (−1.5)) = 0.95; A = 0.95 (inside ±5);
    # L = −0.95 · (−3) = 2.85. A second prompt: A = 10 − 0 clipped to 5, L = −5 · (−2) = 10.
    kwargs = dict(policy=torch.tensor([[-3.0], [-2.0]]), ref=torch.tensor([[-4.0], [-2.0]]),
                  reward=torch.tensor([[2.0], [10.0]]), greedy_policy=torch.tensor([-1.0, -1.0]),
                  greedy_ref=torch.tensor([-1.5, -1.0]), greedy_reward=torch.tensor([1.0, 0.0]),
                  beta=0.1, clip=5.0)
    return kwargs, torch.tensor([2.85, 10.0])


SPEC = MethodSpec(
    name="remax", kind="online", fn=remax_loss,
    defaults={"beta": 0.05, "clip": 5.0, "samples": 1},  # official scripts: kl_ctl 0.05, reward clip 5, 1 sample
    search={"beta": ("choice", 0.03, 0.1, 0.3, 1.0)},
    needs=("proxy_reward", "greedy_response"), trainer_hparams=("samples",),
    paper="Li et al. 2024, arXiv:2310.10505", url="https://arxiv.org/abs/2310.10505", docs="remax",
    version=1, reference=_reference, validate=_validate,
    summary="online REINFORCE, baseline = reward of the greedy response, KL-regularised reward, |A| ≤ 5",
)


def _with_ensemble(objective: str, summary: str) -> MethodSpec:
    """ReMax optimising an objective over the reward-model ensemble of the protocol's overoptimization
    block (Coste et al. 2024, the online half of card E3) instead of the one proxy RM: the members are
    standardised on π_ref's samples, so `remax_single` (member 0 alone, standardised) is the baseline
    the conservative objectives are measured against at the same reward scale."""
    return replace(SPEC, name=f"remax_{objective}", needs=("reward_ensemble", "greedy_response"),
                   defaults={**SPEC.defaults, "objective": objective}, trainer_hparams=("samples", "objective"),
                   docs="remax", summary=summary)


SINGLE = _with_ensemble("single", "ReMax on one standardised proxy RM of the ensemble (the baseline of WCO and UWO)")
WCO = _with_ensemble("wco", "ReMax on the worst case min_i of 5 standardised proxy RMs (Coste et al.)")
UWO = _with_ensemble("uwo", "ReMax on mean − λ·variance of 5 standardised proxy RMs, λ = 0.5 (Coste et al.)")
