"""Cards O1 (AdamP / SGDP) and O2 (FRUGAL): the optimizer rows' defining properties."""
import pytest
import torch

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
