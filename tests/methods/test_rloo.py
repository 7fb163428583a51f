"""RLOO and plain REINFORCE: both unbiased; the leave-one-out baseline cancels a reward offset,
REINFORCE does not; RLOO needs k ≥ 2 and a response as good as the others gets no push."""
import pytest
import torch

from lossbench import methods
from lossbench.methods.rloo import REINFORCE, RLOO, reinforce_loss, rloo_loss

from tests.methods.online_helpers import exact_gradient, expected_gradient
from tests.methods.preference_helpers import close


def test_reference_registry_and_defaults():
    assert methods.get("rloo") is RLOO and methods.get("reinforce") is REINFORCE
    assert RLOO.hparams() == {"beta": 0.05, "samples": 2} and REINFORCE.hparams()["samples"] == 1
    for spec in (RLOO, REINFORCE):
        assert spec.kind == "online" and spec.needs == ("proxy_reward",)
        kwargs, expected = spec.reference()
        close(spec.fn(**kwargs), expected)


@pytest.mark.parametrize("beta", [0.0, 0.3])
@pytest.mark.parametrize("fn,k", [(rloo_loss, 2), (rloo_loss, 3), (reinforce_loss, 1), (reinforce_loss, 2)])
def test_unbiased(fn, k, beta):
    torch.testing.assert_close(expected_gradient(fn, k, beta=beta), exact_gradient(beta), rtol=1e-5, atol=1e-7)  # the loss computes in float32


def test_leave_one_out_cancels_a_reward_offset_and_reinforce_does_not():
    policy = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    ref, r = torch.full((1, 3), -2.0), torch.tensor([[0.5, 1.0, -1.0]])
    grads = {}
    for name, fn in (("rloo", rloo_loss), ("reinforce", reinforce_loss)):
        for offset in (0.0, 50.0):
            policy.grad = None
            fn(policy, ref, r + offset, None, None, None, beta=0.1).sum().backward()
            grads[name, offset] = policy.grad.clone()
    close(grads["rloo", 0.0], grads["rloo", 50.0])
    assert not torch.allclose(grads["reinforce", 0.0], grads["reinforce", 50.0])


def test_equal_rewards_give_no_gradient():
    policy = torch.tensor([[-1.0, -4.0]], requires_grad=True)
    rloo_loss(policy, policy.detach(), torch.tensor([[2.0, 2.0]]), None, None, None, beta=0.0).sum().backward()
    close(policy.grad, torch.zeros(1, 2))


def test_rloo_needs_two_samples():
    with pytest.raises(ValueError, match="samples"):
        RLOO.hparams({"samples": 1})
    with pytest.raises(ValueError, match="at least 2"):
        rloo_loss(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, 1), None, None, None, beta=0.1)
