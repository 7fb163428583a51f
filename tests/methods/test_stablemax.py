"""StableMax (card G2): the worked values, Proposition 1, smoothness at 0, no spurious NaN, and how
far it is from collapsing compared with softmax."""
import pytest
import torch

from lossbench.methods.stablemax import s, stablemax, stablemax_ce


def test_worked_example_against_softmax():
    z = torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(stablemax(z), torch.tensor([2 / 3, 2 / 9, 1 / 9], dtype=torch.float64))
    torch.testing.assert_close(torch.softmax(z, -1), torch.tensor([0.8438, 0.1142, 0.0420], dtype=torch.float64),
                               atol=1e-4, rtol=0)


def test_proposition_1_stablemax_is_softmax_of_signed_log1p():
    z = torch.randn(64, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 10
    g = torch.sign(z) * torch.log1p(z.abs())  # log s(x): log1p(x) for x ≥ 0, −log1p(−x) for x < 0
    torch.testing.assert_close(stablemax(z), torch.softmax(g, -1), rtol=0, atol=1e-15)


def test_s_is_continuously_differentiable_at_zero_and_never_nan():
    for x0 in (-1e-9, 0.0, 1e-9):
        x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
        (ds,) = torch.autograd.grad(s(x), x)
        assert abs(float(s(x.detach())) - 1) < 1e-8 and abs(float(ds) - 1) < 1e-8
    # x = 1 would put 1/(1 − x) = inf in the discarded branch; its gradient must not leak in as NaN
    z = torch.tensor([[1.0, 1e6, -1e6, 0.0]], dtype=torch.float64, requires_grad=True)
    stablemax_ce(z, torch.tensor([1])).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_not_shift_invariant_unlike_softmax():
    z = torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(torch.softmax(z + 5, -1), torch.softmax(z, -1))
    assert not torch.allclose(stablemax(z + 5), stablemax(z))


@pytest.mark.parametrize("gap, expected", [(2e9, 0.0), (2e8, 1.1102e-16)])
def test_exact_zero_loss_only_at_absurd_scales(gap, expected):
    z = torch.tensor([[gap / 2, -gap / 2]], dtype=torch.float64)
    loss = stablemax_ce(z, torch.tensor([0]))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, torch.tensor([expected]), rtol=1e-3, atol=0)
    # at a gap of 40 softmax CE has long collapsed in float64; StableMax is still far from 0
    assert float(stablemax_ce(torch.tensor([[40.0, 0.0]]), torch.tensor([0]))) > 1e-2
