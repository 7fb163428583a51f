"""A categorical "policy" over A one-token responses whose exact policy gradient is known, and the
exact expectation of an online method's loss gradient over every outcome (no sampling noise)."""
import itertools

import torch

A = 5
THETA = torch.tensor([0.4, -0.3, 1.0, 0.1, -0.8], dtype=torch.float64)
REF = torch.log_softmax(torch.tensor([0.2, 0.1, -0.1, 0.0, 0.3], dtype=torch.float64), 0)
REWARD = torch.tensor([1.0, 0.3, -0.6, 0.9, 0.1], dtype=torch.float64)


def exact_gradient(beta: float, offset: float = 0.0) -> torch.Tensor:
    """∇_θ E_{y~π_θ}[r(y) + offset − β (log π_θ(y) − log π_ref(y))]."""
    theta = THETA.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, 0)
    objective = (logp.exp() * (REWARD + offset - beta * (logp - REF))).sum()
    return torch.autograd.grad(objective, theta)[0]


def expected_gradient(fn, k: int, *, greedy: bool = False, offset: float = 0.0, **hp) -> torch.Tensor:
    """−E[∇ fn] over every k-tuple of responses (weights π(y_1)…π(y_k)): the ascent direction the
    method's loss estimates, exactly."""
    theta = THETA.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, 0)
    tuples = torch.tensor(list(itertools.product(range(A), repeat=k)))
    weight = logp.detach().exp()[tuples].prod(1)
    g = int(THETA.argmax())  # the greedy response
    n = len(tuples)
    greedy_args = dict(greedy_policy=logp[g].detach().expand(n), greedy_ref=REF[g].expand(n),
                       greedy_reward=(REWARD[g] + offset).expand(n)) if greedy else \
        dict(greedy_policy=None, greedy_ref=None, greedy_reward=None)
    loss = fn(logp[tuples], REF[tuples], REWARD[tuples] + offset, **greedy_args, **hp)
    return -torch.autograd.grad((weight * loss.double()).sum(), theta)[0]
