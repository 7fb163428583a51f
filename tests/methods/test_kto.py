"""Card M14: KTO's per-example loss lies in [0, λ], equals λ/2 at init with z0 = 0, z0 = max(0, KL) detached."""
import pytest
import torch

from lossbench import methods
from lossbench.methods.kto import SPEC, kto_loss

from tests.methods.preference_helpers import close

B = 64


def _examples(seed=0, scale=200.0):
    g = torch.Generator().manual_seed(seed)
    policy, ref = (-torch.rand(2, B, generator=g) * scale).unbind(0)
    desirable = torch.rand(B, generator=g) < 0.5
    return policy, ref, desirable


def test_spec_reference_and_registry():
    assert methods.get("kto") is SPEC and SPEC.kind == "unpaired"
    assert SPEC.defaults == {"beta": 0.1, "lambda_d": 1.0, "lambda_u": 1.0}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)


@pytest.mark.parametrize("lambda_d,lambda_u", [(1.0, 1.0), (1.0, 1.5), (2.0, 0.5)])
@pytest.mark.parametrize("kl_ref", [0.0, 3.0])
def test_loss_bounded_by_lambda(lambda_d, lambda_u, kl_ref):
    policy, ref, desirable = _examples(seed=1)
    out = kto_loss(policy, ref, desirable, torch.tensor(kl_ref), beta=1.0, lambda_d=lambda_d, lambda_u=lambda_u)
    assert out.shape == (B,) and (out >= 0).all() and (out <= max(lambda_d, lambda_u)).all()
    assert (out[desirable] <= lambda_d).all() and (out[~desirable] <= lambda_u).all()


@pytest.mark.parametrize("lambda_d,lambda_u", [(1.0, 1.0), (1.33, 0.7)])
def test_half_lambda_at_init_with_zero_reference_point(lambda_d, lambda_u):
    _, ref, desirable = _examples(seed=2)
    out = kto_loss(ref.clone(), ref, desirable, torch.tensor(0.0), beta=0.1, lambda_d=lambda_d, lambda_u=lambda_u)
    close(out, torch.where(desirable, lambda_d / 2, lambda_u / 2))


def test_negative_kl_estimate_is_clamped_and_detached():
    policy, ref, desirable = _examples(seed=3, scale=5.0)
    hp = dict(beta=0.1, lambda_d=1.0, lambda_u=1.0)
    # a negative estimate counts as 0; a plain float works as well as a 0-dim tensor
    close(kto_loss(policy, ref, desirable, torch.tensor(-2.0), **hp), kto_loss(policy, ref, desirable, 0.0, **hp))
    kl = torch.tensor(0.7, requires_grad=True)
    pol = policy.clone().requires_grad_(True)
    kto_loss(pol, ref, desirable, kl, **hp).sum().backward()
    assert kl.grad is None
    # desirable examples push log π(y) up (∂L/∂log π < 0), undesirable ones push it down
    assert (pol.grad[desirable] < 0).all() and (pol.grad[~desirable] > 0).all()


def test_validate_rejects_bad_hparams():
    for bad in ({"beta": 0.0}, {"lambda_d": 0.0}, {"lambda_u": -1.0}):
        with pytest.raises(ValueError):
            SPEC.hparams(bad)
