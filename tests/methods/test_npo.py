"""NPO (card M12): gradient-ascent gradient at initialisation, bounded and vanishing as Δ → −∞."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.npo import SPEC, npo_loss

from tests.methods.preference_helpers import close, gen


def test_reference_registry_and_default_call():
    assert methods.get("npo") is SPEC
    assert SPEC.kind == "unlearning" and SPEC.needs == () and SPEC.hparams() == {"beta": 0.1}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)
    g = gen(0)
    ref = -torch.rand(8, generator=g) * 50
    out = SPEC.fn(ref + torch.randn(8, generator=g) * 5, ref, **SPEC.hparams())
    assert out.shape == (8,) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_closed_form():
    g = gen(1)
    ref = -torch.rand(16, generator=g, dtype=torch.float64) * 30
    policy = ref + torch.randn(16, generator=g, dtype=torch.float64) * 3
    for beta in (0.1, 1.0):
        # (2/β) log(1 + (π_θ/π_ref)^β)
        expected = (2 / beta) * torch.log1p(torch.exp(beta * (policy - ref)))
        close(npo_loss(policy, ref, beta=beta), expected.float())


@pytest.mark.parametrize("beta", [0.05, 0.1, 1.0])
def test_init_gradient_equals_gradient_ascent(beta):
    ref = -torch.rand(6, generator=gen(2)) * 20
    policy = ref.clone().requires_grad_(True)
    loss = npo_loss(policy, ref, beta=beta)
    close(loss, torch.full((6,), 2 / beta * math.log(2.0)))
    loss.sum().backward()
    npo_grad = policy.grad.clone()
    # gradient ascent on the forget set minimises log π_θ(y|x): its gradient w.r.t. it is 1
    policy.grad = None
    policy.sum().backward()
    close(npo_grad, policy.grad)  # weight 2σ(0) = 1


def test_gradient_weight_is_two_sigmoid():
    g = gen(3)
    ref = -torch.rand(10, generator=g) * 20
    delta = torch.randn(10, generator=g) * 10
    policy = (ref + delta).requires_grad_(True)
    npo_loss(policy, ref, beta=0.1).sum().backward()
    close(policy.grad, 2 * torch.sigmoid(0.1 * delta))
    assert (policy.grad > 0).all() and (policy.grad < 2).all()  # bounded, unlike GA's unbounded objective


def test_loss_and_gradient_vanish_as_log_ratio_goes_to_minus_infinity():
    ref = torch.full((5,), -10.0)
    delta = torch.tensor([-10.0, -30.0, -60.0, -100.0, -1e4])
    policy = (ref + delta).requires_grad_(True)
    loss = npo_loss(policy, ref, beta=0.1)
    loss.sum().backward()
    assert (loss[1:4] < loss[:3]).all() and (policy.grad[1:4] < policy.grad[:3]).all()
    assert loss[3] < 1e-3 and policy.grad[3] < 1e-4  # 20·softplus(-10), 2σ(-10)
    assert loss[-1] < 1e-30 and policy.grad[-1] < 1e-30
    assert torch.isfinite(policy.grad).all()


def test_large_positive_log_ratio_is_finite():
    ref = torch.tensor([-100.0])
    out = npo_loss(ref + 1e4, ref, beta=1.0)
    close(out, torch.tensor([2e4]))  # (2/β) softplus(βΔ) ≈ 2Δ for large Δ


def test_bf16_inputs_compute_in_float32():
    ref = -torch.rand(4, generator=gen(4)) * 10
    out = npo_loss((ref + 1).bfloat16(), ref.bfloat16(), beta=0.1)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_validate_rejects_bad_beta():
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError):
            SPEC.hparams({"beta": bad})
