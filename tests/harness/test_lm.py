"""The shared LM layer: log-probs against a by-hand gather, masks, KL, sampling (determinism,
EOS/padding, greedy limit, distribution, KV cache) and seeded construction."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F

from lossbench import lm
from lossbench.seeding import generator

V, PAD, EOS, P = 12, 0, 1, 4  # vocab, special ids, prompt length
ARCHS = sorted(lm.ARCHS)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def chi2_sf(stat, df):
    """Chi-square survival function, P(X > stat), as the regularised upper incomplete gamma."""
    return torch.special.gammaincc(torch.tensor(df / 2), torch.tensor(stat / 2)).item()


def tiny(arch="gpt2", seed=0, **kw):
    cfg = {"arch": arch, "d_model": 32, "layers": 2, "heads": 4, "context": 16, **kw}
    return lm.build_causal_lm(cfg, V, seed)


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny(request.param)


@pytest.fixture(scope="module")
def gpt2():
    return tiny("gpt2")


def prompts(b, seed=0):
    return torch.randint(2, V, (b, P), generator=generator(seed))


def batch():
    """Two right-padded sequences: prompt 4 tokens, responses of length 5 and 3."""
    ids = torch.randint(2, V, (2, 9), generator=generator(1))
    attn = torch.tensor([[1] * 9, [1] * 7 + [0] * 2])
    resp = torch.tensor([[0] * 4 + [1] * 5, [0] * 4 + [1] * 3 + [0] * 2])
    return ids, attn, resp


def after_first_eos(tokens):
    is_eos = (tokens == EOS).long()
    return (is_eos.cumsum(1) - is_eos) > 0


# ---------------------------------------------------------------------------- log-probs


def test_token_logps_match_manual_gather(model):
    ids, attn, resp = batch()
    got = lm.token_logps(model, ids, attn, resp)
    logp = model(input_ids=ids, attention_mask=attn).logits.double().log_softmax(-1)
    want = torch.zeros(2, 9, dtype=torch.float64)
    for b in range(2):
        for t in range(1, 9):
            if resp[b, t]:
                want[b, t] = logp[b, t - 1, ids[b, t]]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


def test_prompt_and_padding_excluded(gpt2):
    ids, attn, resp = batch()
    got = lm.token_logps(gpt2, ids, attn, resp)
    assert (got[resp == 0] == 0).all() and (got[resp == 1] < 0).all()
    changed = ids.clone()
    changed[1, 7:] = (changed[1, 7:] + 1) % V  # padding tokens do not matter
    torch.testing.assert_close(lm.token_logps(gpt2, changed, attn, resp), got)


def test_mask_errors(gpt2):
    ids, attn, resp = batch()
    with pytest.raises(ValueError, match="first token"):
        lm.token_logps(gpt2, ids, attn, torch.ones_like(resp))
    with pytest.raises(ValueError, match="padding"):
        lm.token_logps(gpt2, ids, attn, (resp + (1 - attn)).clamp(max=1))
    with pytest.raises(ValueError, match="right-padded"):
        lm.token_logps(gpt2, ids, attn.flip(1), resp * 0)


def test_sequence_logps_sum_and_lengths(gpt2):
    ids, attn, resp = batch()
    total, n = lm.sequence_logps(gpt2, ids, attn, resp)
    torch.testing.assert_close(total, lm.token_logps(gpt2, ids, attn, resp).sum(-1))
    assert n.tolist() == [5.0, 3.0]


def test_lm_loss_is_masked_mean_cross_entropy(gpt2):
    ids, attn, resp = batch()
    labels = ids.masked_fill(resp == 0, -100)[:, 1:]
    logits = gpt2(input_ids=ids, attention_mask=attn).logits[:, :-1]
    ce = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    loss = lm.lm_loss(gpt2, ids, attn, resp)
    torch.testing.assert_close(loss, ce.sum(1) / resp.sum(1))
    loss.sum().backward()
    assert all(p.grad is not None for p in gpt2.parameters())
    gpt2.zero_grad(set_to_none=True)


def test_token_kl(gpt2):
    ids, attn, resp = batch()
    _, ref = lm.token_logps(gpt2, ids, attn, resp, return_logits=True)
    _, pol = lm.token_logps(tiny(seed=1), ids, attn, resp, return_logits=True)
    assert lm.token_kl(ref, ref, resp).abs().max() < 1e-6
    kl = lm.token_kl(ref, pol, resp)
    want = (ref.double().exp() * (ref.double() - pol.double())).sum(-1) * resp
    torch.testing.assert_close(kl.double(), want, atol=1e-6, rtol=1e-5)
    assert (kl[resp == 1] > 0).all() and (kl[resp == 0] == 0).all()


# ---------------------------------------------------------------------------- sampling


def draw(model, seed, b=64, n=12, x=None, **kw):
    return lm.sample(model, prompts(b) if x is None else x, max_new_tokens=n, eos_id=EOS, pad_id=PAD,
                     generator=generator(seed), **kw)


def test_sampling_deterministic_given_generator_and_global_rng_untouched(gpt2):
    state = torch.get_rng_state()
    a, b, c = draw(gpt2, 0), draw(gpt2, 0), draw(gpt2, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def test_eval_mode_inside_sampling_only():
    noisy = tiny(dropout=0.5).train()
    state = torch.get_rng_state()
    draw(noisy, 0, b=4, n=3)
    assert torch.equal(torch.get_rng_state(), state) and noisy.training


def test_eos_then_padding(gpt2):
    out = draw(gpt2, 0)
    ended = (out == EOS).any(1)
    assert 0 < ended.sum() < len(out) and out.shape[1] <= 12
    assert (out[after_first_eos(out)] == PAD).all()
    _, attn, resp = lm.join_prompt_response(prompts(64), out, EOS)
    assert torch.equal(resp[:, P:], (~after_first_eos(out)).long())
    assert torch.equal(attn[:, P:], resp[:, P:]) and (attn[:, :P] == 1).all()


@torch.no_grad()
def test_stops_early_when_all_rows_ended(gpt2):
    x = prompts(1)
    eos = gpt2(input_ids=x).logits[0, -1].argmax().item()  # the greedy first token ends the row
    out = lm.sample(gpt2, x, max_new_tokens=8, eos_id=eos, pad_id=1 if eos == 0 else 0,
                    temperature=0, generator=generator(0))
    assert out.tolist() == [[eos]]


def test_prompt_checks(gpt2):
    with pytest.raises(ValueError, match="pad_id"):
        lm.sample(gpt2, prompts(2).fill_(PAD), max_new_tokens=2, eos_id=EOS, pad_id=PAD,
                  generator=generator(0))
    with pytest.raises(ValueError, match="context"):
        draw(gpt2, 0, n=13)


def greedy_without_cache(model, x, n):
    """Recompute the whole sequence at every step: the reference for the KV-cache path."""
    for _ in range(n):
        x = torch.cat([x, model(input_ids=x).logits[:, -1:].argmax(-1)], 1)
    return x[:, P:]


@torch.no_grad()
def test_low_temperature_is_greedy(model):
    want = greedy_without_cache(model, prompts(16), 10)
    want = want.masked_fill(after_first_eos(want), PAD)
    for t in (0.0, 1e-4):
        got = draw(model, 0, b=16, n=10, temperature=t)
        assert torch.equal(got, want[:, : got.shape[1]])


@torch.no_grad()
def test_kv_cache_logits_match_full_recomputation(model):
    out, step_logps = draw(model, 3, b=16, return_logps=True)
    ids, attn, resp = lm.join_prompt_response(prompts(16), out, EOS)
    _, full = lm.token_logps(model, ids, attn, resp, return_logits=True)
    keep = resp[:, P:].bool()
    torch.testing.assert_close(step_logps[keep], full[:, P:][keep], atol=1e-5, rtol=0)


def pearson(counts, expected):
    return ((counts - expected) ** 2 / expected).sum().item()


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@torch.no_grad()
def test_one_step_distribution_matches_softmax(gpt2, temperature):
    n = 8_000
    x = prompts(1).expand(n, P).contiguous()
    logits = gpt2(input_ids=x[:1]).logits[0, -1].double()
    expected = n * torch.softmax(logits / temperature, -1)
    counts = torch.bincount(draw(gpt2, 0, x=x, n=1, temperature=temperature)[:, 0], minlength=V)
    assert chi2_sf(pearson(counts, expected), V - 1) > 1e-6  # fixed seed: cannot flake
    uniform = torch.full((V,), n / V, dtype=torch.float64)
    assert chi2_sf(pearson(counts, uniform), V - 1) < 1e-6  # and the test has power


# ---------------------------------------------------------------------------- construction


def test_build_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = tiny(seed=5).state_dict(), tiny(seed=5).state_dict(), tiny(seed=6).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("arch", ARCHS)
def test_archs_build_and_run(arch):
    m = tiny(arch)
    assert all(getattr(mod, "p", 0) == 0 for mod in m.modules())  # dropout off by default
    ids, attn, resp = batch()
    assert lm.token_logps(m, ids, attn, resp).shape == (2, 9)


def test_config_errors_list_valid_names():
    with pytest.raises(ValueError, match="gpt2.*llama"):
        tiny("mamba")
    with pytest.raises(ValueError, match="d_modle"):
        lm.build_causal_lm({"arch": "gpt2", "d_modle": 8, "layers": 1, "heads": 1, "context": 8}, V, 0)
