"""Card L8: PaLM z-loss as a per-token penalty on the loss layer's lse (methods/zloss.py)."""
import pytest
import torch

from lossbench import methods
from lossbench.lm_loss import token_losses
from lossbench.methods.zloss import SPEC, z_loss

ALPHA = 1e-4


def test_registered_reference_and_defaults():
    assert methods.get("zloss") is SPEC and SPEC.kind == "token_penalty"
    assert SPEC.hparams() == {"alpha": 1e-4}  # PaLM
    kwargs, expected = SPEC.reference()
    assert torch.allclose(SPEC.fn(**kwargs), expected)


def test_analytic_gradient_matches_autograd():
    # d/dz_v α·lse(z)² = 2α·lse·softmax(z)_v, on valid tokens only.
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 5, 13, generator=g) * 4 + 3).requires_grad_()
    mask = torch.rand(2, 5, generator=g) < 0.7
    lse = torch.logsumexp(logits, -1)
    z_loss(lse, mask, alpha=ALPHA).sum().backward()
    expected = 2 * ALPHA * lse.detach()[..., None] * torch.softmax(logits.detach(), -1) * mask[..., None]
    assert torch.allclose(logits.grad, expected, rtol=1e-5, atol=1e-10)


def test_shift_leaves_ce_unchanged_and_moves_the_z_term_to_lse_plus_c():
    # Through the loss layer: adding c to every logit (a bias of c) keeps CE, and z becomes α(lse + c)².
    g = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(2, 6, 8, generator=g), torch.randn(10, 8, generator=g)
    labels = torch.randint(0, 10, (2, 6), generator=g)
    labels[1, 4:] = -100
    mask = labels != -100
    bias = torch.randn(10, generator=g)
    ce0, lse0 = token_losses(hidden, weight, labels, bias=bias)
    for c in (-5.0, 0.5, 20.0):
        ce, lse = token_losses(hidden, weight, labels, bias=bias + c)
        assert torch.allclose(ce, ce0, atol=1e-5)
        expected = torch.where(mask, ALPHA * (lse0 + c) ** 2, 0.0)
        assert torch.allclose(z_loss(lse, mask, alpha=ALPHA), expected, rtol=1e-5, atol=1e-9)


def test_masked_tokens_contribute_zero_and_math_is_float32():
    lse = torch.tensor([[1e4, 3.0], [float("inf"), -2.0]], dtype=torch.bfloat16)
    mask = torch.tensor([[False, True], [False, True]])
    out = z_loss(lse, mask, alpha=ALPHA)
    assert out.dtype == torch.float32
    assert out[0, 0] == 0 and out[1, 0] == 0  # even an infinite lse at a padded position
    assert out[1, 1].item() == pytest.approx(4e-4)
    assert torch.all(z_loss(lse.float(), mask, alpha=0.0) == 0)


def test_validate():
    with pytest.raises(ValueError):
        SPEC.hparams({"alpha": -1e-4})
