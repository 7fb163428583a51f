"""The kernels registry (lossbench/kernels/registry.py): names, capabilities, clear refusals."""
import pytest
import torch

from lossbench import kernels
from lossbench.kernels import registry
from lossbench.kernels.registry import KernelImpl


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(KeyError, match="Did you mean cce_exact") as err:
        kernels.get("cce_exakt")
    assert all(name in str(err.value) for name in registry.IMPLS)


def test_entries_are_consistent():
    assert set(registry.names("linear_ce")) | set(registry.names("softmax")) == set(registry.IMPLS)
    for name, impl in registry.IMPLS.items():
        assert impl.name == name and callable(impl.fn) and set(impl.devices) <= {"cpu", "cuda"}
        if impl.kind == "softmax":
            assert impl.passes is not None and not impl.grads
        else:
            assert impl.kind == "linear_ce" and impl.grads and impl.passes is None
    # the card's fused kernels keep logits on chip; everything else moves them through memory
    assert [n for n in registry.names("linear_ce") if not registry.get(n).materialises_logits] == ["cce", "cce_exact"]


def test_unavailable_says_why():
    assert registry.unavailable(registry.get("ce_eager"), "cpu") is None
    assert "cuda" in registry.unavailable(registry.get("liger_flce"), "cpu")
    assert "cuda" in registry.unavailable(registry.get("cce"), "cpu")
    missing = KernelImpl("x", "linear_ce", lambda *a: None, "K0", package="no_such_package_here")
    assert "no_such_package_here" in registry.unavailable(missing, "cpu")
    assert "does not take" in registry.unavailable(registry.get("ce_eager"), "cpu", torch.float64)
    if not torch.cuda.is_available():
        assert registry.unavailable(registry.get("ce_eager"), "cuda") == "CUDA is not available"
