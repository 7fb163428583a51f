"""Card M2: IPO's finite per-pair minimiser h̄ = 1/(2τ), its loss at init, length averaging."""
import pytest
import torch

from lossbench import methods
from lossbench.methods.base import PairBatch
from lossbench.methods.ipo import SPEC, ipo_loss

from tests.methods.preference_helpers import close


def _pair(pc, pr, rc, rr, lc, lr):
    t = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
    return PairBatch(policy_chosen=t(pc), policy_rejected=t(pr), ref_chosen=t(rc), ref_rejected=t(rr),
                     chosen_len=t(lc), rejected_len=t(lr))


def test_spec_reference_and_registry():
    assert methods.get("ipo") is SPEC and SPEC.kind == "pairwise"
    assert SPEC.defaults == {"tau": 0.1}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)


@pytest.mark.parametrize("tau", [0.01, 0.1, 0.5, 1.0])
def test_init_loss_is_one_over_four_tau_squared(tau):
    g = torch.Generator().manual_seed(0)
    ref = -torch.rand(2, 6, generator=g) * 40
    lens = torch.randint(1, 30, (2, 6), generator=g).float()
    out = ipo_loss(_pair(ref[0], ref[1], ref[0], ref[1], lens[0], lens[1]), tau=tau)
    close(out, torch.full((6,), 1.0 / (4 * tau ** 2)))


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_minimiser_is_finite_at_one_over_two_tau(tau):
    # Δ(y_w) = 4·target over |y_w| = 4 and Δ(y_l) = 0: h̄ = 1/(2τ) exactly.
    target = 1.0 / (2 * tau)
    pol_c = torch.tensor([-10.0 + 4 * target], requires_grad=True)
    batch = _pair(pol_c, [-7.0], [-10.0], [-7.0], [4.0], [3.0])
    loss = ipo_loss(batch, tau=tau)
    close(loss, torch.zeros(1), atol=1e-5)
    loss.sum().backward()
    assert abs(pol_c.grad.item()) < 1e-5
    # moving h̄ by ±δ costs exactly δ² on either side (a parabola, unlike DPO's monotone loss)
    for delta in (-0.5, 0.25, 2.0):
        off = _pair([-10.0 + 4 * (target + delta)], [-7.0], [-10.0], [-7.0], [4.0], [3.0])
        close(ipo_loss(off, tau=tau), torch.tensor([delta ** 2]), rtol=1e-4, atol=1e-5)


def test_margin_is_length_averaged_and_empty_response_guarded():
    # Scaling both log-ratios and lengths by 3 leaves h̄ (hence the loss) unchanged.
    a = ipo_loss(_pair([-5.0], [-9.0], [-6.0], [-8.0], [4.0], [6.0]), tau=0.1)
    b = ipo_loss(_pair([-15.0], [-27.0], [-18.0], [-24.0], [12.0], [18.0]), tau=0.1)
    close(a, b)
    # |y_l| = 0 divides by 1 (Δ(y_l) is then 0 anyway).
    out = ipo_loss(_pair([-5.0], [0.0], [-6.0], [0.0], [4.0], [0.0]), tau=0.1)
    close(out, torch.tensor([(0.25 - 5.0) ** 2]))


def test_validate_rejects_bad_tau():
    for tau in (0.0, -1.0):
        with pytest.raises(ValueError):
            SPEC.hparams({"tau": tau})
