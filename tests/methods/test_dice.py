"""Self-adjusting Dice (card C8): card value, α = 0 smoothed Dice, minimum at p_y = ½, batch-level Dice."""
import pytest
import torch

from lossbench import methods
from lossbench.methods.dice import DICE_BATCH, SPEC, dice, dice_batch


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _two_class_logits(p):
    """Rows [logit(p), 0], so that softmax(...)[0] = p."""
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.stack([torch.log(p) - torch.log1p(-p), torch.zeros_like(p)], -1).float()


@pytest.mark.parametrize("spec", [SPEC, DICE_BATCH])
def test_reference_matches(spec):
    kwargs, expected = spec.reference()
    torch.testing.assert_close(spec.fn(**kwargs), expected, atol=1e-5, rtol=0)


def test_registry_and_defaults():
    assert methods.get("dice") is SPEC
    assert SPEC.kind == "loss" and SPEC.defaults == {"alpha": 1.0, "gamma": 1.0}
    assert DICE_BATCH.name == "dice_batch" and DICE_BATCH.kind == "batch_loss"
    assert DICE_BATCH.defaults == {"alpha": 0.0, "smooth": 1e-4, "square_denominator": False}


def test_card_value():
    # α = γ = 1 at p_y = 0.880797 (z = [2, 0]) -> 0.425182, the spec's reference().
    out = dice(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), alpha=1.0, gamma=1.0)
    torch.testing.assert_close(out, torch.tensor([0.425182]), atol=1e-6, rtol=0)


def test_alpha_zero_is_smoothed_dice():
    p = torch.linspace(0.05, 0.95, 19)
    for gamma in (0.1, 1.0):
        out = dice(_two_class_logits(p), torch.zeros(19, dtype=torch.long), alpha=0.0, gamma=gamma)
        torch.testing.assert_close(out, 1 - (2 * p + gamma) / (p + 1 + gamma))
    # z = [2, 0], γ = 1: 1 - (2·0.880797 + 1)/(0.880797 + 2) = 0.041378 (float64)
    out = dice(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), alpha=0.0, gamma=1.0)
    torch.testing.assert_close(out, torch.tensor([0.041378]), atol=1e-6, rtol=0)


def test_alpha_one_minimised_at_half():
    p = torch.linspace(0.01, 0.99, 99)  # step 0.01, contains 0.5
    out = dice(_two_class_logits(p), torch.zeros(99, dtype=torch.long), alpha=1.0, gamma=1.0)
    assert abs(p[out.argmin()].item() - 0.5) < 1e-6
    assert out[-1] > out[49] and out[0] > out[49]  # p_y -> 1 is penalised like p_y -> 0


def test_argmax_stays_correct_when_others_share_the_rest():
    k = 5
    g = _gen(0)
    y = torch.randint(0, k, (8,), generator=g)
    z = torch.randn(8, k, generator=g).requires_grad_(True)
    for _ in range(40):  # plain gradient descent on the logits
        (grad,) = torch.autograd.grad(dice(z, y, alpha=1.0, gamma=1.0).sum(), z)
        with torch.no_grad():
            z -= 3.0 * grad
    p = torch.softmax(z.detach(), -1)
    p_y = p.gather(-1, y[:, None]).squeeze(-1)
    assert torch.all((p_y - 0.5).abs() < 0.02)  # converged to the minimum p_y = 1/2, not 1
    assert torch.equal(p.argmax(-1), y)  # K - 1 >= 2 other classes share the other half


def test_large_logits_finite():
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    out = dice(z, y, alpha=1.0, gamma=1.0)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(z.grad).all()
    # p_y = 1 and p_y = 0 both give w = 0, so loss = 1 - γ/(1 + γ) = ½: α = 1 cannot tell them apart.
    torch.testing.assert_close(out, torch.full((2,), 0.5))


def test_bf16_input_computes_in_float32():
    g = _gen(1)
    z, y = torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    assert dice(z.bfloat16(), y, **SPEC.hparams()).dtype == torch.float32
    assert dice_batch(z.bfloat16(), y, **DICE_BATCH.hparams()).dtype == torch.float32


def test_batch_perfect_predictions_give_zero():
    g = _gen(2)
    y = torch.randint(0, 6, (32,), generator=g)  # some classes may be absent: their Dice is s/s = 1
    z = 40.0 * torch.nn.functional.one_hot(y, 6).float()
    for square in (False, True):
        out = dice_batch(z, y, alpha=0.0, smooth=1e-4, square_denominator=square)
        assert out.shape == () and abs(out.item()) < 1e-5


def test_batch_permutation_invariant_and_finite_grads():
    g = _gen(3)
    z, y = torch.randn(24, 4, generator=g), torch.randint(0, 4, (24,), generator=g)
    perm = torch.randperm(24, generator=g)
    for hp in (DICE_BATCH.hparams(), DICE_BATCH.hparams({"alpha": 1.0, "square_denominator": True})):
        torch.testing.assert_close(dice_batch(z[perm], y[perm], **hp), dice_batch(z, y, **hp))
        zz = (z * 1e4).requires_grad_(True)
        out = dice_batch(zz, y, **hp)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(zz.grad).all()


def test_validate():
    with pytest.raises(ValueError, match="alpha"):
        SPEC.hparams({"alpha": -1.0})
    with pytest.raises(ValueError, match="gamma"):
        SPEC.hparams({"gamma": -0.5})
    with pytest.raises(ValueError, match="smooth"):
        DICE_BATCH.hparams({"smooth": 0.0})
