"""REINFORCE estimators of the online preference methods (lossbench/policy_gradient.py) on a
categorical policy whose exact gradient is known: ReMax's greedy baseline and RLOO's leave-one-out
baseline leave the gradient unbiased, the plain mean baseline shrinks it by (k − 1)/k, and the
baselines cut the variance a reward offset adds."""
import pytest
import torch

from lossbench import policy_gradient as pg

A = 6
THETA = torch.tensor([0.3, -0.2, 1.1, 0.0, -0.7, 0.5], dtype=torch.float64)
REF = torch.log_softmax(torch.tensor([0.1, 0.2, 0.0, -0.1, 0.3, 0.0], dtype=torch.float64), 0)
REWARD = torch.tensor([1.0, 0.2, -0.5, 0.8, 0.0, 0.4], dtype=torch.float64)


def exact_gradient(beta: float, offset: float = 0.0) -> torch.Tensor:
    theta = THETA.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, 0)
    objective = (logp.exp() * (REWARD + offset - beta * (logp - REF))).sum()
    return torch.autograd.grad(objective, theta)[0]


def estimates(baseline: str, beta: float, k: int = 4, prompts: int = 4000, reps: int = 10, offset: float = 0.0):
    """`reps` independent estimates of ∇ E[R], each the surrogate's gradient over `prompts` prompts."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(reps):
        theta = THETA.clone().requires_grad_(True)
        logp_all = torch.log_softmax(theta, 0)
        y = torch.multinomial(logp_all.detach().exp().expand(prompts, A), k, replacement=True, generator=gen)
        logp = logp_all[y]
        R = pg.regularised_reward(REWARD[y] + offset, logp, REF[y], beta)
        g = int(THETA.argmax())
        greedy_R = pg.regularised_reward(REWARD[g] + offset, logp_all[g], REF[g], beta).expand(prompts)
        loss = pg.surrogate_loss(logp, pg.advantages(R, baseline, greedy_R)).mean()
        out.append(-torch.autograd.grad(loss, theta)[0])  # the loss is −E[R]: its negative gradient
    return torch.stack(out)


@pytest.mark.parametrize("beta", [0.0, 0.3])
@pytest.mark.parametrize("baseline", ["none", "loo", "greedy"])
def test_unbiased_baselines_match_the_exact_gradient(baseline, beta):
    est = estimates(baseline, beta)
    mean, se = est.mean(0), est.std(0) / len(est) ** 0.5
    exact = exact_gradient(beta)
    assert ((mean - exact).abs() <= 4 * se + 1e-3).all(), (mean, exact)


def test_the_mean_baseline_shrinks_the_gradient_by_k_minus_one_over_k():
    k = 2
    est = estimates("mean", 0.0, k=k, reps=10).mean(0)
    assert torch.allclose(est, exact_gradient(0.0) * (k - 1) / k, atol=0.01)


def test_baselines_remove_the_variance_of_a_reward_offset():
    spread = {b: estimates(b, 0.0, reps=8, offset=10.0).std(0).sum() for b in ("none", "loo", "greedy")}
    assert spread["loo"] < spread["none"] / 5 and spread["greedy"] < spread["none"] / 5


def test_advantage_shapes_and_errors():
    R = torch.tensor([[1.0, 3.0, 2.0]])
    assert torch.allclose(pg.advantages(R, "loo"), torch.tensor([[-1.5, 1.5, 0.0]]))
    assert torch.allclose(pg.advantages(R, "greedy", torch.tensor([2.0])), R - 2.0)
    assert torch.allclose(pg.advantages(R, "mean").sum(1), torch.zeros(1))
    with pytest.raises(ValueError, match="at least 2"):
        pg.advantages(R[:, :1], "loo")
    with pytest.raises(ValueError, match="greedy"):
        pg.advantages(R, "greedy")
    with pytest.raises(ValueError, match="valid"):
        pg.advantages(R, "ppo")
