"""Cards K1 and K4: every linear cross-entropy implementation against a float64 closed form.

The card's CPU smoke shapes (N=256, V=1000, D=64, float32, seeded) with 20 % ignored tokens, for
the mean and for reduction="none" under a non-uniform per-token weight vector (what DLSR and
PRIOR backpropagate). The reference does not call F.cross_entropy: ℓ = lse − z_y, and with
upstream weights g, G = diag(g)(softmax − onehot), dE = G·C, dC = Gᵀ·E (card notation).
"""
import pytest
import torch

from lossbench.kernels import registry
from lossbench.kernels.linear_ce import lce_chunked
from lossbench.lm_loss import IGNORE_INDEX

N, V, D = 256, 1000, 64
CE_IMPLS = registry.names("linear_ce")


def _inputs(seed=0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=g)
    weight = torch.randn(V, D, generator=g) * 0.4  # logits of std ~3: a peaked softmax, not a flat one
    labels = torch.randint(0, V, (N,), generator=g)
    labels[torch.rand(N, generator=g) < 0.2] = IGNORE_INDEX
    labels[-5:] = IGNORE_INDEX  # a padded tail
    w = torch.rand(N, generator=g) * 3  # non-uniform per-token weights
    return hidden.to(device, dtype), weight.to(device, dtype), labels.to(device), w.to(device)


def _reference(hidden, weight, labels, w, reduction):
    """float64 (per-token or mean loss, dE, dC) from the closed form."""
    e, c = hidden.double(), weight.double()
    valid = labels != IGNORE_INDEX
    z = e @ c.T
    lse = torch.logsumexp(z, -1)
    ce = (lse - z.gather(1, labels.clamp_min(0)[:, None])[:, 0]) * valid
    g = w.double() * valid if reduction == "none" else valid / valid.sum()
    onehot = torch.zeros_like(z).scatter_(1, labels.clamp_min(0)[:, None], 1.0)
    grad_z = g[:, None] * (torch.softmax(z, -1) - onehot)
    loss = ce if reduction == "none" else ce.sum() / valid.sum()
    return loss, grad_z @ c, grad_z.T @ e


def _run(fn, hidden, weight, labels, w, reduction):
    e, c = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    out = fn(e, c, labels, reduction)
    (out if reduction == "mean" else (out * w).sum()).backward()
    return out.detach(), e.grad, c.grad


def _assert_matches(got, ref, atol=1e-5, grad_rel=1e-5):
    loss, de, dc = got
    ref_loss, ref_de, ref_dc = ref
    assert loss.dtype == torch.float32 and loss.shape == ref_loss.shape
    torch.testing.assert_close(loss.double(), ref_loss, atol=atol, rtol=1e-5)
    for grad, ref_grad in ((de, ref_de), (dc, ref_dc)):
        torch.testing.assert_close(grad.double(), ref_grad, atol=atol, rtol=1e-5)
        # and normwise, which is stricter than atol for the small gradients of a mean
        assert (grad.double() - ref_grad).abs().max() <= grad_rel * ref_grad.abs().max()


def _cpu_params():
    for name in CE_IMPLS:
        impl = registry.get(name)
        if "cpu" in impl.devices:
            yield pytest.param(name, marks=[pytest.mark.slow] if impl.compiled else [])


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name", list(_cpu_params()))
def test_cpu_implementations_match_float64(name, reduction):
    impl = registry.get(name)
    reason = registry.unavailable(impl, "cpu", torch.float32)
    if reason:
        pytest.skip(reason)
    hidden, weight, labels, w = _inputs()
    got = _run(impl.fn, hidden, weight, labels, w, reduction)
    _assert_matches(got, _reference(hidden, weight, labels, w, reduction))
    if reduction == "none":
        assert torch.all(got[0][labels == IGNORE_INDEX] == 0)


@pytest.mark.gpu
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name", CE_IMPLS)
def test_gpu_implementations_match_float64(name, reduction):
    impl = registry.get(name)
    reason = registry.unavailable(impl, "cuda", torch.float32)
    if reason:
        pytest.skip(reason)
    hidden, weight, labels, w = _inputs(device="cuda")
    got = _run(impl.fn, hidden, weight, labels, w, reduction)
    # TF32 is off by default for matmuls; CCE's gradient filter (eps 2^-28 in float32) skips only
    # blocks far below this tolerance.
    _assert_matches(tuple(t.cpu() for t in got), _reference(*(t.cpu() for t in (hidden, weight, labels, w)),
                                                            reduction))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 5e-6)])
def test_lce_chunked_does_not_depend_on_the_chunk_size(dtype, tol):
    # Normwise (max |Δ| / max |x|). Not bitwise in float64, nor 1e-6 in float32, as the card hoped:
    # BLAS picks its kernel (and summation order) by shape (chunk 1 is a matrix-vector product;
    # dE differed by 1.4e-6 normwise), and dC sums the chunks' contributions in another order.
    hidden, weight, labels, w = (t[:32] if t.shape[0] == N else t for t in _inputs(seed=1, dtype=dtype))
    runs = [_run(lambda *a, cs=cs: lce_chunked(*a, chunk_size=cs), hidden, weight, labels, w, "none")
            for cs in (1, 5, 4096)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert (b - a).abs().max() <= tol * a.abs().max()


def test_bad_reduction_raises():
    hidden, weight, labels, _ = _inputs()
    for name in ("ce_eager", "lce_chunked"):
        with pytest.raises(ValueError, match="reduction"):
            registry.get(name).fn(hidden, weight, labels, "sum")
