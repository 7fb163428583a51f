"""Card C2: temperature sampling, scalarization (upweighting) and Cooldown ("Upsample or Upweight?")."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.erm import cross_entropy
from lossbench.methods.temperature_sampling import (COOLDOWN, COOLDOWN_LINEAR, RESAMPLE, TEMP_SAMPLE, TEMP_UPWEIGHT,
                                          temperature_probs)

COUNTS = torch.tensor([5000.0, 500.0, 50.0])
PRIOR = COUNTS / COUNTS.sum()


def _close(actual, expected, rtol=1e-5, atol=1e-6):
    # torch.allclose: torch.testing.assert_close's first call spends ~0.7 s on lazy imports.
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol), (
        f"{actual} != {expected}")


@pytest.mark.parametrize("spec", [RESAMPLE, TEMP_SAMPLE, COOLDOWN, COOLDOWN_LINEAR, TEMP_UPWEIGHT])
def test_spec_reference_and_registry(spec):
    assert methods.get(spec.name) is spec
    kwargs, expected = spec.reference()
    _close(spec.fn(**kwargs), expected)
    if spec.kind == "sampler":  # called as fn(class_counts, progress, **hp)
        q = spec.fn(COUNTS, 0.0, **spec.hparams())
        assert q.dtype == torch.float32 and q.sum().item() == pytest.approx(1.0, abs=1e-6)
    else:
        w = spec.fn(torch.tensor([0, 2]), class_counts=COUNTS, **spec.hparams())
        assert w.shape == (2,) and w.dtype == torch.float32 and not w.requires_grad


def test_tau_one_is_proportional_and_tau_inf_uniform():
    _close(temperature_probs(COUNTS, tau=1.0), PRIOR)
    _close(temperature_probs(COUNTS, tau=math.inf), torch.full((3,), 1 / 3))
    _close(RESAMPLE.fn(COUNTS, progress=0.7), torch.full((3,), 1 / 3))
    # Large finite τ approaches uniform monotonically; τ = 5 matches the float64 reference.
    gaps = [(temperature_probs(COUNTS, tau=t) - 1 / 3).abs().max().item() for t in (2.0, 5.0, 100.0, 1e6)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-5
    kwargs, expected = TEMP_SAMPLE.reference()
    _close(TEMP_SAMPLE.fn(**kwargs), expected)
    _close(temperature_probs(COUNTS, tau=5.0), torch.tensor([0.49283795, 0.31095973, 0.19620232]))


def test_zero_count_classes_get_probability_zero():
    counts = torch.tensor([0.0, 30.0, 0.0, 10.0])
    for tau in (0.5, 1.0, 5.0, math.inf):
        q = temperature_probs(counts, tau=tau)
        assert torch.isfinite(q).all() and q[0] == 0 and q[2] == 0
        assert q.sum().item() == pytest.approx(1.0, abs=1e-6)
    w = TEMP_UPWEIGHT.fn(torch.tensor([1, 3]), class_counts=counts, tau=math.inf)
    _close(w, torch.tensor([0.5 / 0.75, 0.5 / 0.25]))
    with pytest.raises(ValueError):
        temperature_probs(torch.zeros(3), tau=1.0)


def test_cooldown_switches_at_half():
    hp = COOLDOWN.hparams()
    assert hp == {"tau_start": 5.0, "tau_end": 1.0, "switch": 0.5}
    q5, q1 = temperature_probs(COUNTS, tau=5.0), temperature_probs(COUNTS, tau=1.0)
    for progress in (0.0, 0.25, 0.4999):
        _close(COOLDOWN.fn(COUNTS, progress, **hp), q5)
    for progress in (0.5, 0.75, 1.0):
        _close(COOLDOWN.fn(COUNTS, progress, **hp), q1)
    kwargs, expected = COOLDOWN.reference()
    _close(COOLDOWN.fn(**kwargs), expected)


def test_linear_cooldown_holds_then_decays_to_tau_end():
    # Card L3's linear-decay variant: τ_start until the switch, then linear in progress to τ_end at 1.
    hp = COOLDOWN_LINEAR.hparams()
    assert hp == {"tau_start": 5.0, "tau_end": 1.0, "switch": 0.5}
    for progress in (0.0, 0.3, 0.5):
        _close(COOLDOWN_LINEAR.fn(COUNTS, progress, **hp), temperature_probs(COUNTS, tau=5.0))
    for progress, tau in ((0.625, 4.0), (0.75, 3.0), (0.875, 2.0), (1.0, 1.0)):
        _close(COOLDOWN_LINEAR.fn(COUNTS, progress, **hp), temperature_probs(COUNTS, tau=tau))
    # switch = 0: a pure linear decay over the whole run; the head class's share only grows.
    heads = [COOLDOWN_LINEAR.fn(COUNTS, p, **{**hp, "switch": 0.0})[0].item() for p in (0.0, 0.25, 0.5, 1.0)]
    assert heads == sorted(heads) and heads[-1] == pytest.approx(PRIOR[0].item(), rel=1e-5)
    _close(COOLDOWN_LINEAR.fn(COUNTS, 1.0, **{**hp, "switch": 1.0}), temperature_probs(COUNTS, tau=5.0))


def test_upweight_is_q_over_prior():
    targets = torch.tensor([0, 1, 2, 1])
    expected = (temperature_probs(COUNTS, tau=5.0) / PRIOR)[targets]
    _close(TEMP_UPWEIGHT.fn(targets, class_counts=COUNTS, tau=5.0), expected)
    # τ = 1 means no reweighting at all.
    _close(TEMP_UPWEIGHT.fn(targets, class_counts=COUNTS, tau=1.0), torch.ones(4))
    kwargs, expected = TEMP_UPWEIGHT.reference()
    _close(TEMP_UPWEIGHT.fn(**kwargs), expected)


def _toy(counts, dim, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    x = torch.randn(len(y), dim, generator=g) + 0.5 * y[:, None].float()
    w = 0.3 * torch.randn(len(counts), dim, generator=g)
    return x, y, w


@pytest.mark.parametrize("tau", [2.0, 5.0, math.inf])
def test_full_batch_upsampling_equals_upweighting(tau):
    # Theorem 1: the expected gradient of CE on a q(τ)-resampled dataset, Σ_k q_k · mean_{i∈k} ∇ℓ_i,
    # equals the gradient of the proportional (π-sampled) loss weighted by q_y/π_y.
    counts = [60, 30, 10]
    x, y, w0 = _toy(counts, dim=4, seed=0)
    class_counts = torch.tensor(counts, dtype=torch.float32)
    q = TEMP_SAMPLE.fn(class_counts, 0.0, tau=tau)

    w = w0.clone().requires_grad_()
    loss = cross_entropy(x @ w.T, y)
    resampled = sum(q[k] * loss[y == k].mean() for k in range(3))
    (grad_resampled,) = torch.autograd.grad(resampled, w)

    w = w0.clone().requires_grad_()
    weights = TEMP_UPWEIGHT.fn(y, class_counts=class_counts, tau=tau)
    (grad_upweighted,) = torch.autograd.grad((weights * cross_entropy(x @ w.T, y)).mean(), w)
    _close(grad_upweighted, grad_resampled, rtol=1e-4, atol=1e-6)


def test_theorem2_scalarized_variance_at_least_sampled():
    # 2-group toy (900 vs 100), fixed linear softmax model; per-example CE gradients in closed form,
    # (softmax(z) − e_y) ⊗ x. Sampled: group k ~ q(5), example uniform within the group. Scalarized:
    # example uniform over the data, gradient times q_y/π_y. Both are unbiased for the same mean.
    counts, tau, batch, reps = [900, 100], 5.0, 16, 4000
    x, y, w = _toy(counts, dim=3, seed=1)
    per_ex = ((torch.softmax(x @ w.T, -1) - torch.eye(2)[y])[:, :, None] * x[:, None, :]).flatten(1)
    class_counts = torch.tensor(counts, dtype=torch.float32)
    q = TEMP_SAMPLE.fn(class_counts, 0.0, tau=tau)
    weight = TEMP_UPWEIGHT.fn(y, class_counts=class_counts, tau=tau)

    g = torch.Generator().manual_seed(2)
    group = torch.multinomial(q, reps * batch, replacement=True, generator=g)
    offset = torch.tensor([0, counts[0]])[group]
    idx_sampled = offset + (torch.rand(reps * batch, generator=g) * class_counts[group]).long()
    idx_scalar = torch.randint(len(y), (reps * batch,), generator=g)
    est_sampled = per_ex[idx_sampled].view(reps, batch, -1).mean(1)
    est_scalar = (weight[idx_scalar, None] * per_ex[idx_scalar]).view(reps, batch, -1).mean(1)

    def total_var(est):
        return ((est - est.mean(0)) ** 2).sum(1).mean().item()

    # Exact values: per-draw second moments minus |mean|², divided by the batch size.
    target = sum(q[k] * per_ex[y == k].mean(0) for k in range(2))
    second = torch.stack([(per_ex[y == k] ** 2).sum(1).mean() for k in range(2)])
    prior = class_counts / class_counts.sum()
    exact_sampled = ((q * second).sum() - target.square().sum()).item() / batch
    exact_scalar = ((q * q / prior * second).sum() - target.square().sum()).item() / batch

    assert exact_scalar > exact_sampled
    assert total_var(est_scalar) > total_var(est_sampled)
    assert total_var(est_sampled) == pytest.approx(exact_sampled, rel=0.1)
    assert total_var(est_scalar) == pytest.approx(exact_scalar, rel=0.1)
    for est in (est_sampled, est_scalar):  # unbiased: the mean estimate sits within 4 standard errors
        err = (est.mean(0) - target).square().sum().item()
        assert err < 16 * max(exact_sampled, exact_scalar) / reps


def test_validate_rejects_bad_hparams():
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            TEMP_SAMPLE.hparams({"tau": bad})
    with pytest.raises(ValueError):
        COOLDOWN.hparams({"switch": 1.5})
    with pytest.raises(ValueError):
        COOLDOWN_LINEAR.hparams({"tau_end": 0.0})
    with pytest.raises(ValueError):
        TEMP_UPWEIGHT.hparams({"tau": 0.0})
    assert TEMP_SAMPLE.hparams({"tau": math.inf})["tau"] == math.inf
