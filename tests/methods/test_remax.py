"""ReMax (greedy-response baseline): unbiased policy gradient, the baseline cancels a reward offset,
the clip bounds the advantage, and the gradient's sign follows r(y) − r(ȳ)."""
import pytest
import torch

from lossbench import methods
from lossbench.methods.remax import SPEC, remax_loss

from tests.methods.online_helpers import exact_gradient, expected_gradient
from tests.methods.preference_helpers import close


def test_reference_registry_and_defaults():
    assert methods.get("remax") is SPEC
    assert SPEC.kind == "online" and set(SPEC.needs) == {"proxy_reward", "greedy_response"}
    assert SPEC.hparams() == {"beta": 0.05, "clip": 5.0, "samples": 1}
    assert SPEC.split_hparams(SPEC.hparams())[0] == {"beta": 0.05, "clip": 5.0}  # samples: the trainer's
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)


@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_greedy_baseline_leaves_the_gradient_unbiased(beta):
    got = expected_gradient(remax_loss, 1, greedy=True, beta=beta, clip=1e9)
    torch.testing.assert_close(got, exact_gradient(beta), rtol=1e-5, atol=1e-7)  # the loss computes in float32


def test_a_reward_offset_changes_nothing():
    """r and r + c give the same advantages: the greedy response absorbs any constant."""
    a = expected_gradient(remax_loss, 1, greedy=True, beta=0.1, clip=1e9)
    b = expected_gradient(remax_loss, 1, greedy=True, beta=0.1, clip=1e9, offset=10.0)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # float32 rewards: r + 10 keeps ~6 digits


def test_clip_bounds_the_advantage():
    policy = torch.tensor([[-2.0], [-2.0]], requires_grad=True)
    zero = torch.zeros(2)
    loss = remax_loss(policy, policy.detach(), torch.tensor([[100.0], [-100.0]]), zero, zero, zero,
                      beta=0.0, clip=5.0)
    loss.sum().backward()
    close(policy.grad, torch.tensor([[-5.0], [5.0]]))


def test_gradient_sign_follows_the_reward_difference():
    """A sample better than the greedy response is made more likely; a worse one less; an equal one not at all."""
    policy = torch.full((3, 1), -3.0, requires_grad=True)
    zero = torch.zeros(3)
    remax_loss(policy, policy.detach(), torch.tensor([[1.0], [-1.0], [0.0]]), zero, zero, zero,
               beta=0.0, clip=5.0).sum().backward()
    assert policy.grad[0, 0] < 0 and policy.grad[1, 0] > 0 and policy.grad[2, 0] == 0


def test_missing_greedy_rewards_and_bad_hyperparameters_raise():
    x = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="greedy"):
        remax_loss(x, x, x, None, None, None, beta=0.1, clip=5.0)
    with pytest.raises(ValueError, match="clip"):
        SPEC.hparams({"clip": 0.0})
    with pytest.raises(ValueError, match="beta"):
        SPEC.hparams({"beta": -1.0})
