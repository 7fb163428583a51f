"""Contracts every registered method must keep, whatever its kind (conventions §8)."""
import math

import pytest
import torch

import methods
from methods.base import KINDS, MethodSpec

NAMES = list(methods.REGISTRY)
K, B = 5, 16


def _batch(seed=0, scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, K, generator=g) * scale).to(dtype)
    targets = torch.randint(0, K, (B,), generator=g)
    counts = torch.tensor([100.0, 50.0, 20.0, 8.0, 2.0])
    return logits, targets, counts


def _call(spec: MethodSpec, logits, targets, counts, progress=0.5):
    """The method's output for a batch, called the way the trainer calls it."""
    hp = spec.hparams()
    needs = {"class_counts": counts, "progress": progress}
    kw = {k: needs[k] for k in spec.needs if k != "example_state"}
    if spec.kind == "sampler":
        return spec.fn(counts, progress=progress, **hp)  # samplers always get both (methods/base.py)
    if spec.kind == "reweight":
        return spec.fn(targets, **kw, **hp)
    if "example_state" in spec.needs:
        state = torch.full((len(targets),), float(spec.init_state(hp)))
        loss, new_state = spec.fn(logits, targets, example_state=state, **kw, **hp)
        assert new_state.shape == state.shape and not new_state.requires_grad
        return loss
    return spec.fn(logits, targets, **kw, **hp)


@pytest.mark.parametrize("name", NAMES)
def test_spec_fields(name):
    spec = methods.get(name)
    assert spec.name == name and spec.kind in KINDS
    assert spec.paper and spec.url.startswith("http") and spec.card and spec.summary
    assert spec.version >= 1 and spec.reference is not None
    assert set(spec.search) <= set(spec.defaults)


@pytest.mark.parametrize("name", NAMES)
def test_reference_value(name):
    spec = methods.get(name)
    kwargs, expected = spec.reference()
    out = spec.fn(**kwargs)
    # stateful losses return (loss, new_state); their reference may give both or the loss only
    outs = out if isinstance(out, tuple) else (out,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for o, e in zip(outs, expected):
        torch.testing.assert_close(torch.as_tensor(o, dtype=torch.float64), torch.as_tensor(e, dtype=torch.float64),
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_shapes_finite_and_gradients(name, scale):
    spec = methods.get(name)
    logits, targets, counts = _batch(scale=scale)
    logits.requires_grad_(True)
    out = _call(spec, logits, targets, counts)
    if spec.kind == "sampler":
        assert out.shape == (K,) and torch.all(out >= 0) and math.isclose(float(out.sum()), 1.0, rel_tol=1e-5)
        return
    if spec.kind == "reweight":
        assert out.shape == (B,) and not out.requires_grad and torch.all(torch.isfinite(out)) and torch.all(out >= 0)
        return
    expected_shape = () if spec.kind == "batch_loss" else (B,)
    assert out.shape == expected_shape
    assert torch.all(torch.isfinite(out))
    out.sum().backward()
    assert torch.all(torch.isfinite(logits.grad))


@pytest.mark.parametrize("name", [n for n in NAMES if methods.get(n).kind in ("loss", "batch_loss")])
def test_bf16_inputs_compute_in_float32(name):
    spec = methods.get(name)
    logits, targets, counts = _batch(dtype=torch.bfloat16)
    out = _call(spec, logits, targets, counts)
    assert out.dtype == torch.float32 and torch.all(torch.isfinite(out))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    spec = methods.get(name)
    a = _call(spec, *_batch(seed=3))
    b = _call(spec, *_batch(seed=3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_methods_of_one_kind_differ():
    """A broken dispatch that silently ran the baseline would make two methods agree."""
    logits, targets, counts = _batch(seed=7)
    outs = {}
    for name in NAMES:
        spec = methods.get(name)
        if spec.kind == "loss" and spec.predict is None:
            outs[name] = _call(spec, logits, targets, counts)
    same = {frozenset((a, b)) for a in outs for b in outs if a < b and torch.allclose(outs[a], outs[b])}
    # logit adjustment with tau=1 and balanced softmax are the same loss by construction (card C4)
    assert same <= {frozenset(("logit_adjust", "balanced_softmax"))}, same


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError, match="focal"):
        methods.get("focall")


def test_unknown_hparam_is_rejected():
    with pytest.raises(ValueError, match="valid"):
        methods.get("focal").hparams({"gama": 1.0})
