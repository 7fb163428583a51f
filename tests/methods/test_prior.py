"""Card L2: PRIOR token weights from a reference LM (methods/prior.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

from lossbench import methods
from lossbench.methods.prior import SPEC, prior_weights

HP = SPEC.hparams()


def _setup(seed=0, n=3, t=6, v=9):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t, v, generator=g) * 2
    targets = torch.randint(0, v, (n, t), generator=g)
    mask = torch.rand(n, t, generator=g) < 0.8
    mask[0, 0] = True
    return logits, targets, mask


def _loss(logits, targets, mask, w):
    """The trainer's token_weight objective Σ w·ce / Σ mask."""
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
    return (w * ce * mask).sum() / mask.sum()


def test_registered_reference_and_defaults():
    assert methods.get("prior") is SPEC and SPEC.kind == "token_weight"
    assert HP == {"alpha": 1.0, "form": "one_minus_p", "clip": 10.0}
    kwargs, expected = SPEC.reference()
    assert torch.allclose(SPEC.fn(**kwargs), expected, atol=1e-6)


@pytest.mark.parametrize("form", ["one_minus_p", "inv_p"])
def test_weights_have_mean_one_on_valid_tokens_and_zero_elsewhere(form):
    _, _, mask = _setup()
    g = torch.Generator().manual_seed(3)
    ref_logp = torch.log(torch.rand(mask.shape, generator=g) * 0.98 + 0.01)
    ref_logp[~mask] = -math.inf  # padding may hold anything
    w = prior_weights(ref_logp.requires_grad_(), mask, progress=0.5, alpha=1.0, form=form, clip=10.0)
    assert w.dtype == torch.float32 and not w.requires_grad and torch.all(torch.isfinite(w))
    assert torch.all(w[~mask] == 0) and torch.all(w[mask] > 0)
    assert w[mask].mean().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("form", ["one_minus_p", "inv_p"])
def test_constant_reference_and_alpha_zero_are_plain_ntp(form):
    logits, targets, mask = _setup(seed=1)
    ntp = _loss(logits, targets, mask, torch.ones_like(logits[..., 0]))
    for ref_logp, alpha in [(torch.full(mask.shape, math.log(0.3)), 1.0),  # constant p_ref
                            (torch.log(torch.rand(mask.shape, generator=torch.Generator().manual_seed(2))), 0.0)]:
        w = prior_weights(ref_logp, mask, progress=0.0, alpha=alpha, form=form, clip=10.0)
        assert torch.allclose(w[mask], torch.ones(int(mask.sum())))
        assert _loss(logits, targets, mask, w).item() == pytest.approx(ntp.item(), rel=1e-6)


def test_lower_reference_probability_raises_weight_and_gradient_proportionally():
    # Identical logits and targets at every position, so each token's CE gradient differs only by its weight.
    v, t = 7, 5
    row = torch.randn(v, generator=torch.Generator().manual_seed(4))
    logits = row.expand(1, t, v).clone().requires_grad_()
    targets = torch.full((1, t), 2)
    mask = torch.ones(1, t, dtype=torch.bool)
    p = torch.full((1, t), 0.6)
    p[0, 3] = 0.1  # the reference finds token 3 hard
    w = prior_weights(p.log(), mask, progress=0.5, **HP)
    assert w[0, 3] > w[0, 0] and w[0, 3] / w[0, 0] == pytest.approx(0.9 / 0.4, rel=1e-6)  # (1 − p) ratio
    _loss(logits, targets, mask, w).backward()
    norms = logits.grad[0].norm(dim=-1)
    assert (norms[3] / norms[0]).item() == pytest.approx((w[0, 3] / w[0, 0]).item(), rel=1e-5)


def test_inverse_probability_form_is_clipped():
    # g = min(p^−α, clip): p = [0.5, 0.01] with α = 1, clip 10 -> g = [2, 10], mean 6 -> w = [1/3, 5/3].
    w = prior_weights(torch.tensor([[0.5, 0.01]]).log(), torch.ones(1, 2, dtype=torch.bool), progress=0.0,
                      alpha=1.0, form="inv_p", clip=10.0)
    assert torch.allclose(w, torch.tensor([[1 / 3, 5 / 3]]))


def test_certain_tokens_and_empty_masks_do_not_give_nan():
    mask = torch.ones(2, 3, dtype=torch.bool)
    w = prior_weights(torch.zeros(2, 3), mask, progress=0.0, **HP)  # p_ref = 1 everywhere: (1 − p) = 0
    assert torch.allclose(w, torch.ones(2, 3))
    w = prior_weights(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool), progress=0.0, **HP)
    assert torch.all(w == 0)


def test_validate():
    for bad in ({"alpha": -1.0}, {"clip": 0.0}, {"form": "softmax"}):
        with pytest.raises(ValueError):
            SPEC.hparams(bad)
