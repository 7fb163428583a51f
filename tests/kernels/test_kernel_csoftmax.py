"""Card K2 (iii): the softmax variants as C loops (lossbench/kernels/csoftmax.c) against float64,
on the same hard rows as the torch-op variants, and the registry's availability check."""
import pytest
import torch

from lossbench.kernels import csoftmax, registry
from tests.kernels.test_kernel_softmax import _check, _hard_rows

C_IMPLS = ("softmax_c_3p_recompute", "softmax_c_3p_reload", "softmax_c_2p_extexp", "softmax_c_2p_online")
needs_cc = pytest.mark.skipif(csoftmax.unavailable() is not None, reason=str(csoftmax.unavailable()))


@needs_cc
@pytest.mark.parametrize("name", C_IMPLS)
@pytest.mark.parametrize("v", [1, 15, 16, 300, 1024, 1041, 5000])
def test_c_variants_match_float64_on_hard_rows(name, v):
    # v around LANES (16) and BLOCK (1024): whole blocks, a partial block of lanes, a scalar tail
    x = _hard_rows(v=max(v, 40))[:, :v].contiguous()
    y = registry.get(name).fn(x)
    assert y.dtype == torch.float32
    _check(y, x, rel=1e-6)
    assert torch.all(y[4] == 0)  # fully masked row: zeros
    if v >= 40:  # one entry left: 1 within an ulp (the loops multiply by 1/σ rather than divide)
        assert abs(y[5, -1].item() - 1) <= 2**-24


@needs_cc
@pytest.mark.parametrize("name", C_IMPLS)
def test_c_variants_are_permutation_equivariant_and_sum_to_one_on_long_rows(name):
    g = torch.Generator().manual_seed(3)
    x = 4 * torch.randn(3, 70_000, generator=g)  # 68 blocks: the blocked sums keep the error small
    perm = torch.randperm(x.shape[1], generator=g)
    fn = registry.get(name).fn
    y = fn(x)
    _check(y, x, rel=1e-6)
    assert torch.allclose(fn(x[:, perm]), y[:, perm], rtol=1e-6, atol=1e-12)


@needs_cc
def test_c_variants_refuse_what_they_cannot_take():
    with pytest.raises(ValueError, match="float32 CPU"):
        csoftmax.c_two_pass_extexp(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="2-D"):
        csoftmax.c_two_pass_extexp(torch.zeros(3))
    y = csoftmax.c_two_pass_extexp(torch.zeros(4, 6)[:, ::2])  # non-contiguous input is copied first
    assert torch.allclose(y, torch.full((4, 3), 1 / 3))


def test_registry_says_why_without_a_compiler(monkeypatch):
    impl = registry.get("softmax_c_2p_extexp")
    assert impl.passes == (2, 1) and registry.get("softmax_c_3p_reload").passes == (3, 2)
    assert registry.unavailable(impl, "cuda") == "softmax_c_2p_extexp runs on cpu only"
    assert "does not take" in registry.unavailable(impl, "cpu", torch.bfloat16)
    monkeypatch.setenv("CC", "no-such-compiler-here")
    csoftmax.library.cache_clear()
    try:
        assert registry.unavailable(impl, "cpu", torch.float32) == "C softmax: no C compiler (set CC or install gcc)"
    finally:
        monkeypatch.delenv("CC")
        csoftmax.library.cache_clear()


def test_c_extexp_cutoff_is_the_python_one():
    # csoftmax.c's XMIN is softmax.EXTEXP_RANGE: the two extended-exponent variants mask and redo the same rows
    import re

    from lossbench.kernels import softmax
    (xmin,) = re.findall(r"#define XMIN \(([-0-9.e]+)f\)", csoftmax.SOURCE.read_text())
    assert float(xmin) == -softmax.EXTEXP_RANGE


@needs_cc
@pytest.mark.parametrize("name", C_IMPLS)
def test_c_variants_issue_rows(name):
    # issue 16's three rows: a very negative row, +inf with V >= 16, NaN (torch: a NaN row)
    fn = registry.get(name).fn
    y = fn(torch.tensor([[-30000.0, -30001.0, -30002.0]]))
    torch.testing.assert_close(y, torch.softmax(torch.tensor([[0.0, -1.0, -2.0]]), -1), rtol=1e-6, atol=0)
    x = torch.zeros(2, 20)
    x[0, 3] = float("inf")
    x[1, 5] = float("nan")
    assert fn(x).isnan().all()
