"""Softmax CE at a chosen precision (cards G1, G4): collapse thresholds, surviving gradients, the
weight-decay control's split between loss and optimiser."""
import pytest
import torch

from lossbench import methods
from lossbench.methods.erm import cross_entropy
from lossbench.methods.softmax_ce import softmax_ce

# (precision, largest gap without collapse, smallest gap with it): ≈ ln 2^(m+1) = 7.6, 16.6, 36.7
THRESHOLDS = [("float16", 7.0, 8.0), ("float32", 16.0, 17.0), ("float64", 36.0, 37.0)]


@pytest.mark.parametrize("precision, below, above", THRESHOLDS)
def test_loss_is_exactly_zero_only_past_the_absorption_gap(precision, below, above):
    z = torch.tensor([[0.0, -below], [0.0, -above]])
    loss = softmax_ce(z, torch.tensor([0, 0]), softmax_precision=precision)
    assert loss.dtype == torch.float32 and loss[0] > 0 and loss[1] == 0


def test_float64_softmax_keeps_the_gradient_float32_rounds_away():
    z = torch.tensor([[20.0, 0.0]], requires_grad=True)  # gap 20: collapsed in float32 only
    for precision, alive in (("float32", False), ("float64", True)):
        (grad,) = torch.autograd.grad(softmax_ce(z, torch.tensor([0]), softmax_precision=precision).sum(), z)
        # collapse zeroes the correct logit's gradient; the other keeps an exponentially small one
        assert grad.dtype == torch.float32 and bool(grad[0, 0] != 0) == alive and grad[0, 1] > 0
    # p − y in float64: −e^-20 / (1 + e^-20) on the target, survives the cast to float32
    torch.testing.assert_close(grad, torch.tensor([[-2.0611536e-09, 2.0611536e-09]]))


def test_float32_is_the_erm_loss_and_precisions_agree_away_from_collapse():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(32, 10, generator=g) * 3, torch.randint(0, 10, (32,), generator=g)
    torch.testing.assert_close(softmax_ce(z, y), cross_entropy(z, y), rtol=0, atol=0)
    torch.testing.assert_close(softmax_ce(z, y, softmax_precision="float64"), cross_entropy(z, y))
    assert not torch.allclose(softmax_ce(z, y, softmax_precision="float16"), cross_entropy(z, y))


def test_specs_defaults_and_validation():
    assert methods.get("ce_fp64").hparams() == {"softmax_precision": "float64"}
    wd = methods.get("ce_wd")
    fn_hp, opt_hp = wd.split_hparams(wd.hparams())
    assert fn_hp == {"softmax_precision": "float32"} and opt_hp == {"weight_decay": 1.0}
    with pytest.raises(ValueError, match="softmax_precision"):
        methods.get("ce_fp64").hparams({"softmax_precision": "bfloat8"})
