"""Card M6: RPO = DPO + η·NLL(y_w); η = 0 is DPO; the SFT gradient touches only y_w, scaling with |y_w|
in the cumulative ("sum") variant."""
import pytest
import torch

from lossbench import methods
from lossbench.methods.base import PairBatch
from lossbench.methods.dpo import dpo_loss
from lossbench.methods.rpo import SPEC, rpo_loss

from tests.methods.preference_helpers import close

B, T = 8, 10


def _token_pairs(seed=0):
    """Per-token policy log-probs as leaves, so gradients can be read token by token."""
    g = torch.Generator().manual_seed(seed)
    pol_c, pol_r = (-torch.rand(2, B, T, generator=g) * 2).unbind(0)
    pol_c.requires_grad_(True)
    pol_r.requires_grad_(True)
    ref = -torch.rand(2, B, generator=g) * 10
    lens = torch.randint(1, T + 1, (2, B), generator=g)
    mask_c, mask_r = (torch.arange(T) < lens[..., None]).float().unbind(0)
    batch = PairBatch(policy_chosen=(pol_c * mask_c).sum(-1), policy_rejected=(pol_r * mask_r).sum(-1),
                      ref_chosen=ref[0], ref_rejected=ref[1],
                      chosen_len=lens[0].float(), rejected_len=lens[1].float())
    return batch, pol_c, pol_r, mask_c


def test_spec_reference_and_registry():
    assert methods.get("rpo") is SPEC and SPEC.defaults == {"beta": 0.1, "eta": 0.005, "sft": "mean",
                                                             "nll_reduction": "pair_mean"}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)


@pytest.mark.parametrize("sft", ["sum", "mean"])
def test_eta_zero_is_dpo(sft):
    batch, *_ = _token_pairs()
    close(rpo_loss(batch, beta=0.1, eta=0.0, sft=sft), dpo_loss(batch, beta=0.1))


@pytest.mark.parametrize("sft", ["sum", "mean"])
def test_added_gradient_is_eta_times_sft_gradient_on_chosen_tokens_only(sft):
    eta = 0.3
    batch, pol_c, pol_r, mask_c = _token_pairs(seed=1)
    extra = rpo_loss(batch, beta=0.1, eta=eta, sft=sft) - dpo_loss(batch, beta=0.1)
    extra.sum().backward()
    assert torch.count_nonzero(pol_r.grad) == 0  # y_l is untouched
    lens = mask_c.sum(-1, keepdim=True)
    # ∂(−log π(y_w))/∂log π(y_t) = −1 per response token (sum), −1/|y_w| (mean); 0 on padding.
    sft_grad = -mask_c if sft == "sum" else -mask_c / lens
    close(pol_c.grad, eta * sft_grad)
    # total gradient mass on y_w: η|y_w| for the cumulative variant, η for the token average
    mass = pol_c.grad.abs().sum(-1)
    close(mass, eta * lens.squeeze(-1) if sft == "sum" else torch.full((B,), eta))


def test_cumulative_sft_term_scales_with_chosen_length():
    # Every token log-prob −0.5: the SFT term is 0.5·|y_w| (sum) or 0.5 whatever the length (mean).
    lc = torch.tensor([1.0, 4.0, 16.0])
    batch = PairBatch(policy_chosen=-0.5 * lc, policy_rejected=-0.5 * lc, ref_chosen=-0.5 * lc,
                      ref_rejected=-0.5 * lc, chosen_len=lc, rejected_len=lc)
    dpo = dpo_loss(batch, beta=0.1)
    close(rpo_loss(batch, beta=0.1, eta=1.0, sft="sum") - dpo, 0.5 * lc)
    close(rpo_loss(batch, beta=0.1, eta=1.0, sft="mean") - dpo, torch.full((3,), 0.5))


def test_validate_rejects_bad_hparams():
    for bad in ({"sft": "token"}, {"eta": -0.1}, {"beta": 0.0}):
        with pytest.raises(ValueError):
            SPEC.hparams(bad)
    assert SPEC.hparams({"sft": "sum"})["sft"] == "sum"


def _lengths_batch():
    """Three pairs of different chosen lengths whose per-token NLLs differ, so the reductions differ."""
    lc = torch.tensor([1.0, 4.0, 10.0])
    pc = torch.tensor([-2.0, -2.0, -5.0])  # per-token NLL 2, 0.5, 0.5
    z = torch.zeros(3)
    return PairBatch(policy_chosen=pc.clone().requires_grad_(True), policy_rejected=z, ref_chosen=z, ref_rejected=z,
                     chosen_len=lc, rejected_len=torch.ones(3))


def test_nll_reductions_by_hand():
    # pair_mean: (2/1 + 2/4 + 5/10)/3 = 3/3 = 1.0; token_mean: (2 + 2 + 5)/(1 + 4 + 10) = 9/15 = 0.6
    batch = _lengths_batch()
    dpo = dpo_loss(batch, beta=0.1).mean()
    pair = rpo_loss(batch, beta=0.1, eta=1.0, sft="mean", nll_reduction="pair_mean")
    token = rpo_loss(batch, beta=0.1, eta=1.0, sft="mean", nll_reduction="token_mean")
    close(pair.mean() - dpo, torch.tensor(1.0))
    close(token.mean() - dpo, torch.tensor(0.6))
    close(pair - dpo_loss(batch, beta=0.1), torch.tensor([2.0, 0.5, 0.5]))  # per-pair token averages
    close(token - dpo_loss(batch, beta=0.1), torch.tensor([2.0, 2.0, 5.0]) / 5.0)  # NLL_i / mean |y_w|
    # the default is the official repo's OpenRLHF reduction (per-pair means)
    close(rpo_loss(batch, **SPEC.hparams({"eta": 1.0})), pair)
    # gradient of the batch mean wrt log π(y_w,i): −η/(B|y_w,i|) (pair_mean), −η/Σ|y_w| for every pair (token_mean)
    (g_pair,) = torch.autograd.grad((pair.mean() - dpo), batch.policy_chosen, retain_graph=True)
    (g_tok,) = torch.autograd.grad((token.mean() - dpo), batch.policy_chosen)
    close(g_pair, -1.0 / (3 * batch.chosen_len))
    close(g_tok, torch.full((3,), -1.0 / 15.0))


def test_token_mean_equals_flattened_token_cross_entropy():
    batch, pol_c, _, mask_c = _token_pairs(seed=2)
    token = rpo_loss(batch, beta=0.1, eta=1.0, sft="mean", nll_reduction="token_mean").mean()
    flat = -(pol_c * mask_c).sum() / mask_c.sum()  # mean over the batch's chosen tokens
    close(token - dpo_loss(batch, beta=0.1).mean(), flat)


def test_nll_reduction_validation():
    assert SPEC.hparams({"nll_reduction": "token_mean"})["nll_reduction"] == "token_mean"
    with pytest.raises(ValueError, match="nll_reduction"):
        SPEC.hparams({"nll_reduction": "tokens"})
    with pytest.raises(ValueError, match="token_mean"):
        SPEC.hparams({"sft": "sum", "nll_reduction": "token_mean"})
