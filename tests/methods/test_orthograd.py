"""⊥Grad (card G3): the projection, its norm-preserving rescale, per-tensor vs global, and that
⊥AdamW / ⊥SGD reduce to the plain optimiser when the gradient is already orthogonal."""
import copy

import pytest
import torch

from lossbench import methods
from lossbench.grokking import build_model, step_with
from lossbench.methods.orthograd import orthograd, orthograd_global


def _random(shapes=((5, 4), (7,), (3, 3)), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes], [torch.randn(s, generator=g) for s in shapes]


def _cos(a, b):
    a, b = a.detach(), b.detach()
    return float(torch.dot(a.flatten().double(), b.flatten().double()) / (a.double().norm() * b.double().norm()))


def test_per_tensor_projection_is_orthogonal_and_keeps_each_norm():
    params, grads = _random()
    for p, g, o in zip(params, grads, orthograd(params, grads)):
        assert abs(_cos(p, o)) < 1e-6
        torch.testing.assert_close(o.norm(), g.norm())
    for p, g, o in zip(params, grads, orthograd(params, grads, rescale=False)):  # the raw projection
        torch.testing.assert_close(o, g - (torch.dot(p.flatten(), g.flatten()) / p.norm() ** 2) * p)


def test_global_projection_is_orthogonal_overall_but_not_per_tensor():
    params, grads = _random()
    out = orthograd_global(params, grads)
    flat = lambda ts: torch.cat([t.flatten() for t in ts])  # noqa: E731
    assert abs(_cos(flat(params), flat(out))) < 1e-6
    torch.testing.assert_close(flat(out).norm(), flat(grads).norm())
    assert max(abs(_cos(p, o)) for p, o in zip(params, out)) > 1e-3


def test_degenerate_inputs_stay_finite():
    zero = torch.zeros(3)
    (out,) = orthograd([torch.ones(3)], [zero])
    assert torch.equal(out, zero)  # a zero gradient stays zero
    g = torch.tensor([1.0, -2.0, 0.5])
    (out,) = orthograd([zero], [g])
    torch.testing.assert_close(out, g)  # θ = 0: nothing to project out
    (out,) = orthograd([g], [2 * g])
    assert torch.isfinite(out).all() and out.norm() < 1e-6  # g ∥ θ: nothing is left


@pytest.mark.parametrize("opt_cfg", [{"name": "adamw", "lr": 0.01, "betas": [0.9, 0.99], "eps": 1e-25},
                                     {"name": "sgd", "lr": 0.1, "momentum": 0.8}])
def test_reduces_to_the_base_optimiser_when_the_gradient_is_orthogonal(opt_cfg):
    """⊥AdamW / ⊥SGD take the very same steps as AdamW / SGD on gradients already ⊥ to θ."""
    from lossbench.train import build_optimizer

    model = build_model(6, [5], 3, seed=0)
    twin = copy.deepcopy(model)
    spec = methods.get("orthograd")
    opts = [build_optimizer(m.parameters(), opt_cfg) for m in (model, twin)]
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        raw = [torch.randn(p.shape, generator=g) for p in model.parameters()]
        perp = orthograd(list(model.parameters()), raw, rescale=False)
        for m, opt, transform in ((model, opts[0], None), (twin, opts[1], spec)):
            for p, gr in zip(m.parameters(), perp):
                p.grad = gr.clone()
            step_with(opt, transform, spec.hparams() if transform else {})
        for a, b in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_removes_the_weight_growth_of_sgd_on_a_fitted_batch():
    """Bias-free ReLU MLP, batch labelled by its own argmax (fitted): −∇L points along θ (the NLM
    direction), so SGD grows ‖θ‖ at first order while ⊥SGD changes it only at second order."""
    from lossbench.methods.erm import cross_entropy

    model = build_model(8, [16], 4, seed=0)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)
    params = [p.detach() for p in model.parameters()]
    grads = torch.autograd.grad(cross_entropy(model(x), y).mean(), list(model.parameters()))
    assert all(_cos(-g, p) > 0 for g, p in zip(grads, params))
    lr = 1e-3
    for transform, order in ((None, 1), (orthograd, 2)):
        new = grads if transform is None else transform(params, grads)
        change = max(abs(float((p - lr * g).norm() ** 2 - p.norm() ** 2)) for p, g in zip(params, new))
        if order == 1:
            assert change > 10 * lr ** 2 * max(float(g.norm() ** 2) for g in new)
        else:
            assert change <= 1.01 * lr ** 2 * max(float(g.norm() ** 2) for g in new) + 1e-6


def test_released_variant_steps_inner_adamw_with_torch_defaults():
    """The paper's released runs stepped their inner AdamW with β = (0.9, 0.999), ε = 1e-8 whatever the
    flags said (β₂ 0.99, ε 1e-25): orthograd_released overrides exactly those two, orthograd keeps the
    protocol's."""
    from lossbench.optim import build_optimizer

    protocol_opt = {"name": "adamw", "lr": 0.01, "betas": [0.9, 0.99], "eps": 1e-25, "weight_decay": 0.0}
    released, plain = methods.get("orthograd_released"), methods.get("orthograd")
    assert released.fn is plain.fn and released.docs == plain.docs == "orthograd"
    model = build_model(4, [8], 3, 0)
    for spec, betas, eps in ((released, (0.9, 0.999), 1e-8), (plain, (0.9, 0.99), 1e-25)):
        fn_hp, opt_hp = spec.split_hparams(spec.hparams())
        assert fn_hp == {"rescale": True}
        opt = build_optimizer(model.parameters(), {**protocol_opt, **opt_hp})  # as lossbench.grokking does
        assert isinstance(opt, torch.optim.AdamW)
        for group in opt.param_groups:
            assert tuple(group["betas"]) == betas and group["eps"] == eps
            assert group["lr"] == 0.01 and group["weight_decay"] == 0.0  # the protocol's, as the wrapper passed


def test_released_variant_refused_under_sgd():
    from lossbench.config import ConfigError
    from lossbench.tasks.grokking import check_protocol

    proto = {"datasets": ["mod113_add_f40"], "optimizer": {"name": "sgd", "lr": 10.0, "momentum": 0.8},
             "eval": {"every": 10}, "budget": {"steps": 100}}
    with pytest.raises(ConfigError, match="orthograd_released"):
        check_protocol(proto, "test", {"methods": ["orthograd_released"]})
