"""Cards K2 and K3: softmax variants (lossbench/kernels/softmax.py) against float64."""
import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from lossbench.kernels import registry, softmax
from lossbench.kernels.softmax import PASSES, softmax_float64

WRITTEN = {name: registry.get(name).fn for name in ("softmax_3p_recompute", "softmax_3p_reload",
                                                    "softmax_2p_extexp", "softmax_2p_online")}
NEG_INF = float("-inf")


def _hard_rows(v=300, seed=0):
    """Rows a naive exp overflows or underflows on, masked entries, a fully masked row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(10, v, generator=g) * 5
    x[0, :40] = 1e4 - torch.rand(40, generator=g) * 8  # e^x overflows float32 (and float64)
    x[1] = -1e4 + torch.rand(v, generator=g) * 8  # every e^x underflows to 0
    x[2, ::2] = 1e4
    x[2, 1::2] = -1e4
    x[3, ::3] = NEG_INF  # masked vocabulary entries
    x[4] = NEG_INF  # a fully masked row
    x[5, :-1] = NEG_INF  # one entry left
    x[6] = 1e3 * torch.randn(v, generator=g)  # the card's ±1000 scale
    return x


def _check(y, x, rel):
    """Elementwise relative error on the entries that carry the mass (within e^-10 of the row's
    largest: further down, the float32 rounding of x − max alone costs |x − max|·2^-24 relative),
    absolute error everywhere, rows sum to 1 (0 when fully masked), no NaN."""
    ref = softmax_float64(x)
    y = y.double()
    assert y.shape == x.shape and not torch.isnan(y).any()
    near = (x.double() - x.double().amax(-1, keepdim=True) >= -10) & (ref > 0)
    assert ((y - ref).abs()[near] / ref[near]).max() <= rel
    assert (y - ref).abs().max() <= rel
    assert torch.allclose(y.sum(-1), ref.sum(-1), atol=max(rel, 1e-6), rtol=0)


@pytest.mark.parametrize("name", WRITTEN)
@pytest.mark.parametrize("block", [1, 7, 64, 10_000])
def test_float32_matches_float64_on_overflowing_and_masked_rows(name, block):
    x = _hard_rows()
    y = WRITTEN[name](x, block=block)
    assert y.dtype == torch.float32
    _check(y, x, rel=1e-6)
    assert torch.all(y[4] == 0)  # a fully masked row has no distribution: zeros, not NaN
    assert y[5, -1] == 1


@pytest.mark.parametrize("name", WRITTEN)
def test_bfloat16_in_bfloat16_out(name):
    x = _hard_rows(seed=1).bfloat16()
    y = WRITTEN[name](x, block=64)
    assert y.dtype == torch.bfloat16
    # Storing y in bfloat16 rounds once (the reload variant twice: exp, then the rescale).
    _check(y, x, rel=2 * 2.0**-8 if name == "softmax_3p_reload" else 2.0**-8)


def test_torch_softmax_baseline_on_finite_rows():
    # torch's CPU float32 softmax is less accurate than the variants here (~1e-5 relative measured).
    x = _hard_rows()[[0, 1, 2, 6, 7, 8, 9]]
    _check(registry.get("torch_softmax").fn(x), x, rel=1e-4)


@pytest.mark.parametrize("name", WRITTEN)
def test_permutation_equivariant(name):
    x = _hard_rows(seed=2)
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(3))
    fn = WRITTEN[name]
    torch.testing.assert_close(fn(x[:, perm], block=32), fn(x, block=32)[:, perm], atol=1e-7, rtol=1e-6)


def test_extexp_sum_equals_float64_sum():
    x = _hard_rows(seed=4)
    for block in (1, 13, 1000):
        m, e = softmax.extexp_sum(x, block=block)
        log_sum = m.double().log() + e.double() * math.log(2)
        lse = torch.logsumexp(x.double(), -1, keepdim=True)
        finite = torch.isfinite(lse)
        assert (log_sum[finite] - lse[finite]).abs().max() < 1e-6  # relative error of the sum
        assert torch.all(m[~finite] == 0) and torch.all(log_sum[~finite] == NEG_INF)
        assert torch.equal(e[finite], e[finite].round())  # an exponent of 2, kept apart from m


def test_extexp_represents_exp():
    x = torch.linspace(-80, 80, 10_001)
    p, n = softmax.extexp(x)
    assert torch.equal(n, n.round()) and (p >= 0.69).all() and (p <= 1.45).all()
    torch.testing.assert_close(p.double() * torch.exp2(n.double()), torch.exp(x.double()), rtol=5e-7, atol=0)


def _state(x):
    return softmax.online_normalizer(x, block=5)


def test_online_merge_is_associative_and_streams_to_logsumexp():
    g = torch.Generator().manual_seed(5)
    a, b, c = (torch.randn(4, n, generator=g) * 20 for n in (3, 17, 40))
    left = softmax.merge_online(softmax.merge_online(_state(a), _state(b)), _state(c))
    right = softmax.merge_online(_state(a), softmax.merge_online(_state(b), _state(c)))
    for u, v in zip(left, right):
        torch.testing.assert_close(u, v, rtol=1e-6, atol=0)
    x = torch.cat([a, b, c], 1)
    lse = torch.logsumexp(x.double(), -1, keepdim=True)
    for block in (1, 9, 60):  # chunk sizes that do and do not divide the row
        m, d = softmax.online_normalizer(x, block=block)
        torch.testing.assert_close(m.double() + d.double().log(), lse, rtol=1e-6, atol=1e-6)
    masked = softmax.merge_online(_state(torch.full((2, 3), NEG_INF)), _state(torch.full((2, 4), NEG_INF)))
    assert torch.all(masked[0] == NEG_INF) and torch.all(masked[1] == 0)  # no NaN from −inf − (−inf)


class _CountPasses(TorchFunctionMode):
    """Counts block reads of [R, V] arrays (x, and y when the algorithm reads it back) and block writes."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.reads, self.writes = shape, 0, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__getitem__ and args[0].shape == self.shape:
            self.reads += 1
        if func is torch.Tensor.__setitem__:
            self.writes += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", WRITTEN)
def test_passes_over_memory_are_the_algorithms(name):
    x, block = torch.randn(3, 50), 10  # 5 blocks
    with _CountPasses(x.shape) as count:
        WRITTEN[name](x, block=block)
    assert (count.reads / 5, count.writes / 5) == PASSES[WRITTEN[name].__name__]


def test_block_must_be_positive():
    with pytest.raises(ValueError, match="block"):
        softmax.two_pass_online(torch.randn(2, 3), block=0)
