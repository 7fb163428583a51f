"""Cards O1 (AdamP / SGDP), O2 (FRUGAL) and O3 (Weight Compander): the optimizer rows' defining properties."""
import copy
import math

import pytest
import torch
import torch.nn.utils.parametrize as parametrize

from lossbench.optim.compander import compand, compand_slope, expand

from lossbench.optim import OPTIMIZERS, build_optimizer, state_bytes


def _run(cfg, params, grads_seq):
    opt = build_optimizer(params, cfg)
    for grads in grads_seq:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    return opt


def _grads(shapes, steps=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) for s in shapes] for _ in range(steps)]


def _params(shapes, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def test_adamp_on_a_vector_is_adamw():
    cfg = {"lr": 0.01, "weight_decay": 0.1}
    a, b = _params([(7,)]), _params([(7,)])
    grads = _grads([(7,)])
    _run({"name": "adamp", **cfg}, a, grads)
    _run({"name": "adamw", **cfg}, b, grads)
    torch.testing.assert_close(a[0], b[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name, lr", [("adamp", 0.01), ("sgdp", 0.1)])
def test_projection_removes_the_radial_part_for_a_scale_invariant_weight(name, lr):
    torch.manual_seed(0)
    lin, bn = torch.nn.Linear(6, 4, bias=False), torch.nn.BatchNorm1d(4)
    opt = build_optimizer(lin.parameters(), {"name": name, "lr": lr, "momentum": 0.0} if name == "sgdp"
                          else {"name": name, "lr": lr})
    x = torch.randn(32, 6)
    w0 = lin.weight.detach().clone()
    bn(lin(x)).pow(3).sum().backward()  # BatchNorm after the Linear: the loss ignores ‖w_c‖
    g = lin.weight.grad
    radial = (g * w0).sum(1) / (w0.norm(dim=1) * g.norm(dim=1))
    assert radial.abs().max() < 1e-2  # the gradient itself is (nearly: BatchNorm's eps) tangent...
    opt.step()
    delta = lin.weight.detach() - w0
    cos = (delta * w0).sum(1) / (delta.norm(dim=1) * w0.norm(dim=1))
    assert cos.abs().max() < 1e-3  # ...and the step has no radial component per channel


def test_frugal_density_one_is_adamw_and_zero_is_signsgd():
    shapes = [(5, 4), (5,)]
    grads = _grads(shapes)
    a, b = _params(shapes), _params(shapes)
    # update_gap longer than the run: a re-selection would restart the moments
    _run({"name": "frugal", "lr": 0.01, "weight_decay": 0.1, "density": 1.0, "update_gap": 100}, a, grads)
    _run({"name": "adamw", "lr": 0.01, "weight_decay": 0.1}, b, grads)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    c = _params(shapes)
    w0 = c[0].detach().clone()
    _run({"name": "frugal", "lr": 0.01, "density": 0.0}, c, grads[:1])
    torch.testing.assert_close(c[0].detach(), w0 - 0.01 * grads[0][0].sign())


def test_frugal_state_is_proportional_to_density_and_seeded():
    shapes = [(40, 8)]
    grads = _grads(shapes, steps=3)
    full = _run({"name": "frugal", "lr": 0.01, "density": 1.0}, _params(shapes), grads)
    quarter = _run({"name": "frugal", "lr": 0.01, "density": 0.25}, _params(shapes), grads)
    tensors = lambda o: sum(v.numel() * v.element_size() for s in o.state.values() for k, v in s.items()  # noqa: E731
                            if k.startswith("exp_avg"))
    assert tensors(quarter) * 4 == tensors(full)
    assert state_bytes(quarter) < state_bytes(full)
    a = _run({"name": "frugal", "lr": 0.01, "density": 0.25, "update_gap": 1, "seed": 3}, _params(shapes), grads)
    b = _run({"name": "frugal", "lr": 0.01, "density": 0.25, "update_gap": 1, "seed": 3}, _params(shapes), grads)
    assert torch.equal(a.state[next(iter(a.state))]["rows"], b.state[next(iter(b.state))]["rows"])


def test_unknown_optimizer_lists_the_valid_ones():
    with pytest.raises(KeyError, match="valid: " + ", ".join(OPTIMIZERS)):
        build_optimizer(_params([(2,)]), {"name": "lion", "lr": 1.0})


# ------------------------------------------------------------------------------------------- card O3
WC = {"name": "weight_compander", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01,
      "a": 1.0, "b": 0.6}


def test_compander_is_odd_bounded_and_inverted_by_its_expander():
    v = torch.linspace(-50, 50, 1001, dtype=torch.float64)
    w = compand(v, 0.7, 0.8)
    assert torch.equal(compand(-v, 0.7, 0.8), -w) and (w.diff() > 0).all() and w.abs().max() < 0.7 * math.pi / 2
    torch.testing.assert_close(expand(w, 0.7, 0.8), v, rtol=1e-9, atol=1e-9)
    assert compand_slope(torch.zeros(1), 0.7, 0.8).item() == pytest.approx(0.7 / 0.8)  # Ψ'(0) = a/b
    vv = v.clone().requires_grad_(True)
    compand(vv, 0.7, 0.8).sum().backward()
    torch.testing.assert_close(vv.grad, compand_slope(v, 0.7, 0.8))


class _Companded(torch.nn.Module):
    """w = a·arctan(v/b) as a parametrisation: the paper's model, trained by autograd on v."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, v):
        return compand(v, self.a, self.b)

    def right_inverse(self, w):
        return expand(w, self.a, self.b)


def test_weight_compander_steps_are_sgd_on_the_reparameterised_model():
    """The optimizer on ordinary weights = SGD (momentum, Nesterov) on v of the reparameterised model, with
    weight decay λ/2·‖Ψ(v)‖² on the weights; biases take plain SGD."""
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    reparam = copy.deepcopy(plain)
    for layer in (reparam[0], reparam[2]):
        parametrize.register_parametrization(layer, "weight", _Companded(WC["a"], WC["b"]))
    torch.testing.assert_close(reparam[0].weight, plain[0].weight)  # v = Ψ⁻¹(w₀): the same network at init
    start = plain[0].weight.detach().clone()
    opt = build_optimizer(plain.parameters(), WC)
    ref = torch.optim.SGD(reparam.parameters(), lr=WC["lr"], momentum=0.9, nesterov=True)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    for _ in range(6):
        for model, o in ((plain, opt), (reparam, ref)):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            if model is reparam:  # decay on the weights w = Ψ(v), biases with their own coupled decay
                loss = loss + WC["weight_decay"] / 2 * sum((m.weight ** 2).sum() + (m.bias ** 2).sum()
                                                           for m in (reparam[0], reparam[2]))
            o.zero_grad()
            loss.backward()
            o.step()
    for i in (0, 2):
        torch.testing.assert_close(plain[i].weight, reparam[i].weight, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(plain[i].bias, reparam[i].bias, rtol=1e-10, atol=1e-12)
    assert (plain[0].weight - start).abs().max() > 1e-3  # six steps moved the weights


def test_weight_compander_keeps_weights_bounded_and_refuses_an_unreachable_init():
    (w,) = _params([(6, 6)])
    with torch.no_grad():
        w.mul_(0.2)
    big = [[torch.full((6, 6), -1e4)]] * 3  # huge gradients: w saturates towards aπ/2, never past it
    _run({**WC, "a": 0.5}, [w], big)
    assert w.abs().max() < 0.5 * math.pi / 2 and w.max() > 0.5 * math.pi / 2 - 0.01
    (w,) = _params([(3, 3)])
    with torch.no_grad():
        w.fill_(2.0)  # |w| ≥ aπ/2 for a = 1: no v maps to it
    with pytest.raises(ValueError, match="aπ/2"):
        _run(WC, [w], _grads([(3, 3)], steps=1))
