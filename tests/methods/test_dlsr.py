"""Card L1: DLSR sample weights (methods/dlsr.py) and the track's uniform baseline (methods/uniform.py)."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.dlsr import EXTREMES, LINUPPER, QUADRATIC, dlsr_weights
from lossbench.methods.uniform import SPEC as UNIFORM

SPECS = [LINUPPER, QUADRATIC, EXTREMES]
LOSSES = torch.tensor([1.0, 2.0, 3.0])


def _close(actual, expected, rtol=1e-5, atol=1e-6):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol), (
        f"{actual} != {expected}")


def trainer_loss(w, sample_losses, n_tokens):
    """The trainer's objective N·Σ_i w_i·(n_i/Σ_j n_j)·ℓ_i (lossbench/lm_pretrain.py, card L1 step 5)."""
    return len(w) * (w * n_tokens / n_tokens.sum() * sample_losses).sum()


@pytest.mark.parametrize("spec", SPECS + [UNIFORM])
def test_registered_reference_and_contract(spec):
    assert methods.get(spec.name) is spec and spec.kind == "sample_weight"
    kwargs, expected = spec.reference()
    _close(spec.fn(**kwargs), expected, rtol=1e-4)
    g = torch.Generator().manual_seed(0)
    losses = (torch.rand(16, generator=g) * 5).requires_grad_()
    w = spec.fn(losses, progress=0.5, **spec.hparams())
    assert w.shape == (16,) and w.dtype == torch.float32 and not w.requires_grad  # (e) no grad
    assert torch.all(w >= 0) and w.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_card_values():
    # Card L1 unit test (a): losses [1, 2, 3].
    hp = dict(progress=1.0, delta=1.0, burn_in=0.05)
    _close(dlsr_weights(LOSSES, strategy="linupper", r=1.0, **hp), [0.15536, 0.42232, 0.42232], atol=1e-5)
    _close(dlsr_weights(LOSSES, strategy="quadratic", r=1.0, **hp), [0.21194, 0.57612, 0.21194], atol=1e-5)
    _close(dlsr_weights(LOSSES, strategy="extremes", r=1.0, **hp), [0.42232, 0.15536, 0.42232], atol=1e-5)
    _close(dlsr_weights(LOSSES, strategy="linupper", r=0.4, **hp), [0.03942, 0.48029, 0.48029], atol=1e-5)


@pytest.mark.parametrize("strategy", ["linupper", "quadratic", "extremes"])
def test_large_r_is_uniform_and_the_loss_is_the_token_mean(strategy):
    # (b): r = 1e6 gives 1/N, and the trainer's objective is then the token mean Σ n_i ℓ_i / Σ n_i.
    g = torch.Generator().manual_seed(1)
    losses, n = torch.rand(8, generator=g) * 4, torch.randint(1, 50, (8,), generator=g).float()
    w = dlsr_weights(losses, progress=1.0, strategy=strategy, r=1e6, delta=1.0, burn_in=0.0)
    _close(w, torch.full((8,), 1 / 8), rtol=1e-5)
    token_mean = (n * losses).sum() / n.sum()
    assert trainer_loss(w, losses, n).item() == pytest.approx(token_mean.item(), rel=1e-5)
    assert trainer_loss(UNIFORM.fn(losses, progress=0.0), losses, n).item() == pytest.approx(token_mean.item(), rel=1e-6)


@pytest.mark.parametrize("spec", SPECS)
def test_invariant_to_affine_transforms_of_the_losses(spec):
    # (c): min-max normalisation removes a > 0 and b.
    g = torch.Generator().manual_seed(2)
    losses = torch.rand(12, generator=g) * 3
    hp = spec.hparams()
    w = spec.fn(losses, progress=0.5, **hp)
    for a, b in [(0.1, 0.0), (7.0, -3.0), (1.0, 100.0)]:
        _close(spec.fn(a * losses + b, progress=0.5, **hp), w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("spec", SPECS)
def test_equal_losses_and_single_sample_give_uniform_without_nan(spec):
    # (d): the 1e-6 denominator guard.
    hp = spec.hparams()
    _close(spec.fn(torch.full((5,), 2.5), progress=0.9, **hp), torch.full((5,), 0.2))
    _close(spec.fn(torch.tensor([3.0]), progress=0.9, **hp), torch.ones(1))


@pytest.mark.parametrize("spec", SPECS)
def test_uniform_during_burn_in(spec):
    hp = spec.hparams()
    assert hp["burn_in"] == 0.05  # card: 1000 of 20k steps
    losses = torch.tensor([0.5, 1.0, 4.0, 2.0])
    _close(spec.fn(losses, progress=0.0, **hp), torch.full((4,), 0.25))
    _close(spec.fn(losses, progress=0.0499, **hp), torch.full((4,), 0.25))
    assert not torch.allclose(spec.fn(losses, progress=0.05, **hp), torch.full((4,), 0.25))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("r", [0.4, 1.0, 3.0])
def test_weight_ratio_is_bounded_by_exp_range_over_r(spec, r):
    # range(f) = 1 for every strategy, so max w / min w <= e^(1/r) (card step 4), with equality here.
    losses = torch.linspace(0.0, 1.0, 21)  # contains x = −1, 0 and 1
    w = spec.fn(losses, progress=1.0, **spec.hparams({"r": r}))
    assert (w.max() / w.min()).item() == pytest.approx(math.exp(1 / r), rel=1e-5)


def test_strategies_shape_the_weights_as_the_card_says():
    losses = torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0])
    lin, quad, ext = (s.fn(losses, progress=1.0, **s.hparams({"r": 1.0})) for s in SPECS)
    assert torch.all(lin[1:] >= lin[:-1]) and lin[2] == lin[4]  # ramp to mid-range, then flat
    assert quad.argmax() == 2 and quad[0] == quad[4]  # peak at mid-range, both tails down
    assert ext.argmin() == 2 and ext[0] == ext[4]  # both tails up


def test_validate_rejects_bad_hparams():
    for bad in ({"r": 0.0}, {"r": float("nan")}, {"delta": -1.0}, {"burn_in": 1.5}):
        with pytest.raises(ValueError):
            LINUPPER.hparams(bad)
    with pytest.raises(ValueError, match="strategy"):
        LINUPPER.hparams({"strategy": "mid"})
