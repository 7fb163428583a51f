"""REINFORCE for online preference optimisation: KL-regularised sequence rewards, the baselines the
online methods differ by, and the surrogate loss whose gradient is the policy-gradient estimate.

For a prompt x, k responses y_1..y_k ~ π_θ(·|x) and a reward model r, each response's reward is
regularised towards π_ref at the sequence level (the KL-penalised reward of RLHF):

    R_i = r(x, y_i) − β · (log π_θ(y_i|x) − log π_ref(y_i|x))          (detached)

and the loss is the surrogate −(1/k) Σ_i (R_i − b_i) · log π_θ(y_i|x), whose gradient is the
REINFORCE estimate of −∇ E[R] when the baseline b_i does not depend on y_i:

    none    b_i = 0
    mean    b_i = (1/k) Σ_j R_j          (depends on y_i itself: biased by a factor (k − 1)/k)
    loo     b_i = (1/(k−1)) Σ_{j≠i} R_j  (RLOO, Ahmadian et al. 2024: unbiased, needs k ≥ 2)
    greedy  b_i = R(x, ȳ), ȳ the greedy response of the current policy (ReMax, Li et al. 2024:
            unbiased, one extra greedy decode per prompt instead of a value network)

ReMax's official code clips the reward difference r(y) − r(ȳ) to ±5 before it enters the loss;
`clip` reproduces that (applied to the advantage, which is that difference when β = 0).

The surrogate is what the trainer differentiates: with R detached, its expected gradient is the
exact gradient of E[r − β·log(π_θ/π_ref)] (E[∇ log π_θ] = 0 absorbs the penalty's own derivative),
which tests/harness/test_policy_gradient.py checks against a categorical policy's exact gradient.
"""
from __future__ import annotations

import torch

BASELINES = ("none", "mean", "loo", "greedy")


def regularised_reward(reward: torch.Tensor, logp_policy: torch.Tensor, logp_ref: torch.Tensor,
                       beta: float) -> torch.Tensor:
    """R = r − β·(log π_θ − log π_ref) per response (sequence log-probs), detached."""
    return (reward - beta * (logp_policy - logp_ref)).detach()


def advantages(R: torch.Tensor, baseline: str, greedy_R: torch.Tensor | None = None) -> torch.Tensor:
    """R − b for rewards R [B, k] (k responses per prompt) under `baseline` (BASELINES); `greedy`
    reads greedy_R [B], the regularised reward of each prompt's greedy response."""
    if baseline == "none":
        return R
    if baseline == "mean":
        return R - R.mean(1, keepdim=True)
    if baseline == "loo":
        k = R.shape[1]
        if k < 2:
            raise ValueError("the leave-one-out baseline needs at least 2 responses per prompt")
        return R - (R.sum(1, keepdim=True) - R) / (k - 1)
    if baseline == "greedy":
        if greedy_R is None:
            raise ValueError("the greedy (ReMax) baseline needs the greedy responses' rewards")
        return R - greedy_R.reshape(-1, 1)
    raise ValueError(f"unknown baseline {baseline!r}; valid: {list(BASELINES)}")


def surrogate_loss(logp_policy: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per prompt [B], −mean over its k responses of A · log π_θ(y|x) (A detached): the batch mean's
    gradient is the policy-gradient estimate of −∇ E[R]."""
    return -(adv.detach() * logp_policy).mean(1)


def online_loss(policy: torch.Tensor, ref: torch.Tensor, reward: torch.Tensor, greedy_policy=None,
                greedy_ref=None, greedy_reward=None, *, beta: float, baseline: str,
                clip: float | None = None) -> torch.Tensor:
    """Per-prompt REINFORCE surrogate [B] for k sampled responses per prompt: `policy` log π_θ(y|x)
    [B, k] (with gradient), `ref` log π_ref(y|x) and proxy `reward` [B, k]; the greedy baseline
    reads the greedy response's (log π_θ, log π_ref, reward) [B] the same way. `clip` bounds |A|."""
    policy, ref, reward = policy.float(), ref.float(), reward.float()
    R = regularised_reward(reward, policy, ref, beta)
    greedy_R = None if greedy_reward is None else regularised_reward(greedy_reward.float(), greedy_policy.float(),
                                                                     greedy_ref.float(), beta)
    adv = advantages(R, baseline, greedy_R)
    return surrogate_loss(policy, adv if clip is None else adv.clamp(-clip, clip))
