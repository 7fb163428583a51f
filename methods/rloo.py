"""REINFORCE baselines of the online preference kind: plain REINFORCE (no baseline) and RLOO, the
leave-one-out baseline over k samples per prompt. Ahmadian, Cremer, Gallé, Fadaee, Kreutzer,
Pietquin, Üstün, Hooker 2024 (ACL), "Back to Basics: Revisiting REINFORCE Style Optimization for
Learning from Human Feedback in LLMs", arXiv:2402.14740 (RLOO after Kool et al. 2019).

docs/methods/rloo.md. For k responses y_1..y_k ~ π_θ(·|x) with KL-regularised rewards R_i
(lossbench/policy_gradient.py):

    RLOO        L = −(1/k) Σ_i (R_i − (1/(k−1)) Σ_{j≠i} R_j) · log π_θ(y_i|x)     (k ≥ 2)
    REINFORCE   L = −(1/k) Σ_i R_i · log π_θ(y_i|x)

Both are unbiased; they are the critic-free baselines ReMax is read against (the issue's "REINFORCE
with a mean or leave-one-out baseline"). With k = 2, RLOO draws as many responses per prompt as
ReMax (one sample and one greedy decode).
"""
import torch

from lossbench.methods.base import MethodSpec
from lossbench.policy_gradient import online_loss


def rloo_loss(policy, ref, reward, greedy_policy, greedy_ref, greedy_reward, *, beta: float):
    return online_loss(policy, ref, reward, beta=beta, baseline="loo")


def reinforce_loss(policy, ref, reward, greedy_policy, greedy_ref, greedy_reward, *, beta: float):
    return online_loss(policy, ref, reward, beta=beta, baseline="none")


def _validate(name):
    def check(hp):
        if not hp["beta"] >= 0:
            raise ValueError(f"{name}: beta must be >= 0, got {hp['beta']}")
        if hp["samples"] < (2 if name == "rloo" else 1):
            raise ValueError(f"{name}: samples must be >= {2 if name == 'rloo' else 1}, got {hp['samples']}")
    return check


def _inputs():
    # two responses of one prompt: rewards 3 and 1, log π_θ −2 and −4, log π_ref −2.5 and −3, β = 0.1
    # R = 3 − 0.1·0.5 = 2.95 and 1 − 0.1·(−1) = 1.1
    return dict(policy=torch.tensor([[-2.0, -4.0]]), ref=torch.tensor([[-2.5, -3.0]]),
                reward=torch.tensor([[3.0, 1.0]]), greedy_policy=None, greedy_ref=None, greedy_reward=None,
                beta=0.1)


def _rloo_reference():
    # A = ±(2.95 − 1.1) = ±1.85; L = −(1.85·(−2) + (−1.85)·(−4))/2 = −(−3.7 + 7.4)/2 = −1.85
    return _inputs(), torch.tensor([-1.85])


def _reinforce_reference():
    # L = −(2.95·(−2) + 1.1·(−4))/2 = (5.9 + 4.4)/2 = 5.15
    return _inputs(), torch.tensor([5.15])


_COMMON = dict(kind="online", needs=("proxy_reward",), trainer_hparams=("samples",),
               paper="Ahmadian et al. 2024, arXiv:2402.14740", url="https://arxiv.org/abs/2402.14740",
               docs="rloo", version=1, search={"beta": ("choice", 0.03, 0.1, 0.3, 1.0)})

RLOO = MethodSpec(
    name="rloo", fn=rloo_loss, defaults={"beta": 0.05, "samples": 2}, reference=_rloo_reference,
    validate=_validate("rloo"), **_COMMON,
    summary="online REINFORCE, leave-one-out baseline over k = 2 samples per prompt, KL-regularised reward",
)
REINFORCE = MethodSpec(
    name="reinforce", fn=reinforce_loss, defaults={"beta": 0.05, "samples": 1}, reference=_reinforce_reference,
    validate=_validate("reinforce"), **_COMMON,
    summary="online REINFORCE without a baseline, KL-regularised reward (the variance ReMax and RLOO remove)",
)
