"""Card L9: the shared LM loss layer (lossbench/lm_loss.py) against F.cross_entropy on full logits."""
import importlib.util

import pytest
import torch
import torch.nn.functional as F

import lossbench.lm_loss as lm_loss
from lossbench.lm_loss import IGNORE_INDEX, IMPLS, resolve_impl, token_losses

B, T, D, V = 3, 7, 8, 11


def _inputs(seed=0, dtype=torch.float32, device="cpu", bias=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, D, generator=g) * 2
    weight = torch.randn(V, D, generator=g)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, -3:] = IGNORE_INDEX  # a padded tail
    labels[2, 1] = IGNORE_INDEX  # and one hole
    b = torch.randn(V, generator=g) if bias else None
    to = dict(dtype=dtype, device=device)
    return (hidden.to(**to), weight.to(**to), labels.to(device),
            None if b is None else b.to(**to))


def _expected(hidden, weight, labels, bias):
    logits = hidden.double() @ weight.double().T + (0 if bias is None else bias.double())
    ce = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), reduction="none").view(B, T)
    lse = torch.logsumexp(logits, -1) * (labels != IGNORE_INDEX)
    return ce, lse


def _close(actual, expected, atol=1e-5, rtol=1e-5):
    assert actual.shape == expected.shape and torch.allclose(actual.double(), expected.double(), atol=atol, rtol=rtol), (
        f"max abs diff {(actual.double() - expected.double()).abs().max()}")


@pytest.mark.parametrize("impl", ["torch", "chunked"])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_cross_entropy_with_ignored_positions(impl, bias):
    hidden, weight, labels, b = _inputs(bias=bias)
    ce, lse = token_losses(hidden, weight, labels, impl=impl, bias=b, chunk_size=4)
    assert ce.dtype == lse.dtype == torch.float32 and ce.shape == lse.shape == (B, T)
    exp_ce, exp_lse = _expected(hidden, weight, labels, b)
    _close(ce, exp_ce)
    _close(lse, exp_lse)
    ignored = labels == IGNORE_INDEX
    assert torch.all(ce[ignored] == 0) and torch.all(lse[ignored] == 0)
    # ce = lse − z_y at every target position
    z_y = torch.einsum("btd,btd->bt", hidden, weight[labels.clamp_min(0)]) + (0 if b is None else b[labels.clamp_min(0)])
    _close(ce[~ignored], (lse - z_y)[~ignored])


@pytest.mark.parametrize("impl", ["torch", "chunked"])
def test_without_lse_the_ce_is_bitwise_the_same(impl):
    """Callers that never read the log-partition skip it; the CE and its gradients do not change."""
    hidden, weight, labels, b = _inputs(bias=True)
    outs = []
    for with_lse in (True, False):
        leaves = [t.clone().requires_grad_() for t in (hidden, weight, b)]
        ce, lse = token_losses(*leaves[:2], labels, impl=impl, bias=leaves[2], chunk_size=4, with_lse=with_lse)
        assert (lse is None) == (not with_lse)
        ce.sum().backward()
        outs.append([ce.detach(), *(t.grad for t in leaves)])
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_low_precision_inputs_and_autocast_compute_in_float32():
    hidden, weight, labels, _ = _inputs()
    ref_ce, ref_lse = token_losses(hidden.bfloat16().float(), weight.bfloat16().float(), labels)
    ce, lse = token_losses(hidden.bfloat16(), weight.bfloat16(), labels)
    assert ce.dtype == lse.dtype == torch.float32
    _close(ce, ref_ce, atol=1e-6)
    _close(lse, ref_lse, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # would otherwise run the head matmul in bf16
        ce, lse = token_losses(hidden, weight, labels, impl="chunked", chunk_size=5)
    exp_ce, exp_lse = _expected(hidden, weight, labels, None)
    _close(ce, exp_ce)
    _close(lse, exp_lse)


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_chunked_values_and_gradients_match_torch_for_nonuniform_upstream(chunk_size):
    # Per-token weights u on ce and v on lse, as DLSR/PRIOR (u) and the z-loss (v) apply them.
    hidden, weight, labels, bias = _inputs(seed=1, bias=True)
    g = torch.Generator().manual_seed(2)
    u, v = torch.rand(B, T, generator=g) * 3, torch.rand(B, T, generator=g)
    results = {}
    for impl in ("torch", "chunked"):
        leaves = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
        ce, lse = token_losses(leaves[0], leaves[1], labels, impl=impl, bias=leaves[2], chunk_size=chunk_size)
        ((u * ce).sum() + (v * lse.square()).sum()).backward()
        results[impl] = (ce.detach(), lse.detach(), *(x.grad for x in leaves))
    for a, b in zip(results["torch"], results["chunked"]):
        _close(b, a, atol=1e-5)
    assert results["chunked"][2].abs().sum() > 0


def test_bad_arguments_raise():
    hidden, weight, labels, _ = _inputs()
    assert IMPLS == ("torch", "chunked", "cce")
    with pytest.raises(ValueError, match="impl"):
        token_losses(hidden, weight, labels, impl="fused")
    with pytest.raises(ValueError, match="shapes"):
        token_losses(hidden, weight[:, :-1], labels)
    with pytest.raises(ValueError, match="chunk_size"):
        token_losses(hidden, weight, labels, impl="chunked", chunk_size=0)
    with pytest.raises(RuntimeError, match="CUDA"):  # clear error, not a Triton traceback, on CPU
        token_losses(hidden, weight, labels, impl="cce")


_HAS_CCE = importlib.util.find_spec("cut_cross_entropy") is not None


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and _HAS_CCE), reason="needs CUDA and cut-cross-entropy")
@pytest.mark.parametrize("bias", [False, True])
def test_cce_matches_torch_on_gpu(bias):
    hidden, weight, labels, b = _inputs(seed=3, device="cuda", bias=bias)
    g = torch.Generator().manual_seed(4)
    u = (torch.rand(B, T, generator=g) * 3).cuda()
    results = {}
    for impl in ("torch", "cce"):
        leaves = [x.clone().requires_grad_() for x in (hidden, weight)]
        ce, lse = token_losses(*leaves, labels, impl=impl, bias=b)
        ((u * ce).sum() + (u * lse).sum()).backward()
        results[impl] = (ce.detach(), lse.detach(), *(x.grad for x in leaves))
    for a, c in zip(results["torch"], results["cce"]):
        _close(c, a, atol=1e-4, rtol=1e-4)


def test_upcast_logits_matches_and_keeps_float64():
    # upcast="logits" (the kernels track's setting) multiplies in the inputs' dtype; in float32 it is
    # the default path, and float64 inputs stay float64 (the kernels benchmark's reference).
    hidden, weight, labels, bias = _inputs(seed=5, bias=True)
    ref_ce, ref_lse = token_losses(hidden, weight, labels, bias=bias)
    for kw in (dict(impl="torch"), dict(impl="chunked", chunk_size=4)):
        ce, lse = token_losses(hidden, weight, labels, bias=bias, upcast="logits", **kw)
        _close(ce, ref_ce, atol=1e-6)
        _close(lse, ref_lse, atol=1e-6)
    ce64, lse64 = token_losses(hidden.double(), weight.double(), labels, bias=bias.double(), upcast="logits")
    assert ce64.dtype == lse64.dtype == torch.float64
    exp_ce, exp_lse = _expected(hidden, weight, labels, bias)
    _close(ce64, exp_ce, atol=1e-12, rtol=1e-12)
    _close(lse64, exp_lse, atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="upcast"):
        token_losses(hidden, weight, labels, upcast="half")


def test_resolve_impl_names_and_auto_rules(monkeypatch):
    for impl in IMPLS:  # a named implementation is never second-guessed
        assert resolve_impl(impl, "cpu", 10**9, 10**6) == impl
    with pytest.raises(ValueError, match="'fused' not in .*auto"):
        resolve_impl("fused", "cpu", 1, 1)
    assert not lm_loss.cce_usable("cpu")
    assert resolve_impl("auto", "cpu", 4096, 50257) == "torch"  # 0.8 GB of float32 logits: materialise
    assert resolve_impl("auto", "cpu", 8192, 50257) == "chunked"  # 1.6 GB: chunk
    assert resolve_impl("auto", "cpu", 100, 100, max_logits_bytes=100 * 100 * 4) == "torch"  # the limit itself fits
    assert resolve_impl("auto", "cpu", 100, 101, max_logits_bytes=100 * 100 * 4) == "chunked"
    monkeypatch.setattr(lm_loss, "cce_usable", lambda device: True)
    assert resolve_impl("auto", "cuda", 1, 1) == "cce"


def test_auto_matches_torch_values_and_gradients():
    hidden, weight, labels, bias = _inputs(bias=True)
    out = {}
    for impl in ("torch", "auto"):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        ce, lse = token_losses(h, w, labels, impl=impl, bias=bias)
        (ce.sum() + 0.1 * lse.sum()).backward()
        out[impl] = (ce, lse, h.grad, w.grad)
    for a, b in zip(out["auto"], out["torch"]):
        assert torch.equal(a, b)
