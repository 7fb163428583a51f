"""SparsePO (card M8): TDPO-1 / DPO / log 2 limits, common vs independent masks, the mask module."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.dpo import dpo_loss
from lossbench.methods.sparsepo import SPEC, SparseTokenMask, sparsepo_loss

from tests.methods.preference_helpers import close, gen, token_pairs

B, T = 5, 7


def _batch(seed=0, masks="random", requires_grad=False):
    """Random pair batch with token fields; sequence sums agree with the token sums (for DPO)."""
    g = gen(seed)
    batch = token_pairs(g, b=B, t=T, scale=3.0, min_len=2, requires_grad=requires_grad)
    kl = {k: torch.rand(B, T, generator=g) for k in ("w", "l")}
    if masks == "random":
        m = {k: torch.relu(torch.randn(B, T, generator=g)) for k in ("uw", "ul", "dw", "dl")}
    else:
        m = {k: torch.full((B, T), float(masks == "ones")) for k in ("uw", "ul", "dw", "dl")}
    for v in (*kl.values(), *m.values()):
        v.requires_grad_(requires_grad)
    batch.kl_chosen_tok, batch.kl_rejected_tok = kl["w"], kl["l"]
    batch.mask_u_chosen, batch.mask_u_rejected = m["uw"], m["ul"]
    batch.mask_d_chosen, batch.mask_d_rejected = m["dw"], m["dl"]
    return batch


def test_reference_registry_and_default_call():
    assert methods.get("sparsepo") is SPEC
    assert SPEC.kind == "pairwise" and SPEC.needs == ("token_logps", "token_kl", "token_masks")
    assert SPEC.hparams() == {"beta": 0.1, "lambda_u": 0.001, "lambda_d": 0.001, "mode": "common"}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)
    batch = _batch(requires_grad=True)
    out = SPEC.fn(batch, **SPEC.hparams())
    assert out.shape == (B,) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(batch.policy_chosen_tok.grad).all() and batch.mask_u_chosen.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["common", "indp"])
def test_unit_masks_without_penalty_is_tdpo1(mode):
    b, beta = _batch(seed=1, masks="ones"), 0.3
    # TDPO-1 (Zeng et al. 2024, arXiv:2404.11999), written out:
    #   ℓ(β[(Δ(y_w) − Δ(y_l)) − (D_SeqKL(y_l) − D_SeqKL(y_w))]),  D_SeqKL(y) = Σ_t KL(π_ref‖π_θ)(s_t)
    delta_w = ((b.policy_chosen_tok - b.ref_chosen_tok) * b.chosen_mask).sum(-1)
    delta_l = ((b.policy_rejected_tok - b.ref_rejected_tok) * b.rejected_mask).sum(-1)
    kl_w = (b.kl_chosen_tok * b.chosen_mask).sum(-1)
    kl_l = (b.kl_rejected_tok * b.rejected_mask).sum(-1)
    tdpo1 = -torch.nn.functional.logsigmoid(beta * ((delta_w - delta_l) - (kl_l - kl_w)))
    close(sparsepo_loss(b, beta=beta, lambda_u=0.0, lambda_d=0.0, mode=mode), tdpo1)


def test_unit_masks_without_kl_is_dpo():
    b = _batch(seed=2, masks="ones")
    b.kl_chosen_tok, b.kl_rejected_tok = torch.zeros(B, T), torch.zeros(B, T)
    for beta in (0.1, 0.8):
        close(sparsepo_loss(b, beta=beta, lambda_u=0.0, lambda_d=0.0, mode="indp"), dpo_loss(b, beta=beta))


@pytest.mark.parametrize("mode", ["common", "indp"])
def test_zero_masks_give_log2_and_no_policy_gradient(mode):
    b = _batch(seed=3, masks="zeros", requires_grad=True)
    out = sparsepo_loss(b, beta=0.5, lambda_u=0.01, lambda_d=0.02, mode=mode)
    close(out, torch.full((B,), math.log(2.0)))
    out.sum().backward()
    for t in (b.policy_chosen_tok, b.policy_rejected_tok, b.kl_chosen_tok, b.kl_rejected_tok):
        assert torch.count_nonzero(t.grad) == 0


def test_common_mode_shares_mask_u_and_halves_the_penalty():
    b = _batch(seed=4)
    hp = dict(beta=0.2, lambda_u=0.01, lambda_d=0.03)
    common = sparsepo_loss(b, mode="common", **hp)
    b_nan = _batch(seed=4)
    b_nan.mask_d_chosen = torch.full((B, T), float("nan"))  # ignored in common mode
    b_nan.mask_d_rejected = None
    close(sparsepo_loss(b_nan, mode="common", **hp), common)
    # independent mode with mask_d := mask_u counts the shared mask twice (λ_u + λ_d); common mode
    # counts it once at (λ_u + λ_d)/2, as the official trainer does.
    b.mask_d_chosen, b.mask_d_rejected = b.mask_u_chosen, b.mask_u_rejected
    indp = sparsepo_loss(b, mode="indp", **hp)
    base = sparsepo_loss(b, mode="indp", beta=0.2, lambda_u=0.0, lambda_d=0.0)
    close(common - base, 0.5 * (indp - base))
    l1 = (b.mask_u_chosen * b.chosen_mask).sum(-1) + (b.mask_u_rejected * b.rejected_mask).sum(-1)
    close(common - base, 0.02 * l1)


def test_independent_masks_weight_reward_and_kl_separately():
    b = _batch(seed=5)
    out = sparsepo_loss(b, beta=0.4, lambda_u=0.01, lambda_d=0.03, mode="indp")
    rho_w, rho_l = b.policy_chosen_tok - b.ref_chosen_tok, b.policy_rejected_tok - b.ref_rejected_tok
    u = (b.mask_u_chosen * rho_w * b.chosen_mask).sum(-1) - (b.mask_u_rejected * rho_l * b.rejected_mask).sum(-1)
    k = ((b.mask_d_chosen * b.kl_chosen_tok * b.chosen_mask).sum(-1)
         - (b.mask_d_rejected * b.kl_rejected_tok * b.rejected_mask).sum(-1))
    l1_u = (b.mask_u_chosen * b.chosen_mask).sum(-1) + (b.mask_u_rejected * b.rejected_mask).sum(-1)
    l1_d = (b.mask_d_chosen * b.chosen_mask).sum(-1) + (b.mask_d_rejected * b.rejected_mask).sum(-1)
    expected = torch.nn.functional.softplus(-0.4 * (u + k)) + 0.01 * l1_u + 0.03 * l1_d
    close(out, expected)
    b.mask_d_rejected = None
    with pytest.raises(ValueError, match="indp"):
        sparsepo_loss(b, beta=0.4, lambda_u=0.01, lambda_d=0.03, mode="indp")


def test_mask_gradient_is_the_l1_weight_where_rewards_vanish():
    # ρ = κ = 0: the logistic term has no mask gradient, so ∂L/∂m_t = (λ_u + λ_d)/2 on response tokens
    b = _batch(seed=6, masks="ones", requires_grad=True)  # away from 0, where |·|' is taken as 0
    with torch.no_grad():
        b.policy_chosen_tok.copy_(b.ref_chosen_tok)
        b.policy_rejected_tok.copy_(b.ref_rejected_tok)
        b.kl_chosen_tok.zero_()
        b.kl_rejected_tok.zero_()
    sparsepo_loss(b, beta=0.1, lambda_u=0.01, lambda_d=0.03, mode="common").sum().backward()
    close(b.mask_u_chosen.grad, 0.02 * b.chosen_mask)
    close(b.mask_u_rejected.grad, 0.02 * b.rejected_mask)


def test_padding_values_are_ignored_even_if_not_finite():
    b = _batch(seed=7, requires_grad=True)
    clean = sparsepo_loss(b, **SPEC.hparams())
    with torch.no_grad():
        for t, resp in ((b.policy_chosen_tok, b.chosen_mask), (b.kl_rejected_tok, b.rejected_mask),
                        (b.mask_u_rejected, b.rejected_mask), (b.ref_chosen_tok, b.chosen_mask)):
            t[resp == 0] = float("nan")
    out = sparsepo_loss(b, **SPEC.hparams())
    close(out, clean)
    out.sum().backward()
    for t in (b.policy_chosen_tok, b.kl_rejected_tok, b.mask_u_rejected):
        assert torch.isfinite(t.grad).all()


def test_bf16_inputs_compute_in_float32():
    b = _batch(seed=8)
    for name in ("policy_chosen_tok", "policy_rejected_tok", "ref_chosen_tok", "ref_rejected_tok",
                 "kl_chosen_tok", "kl_rejected_tok", "mask_u_chosen", "mask_u_rejected"):
        setattr(b, name, getattr(b, name).bfloat16())
    out = sparsepo_loss(b, **SPEC.hparams())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def _hidden(seed, layers=3, d=8):
    g = gen(seed)
    return [torch.randn(B, T, d, generator=g) * 2 for _ in range(layers)]


def test_mask_module_nonnegative_with_exact_zeros_and_deterministic():
    rng_before = torch.random.get_rng_state()
    module = SparseTokenMask(8, 3, generator=gen(0))
    with torch.no_grad():
        module.mixer.copy_(torch.tensor([1.0, -1.0, 0.5]))  # mixed signs: some tokens must hit the ReLU floor
    out = module(_hidden(1))
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # no global RNG draw
    assert out.shape == (B, T) and out.dtype == torch.float32
    assert (out >= 0).all() and (out == 0).any() and (out > 0).any()
    a, b = SparseTokenMask(8, 3, generator=gen(0)), SparseTokenMask(8, 3, generator=gen(0))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="layers"):
        module(_hidden(1, layers=2))


def test_mask_module_learns_through_the_loss():
    module = SparseTokenMask(8, 3, generator=gen(2))
    with torch.no_grad():
        module.mixer.abs_()  # a live mask (a negative mixer everywhere would give all zeros)
    b = _batch(seed=9)
    b.mask_u_chosen = module(_hidden(3))
    b.mask_u_rejected = module(_hidden(4))
    sparsepo_loss(b, beta=0.5, lambda_u=0.01, lambda_d=0.01, mode="common").sum().backward()
    for p in (module.layer_weight, module.layer_bias, module.mixer, module.norm.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_mask_module_dropout_needs_a_generator_and_keeps_zeros():
    module = SparseTokenMask(8, 3, generator=gen(0), dropout=0.5)
    module.train()
    with pytest.raises(ValueError, match="generator"):
        module(_hidden(1))
    out = module(_hidden(1), generator=gen(5))
    assert (out >= 0).all()
    assert torch.equal(out, module(_hidden(1), generator=gen(5)))
    module.eval()
    assert torch.equal(module(_hidden(1)), SparseTokenMask(8, 3, generator=gen(0)).eval()(_hidden(1)))


def test_validate_rejects_bad_hparams():
    for bad in ({"beta": 0.0}, {"lambda_u": -1e-3}, {"lambda_d": -1.0}, {"mode": "shared"}):
        with pytest.raises(ValueError):
            SPEC.hparams(bad)
