"""TGDPO (card M9): α = 0 and π_g = π_ref reduce to DPO; the guide reward is detached."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.dpo import dpo_loss
from lossbench.methods.tgdpo import SPEC, tgdpo_loss, token_weights

from tests.methods.preference_helpers import close, token_pairs

B, T = 6, 5


def _batch(seed=0, requires_grad=False):
    """Random pairs with padded token and guide log-probs; sequence sums agree with the token sums (for DPO)."""
    return token_pairs(seed, b=B, t=T, scale=4.0, min_len=1, guide=True, requires_grad=requires_grad)


def test_reference_registry_and_default_call():
    assert methods.get("tgdpo") is SPEC
    assert SPEC.kind == "pairwise" and SPEC.needs == ("token_logps", "guide_token_logps")
    assert SPEC.hparams() == {"beta": 0.1, "alpha": 0.5}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)
    out = SPEC.fn(_batch(), **SPEC.hparams())
    assert out.shape == (B,) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_alpha_zero_is_dpo(beta):
    b = _batch(seed=1)
    close(tgdpo_loss(b, beta=beta, alpha=0.0), dpo_loss(b, beta=beta))


@pytest.mark.parametrize("alpha", [0.5, 3.0])
def test_guide_equal_to_reference_is_dpo(alpha):
    b = _batch(seed=2)
    b.guide_chosen_tok, b.guide_rejected_tok = b.ref_chosen_tok.clone(), b.ref_rejected_tok.clone()
    close(tgdpo_loss(b, beta=0.1, alpha=alpha), dpo_loss(b, beta=0.1))


def test_guide_reward_is_detached_and_policy_gradient_uses_token_weights():
    b = _batch(seed=3, requires_grad=True)
    beta, alpha = 0.3, 0.5
    out = tgdpo_loss(b, beta=beta, alpha=alpha)
    out.sum().backward()
    assert b.guide_chosen_tok.grad is None and b.guide_rejected_tok.grad is None
    # with r̂ constant: ∂L/∂log π_θ(y_w,t) = −σ(−z) w_t,  ∂L/∂log π_θ(y_l,t) = +σ(−z) w'_t
    w_w, w_l = token_weights(b, beta=beta, alpha=alpha)
    r_w = beta * (b.guide_chosen_tok - b.ref_chosen_tok).detach()
    close(w_w, beta * (1 + alpha * r_w))
    assert not w_w.requires_grad and not w_l.requires_grad
    z = (w_w * (b.policy_chosen_tok - b.ref_chosen_tok) * b.chosen_mask).sum(-1) - (
        w_l * (b.policy_rejected_tok - b.ref_rejected_tok) * b.rejected_mask).sum(-1)
    sig = torch.sigmoid(-z.detach())[:, None]
    close(b.policy_chosen_tok.grad, -sig * w_w * b.chosen_mask)
    close(b.policy_rejected_tok.grad, sig * w_l * b.rejected_mask)


def test_guide_preference_raises_effective_beta():
    b = _batch(seed=4)
    b.guide_chosen_tok = b.ref_chosen_tok + 1.0  # guide likes every chosen token
    b.guide_rejected_tok = b.ref_rejected_tok - 1.0  # and dislikes every rejected one
    w_w, w_l = token_weights(b, beta=0.1, alpha=0.5)
    close(w_w, torch.full((B, T), 0.1 * 1.05))
    close(w_l, torch.full((B, T), 0.1 * 1.05))
    # the uniform 1.05 scaling is DPO at β' = 0.105
    close(tgdpo_loss(b, beta=0.1, alpha=0.5), dpo_loss(b, beta=0.105))


def test_padding_values_are_ignored_even_if_not_finite():
    b = _batch(seed=5, requires_grad=True)
    clean = tgdpo_loss(b, beta=0.1, alpha=0.5)
    with torch.no_grad():
        for t, m in ((b.policy_chosen_tok, b.chosen_mask), (b.ref_rejected_tok, b.rejected_mask),
                     (b.guide_chosen_tok, b.chosen_mask)):
            t[m == 0] = float("inf")
    out = tgdpo_loss(b, beta=0.1, alpha=0.5)
    close(out, clean)
    out.sum().backward()
    assert torch.isfinite(b.policy_chosen_tok.grad).all()


def test_init_is_log2():
    b = _batch(seed=6)
    b.policy_chosen_tok, b.policy_rejected_tok = b.ref_chosen_tok, b.ref_rejected_tok
    close(tgdpo_loss(b, beta=0.1, alpha=0.5), torch.full((B,), math.log(2.0)))


def test_bf16_inputs_compute_in_float32():
    b = _batch(seed=7)
    for name in ("policy_chosen_tok", "policy_rejected_tok", "ref_chosen_tok", "ref_rejected_tok",
                 "guide_chosen_tok", "guide_rejected_tok"):
        setattr(b, name, getattr(b, name).bfloat16())
    out = tgdpo_loss(b, beta=0.1, alpha=0.5)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_validate_rejects_bad_hparams():
    for bad in ({"beta": 0.0}, {"beta": -0.1}, {"alpha": -0.5}):
        with pytest.raises(ValueError):
            SPEC.hparams(bad)
