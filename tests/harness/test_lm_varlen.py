"""Variable-length (right-padded) prompts in the shared LM layer and the preference engine: a padded
batch must give every row exactly what it gets alone, and an all-ones mask must change nothing."""
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from lossbench import lm
from lossbench import preference as pe
from lossbench.seeding import generator
from lossbench.methods import get

V, PAD, EOS, P, T = 12, 0, 1, 6, 5
LENGTHS = [6, 2, 4, 1]  # real prompt tokens per row (row 0 unpadded)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=sorted(lm.ARCHS))
def model(request):
    cfg = {"arch": request.param, "d_model": 32, "layers": 2, "heads": 4, "context": 16}
    return lm.build_causal_lm(cfg, V, 0)


def padded_prompts(lengths=LENGTHS, seed=0):
    """Right-padded prompts [B, P] with PAD in the padding, and their mask."""
    ids = torch.randint(2, V, (len(lengths), P), generator=generator(seed))
    mask = (torch.arange(P) < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, PAD), mask


def responses(b, seed=1):
    """`sample`-layout responses [B, T]: varying lengths, EOS, then PAD (row 0 has no EOS)."""
    r = torch.randint(2, V, (b, T), generator=generator(seed))
    for i in range(1, b):
        end = i % T
        r[i, end], r[i, end + 1:] = EOS, PAD
    return r


def test_packed_layout():
    x, m = padded_prompts()
    r = responses(len(x))
    ids, attn, resp = lm.join_prompt_response(x, r, EOS, m)
    assert ids.shape == attn.shape == resp.shape == (len(x), P + T)
    valid = lm.response_mask_of(r, EOS)
    for b, n in enumerate(LENGTHS):
        k = int(valid[b].sum())
        assert torch.equal(ids[b, :n + T], torch.cat([x[b, :n], r[b]]))
        assert (ids[b, n + T:] == PAD).all()  # the prompt's padding, moved to the end
        assert attn[b].tolist() == [1] * (n + k) + [0] * (P + T - n - k)
        assert resp[b].tolist() == [0] * n + [1] * k + [0] * (P + T - n - k)


def test_packed_rows_match_each_example_alone(model):
    x, m = padded_prompts()
    r = responses(len(x))
    tok = lm.token_logps(model, *lm.join_prompt_response(x, r, EOS, m))
    for b, n in enumerate(LENGTHS):
        alone = lm.token_logps(model, *lm.join_prompt_response(x[b:b + 1, :n], r[b:b + 1], EOS))
        torch.testing.assert_close(tok[b, :n + T], alone[0], atol=1e-5, rtol=0)
        assert (tok[b, n + T:] == 0).all()


def test_all_ones_mask_changes_nothing(model):
    x, r = torch.randint(2, V, (4, P), generator=generator(2)), responses(4)
    ones = torch.ones_like(x)
    for a, b in zip(lm.join_prompt_response(x, r, EOS), lm.join_prompt_response(x, r, EOS, ones)):
        assert torch.equal(a, b)
    kw = dict(max_new_tokens=8, eos_id=EOS, pad_id=PAD, return_logps=True)
    plain = lm.sample(model, x, generator=generator(3), **kw)
    masked = lm.sample(model, x, generator=generator(3), prompt_mask=ones, **kw)
    assert all(torch.equal(a, b) for a, b in zip(plain, masked))


@torch.no_grad()
def test_greedy_batch_equals_each_prompt_alone(model):
    x, m = padded_prompts()
    kw = dict(max_new_tokens=8, eos_id=EOS, pad_id=PAD, temperature=0, return_logps=True)
    out, logps = lm.sample(model, x, generator=generator(0), prompt_mask=m, **kw)
    for b, n in enumerate(LENGTHS):
        alone, alone_logps = lm.sample(model, x[b:b + 1, :n], generator=generator(0), **kw)
        k = alone.shape[1]
        assert torch.equal(out[b, :k], alone[0]) and (out[b, k:] == PAD).all()
        valid = lm.response_mask_of(alone, EOS)[0].bool()
        torch.testing.assert_close(logps[b, :k][valid], alone_logps[0][valid], atol=1e-5, rtol=0)


@torch.no_grad()
def test_kv_cache_logits_match_full_recomputation(model):
    """Temperature-1 samples of a padded batch: the cached step distributions are the full forward's."""
    x, m = padded_prompts()
    out, step = lm.sample(model, x, max_new_tokens=8, eos_id=EOS, pad_id=PAD, generator=generator(4),
                          prompt_mask=m, return_logps=True)
    ids, attn, resp = lm.join_prompt_response(x, out, EOS, m)
    _, full = lm.token_logps(model, ids, attn, resp, return_logits=True)
    for b, n in enumerate(LENGTHS):
        keep = resp[b, n:n + out.shape[1]].bool()
        torch.testing.assert_close(step[b][keep], full[b, n:n + out.shape[1]][keep], atol=1e-5, rtol=0)


def test_prompt_mask_checks(model):
    x, m = padded_prompts()
    kw = dict(max_new_tokens=2, eos_id=EOS, pad_id=PAD, generator=generator(0))
    with pytest.raises(ValueError, match="right-padded"):
        lm.sample(model, x, prompt_mask=m.flip(1), **kw)
    with pytest.raises(ValueError, match="empty prompt"):
        lm.join_prompt_response(x, responses(4), EOS, m * 0)
    with pytest.raises(ValueError, match="does not match"):
        lm.join_prompt_response(x, responses(4), EOS, m[:, :3])
    lm.sample(model, x, prompt_mask=m, **kw)  # PAD inside the padding is fine once a mask says so


# ---------------------------------------------------------------------------- preference engine


def pairs(mask=True):
    x, m = padded_prompts()
    r = torch.stack([responses(4, seed=1), responses(4, seed=2)], 1)
    return pe.pref_data(x, r, eos_id=EOS, pad_id=PAD, prompt_mask=m if mask else None)


def test_prefdata_carries_prompt_mask():
    data = pairs()
    assert data.prompt_mask.dtype == torch.long
    part = data.take([2, 0])
    assert torch.equal(part.prompt_mask, data.prompt_mask[[2, 0]])
    assert torch.equal(part.to("cpu").prompt_mask, part.prompt_mask)


def test_engine_logps_match_each_pair_alone(model):
    data = pairs()
    seq, lens = pe.sequence_logps_of(model, data)
    for b, n in enumerate(LENGTHS):
        alone = pe.pref_data(data.prompts[b:b + 1, :n], data.responses[b:b + 1], eos_id=EOS, pad_id=PAD)
        want, want_lens = pe.sequence_logps_of(model, alone)
        torch.testing.assert_close(seq[b], want[0], atol=1e-5, rtol=0)
        assert torch.equal(lens[b], want_lens[0])


def test_dpo_at_init_on_padded_prompts(model):
    data = pairs()
    cache = pe.reference_cache(model, data)
    batch = data.take([3, 1, 2])
    spec = get("dpo")
    loss = pe.preference_loss(spec, spec.hparams(), model, cache, batch)
    assert abs(loss.item() - math.log(2)) < 1e-6
    delta, exact = pe.kl_terms(model, model, data.prompts, data.responses[:, 0], EOS,
                               prompt_mask=data.prompt_mask)
    assert delta.abs().max() < 1e-6 and exact.abs().max() < 1e-6


@torch.no_grad()
def test_sample_responses_with_prompt_mask(model):
    data = pairs()
    kw = dict(n_samples=2, max_new_tokens=6, eos_id=EOS, pad_id=PAD, temperature=0, generator=generator(0))
    out = pe.sample_responses(model, data.prompts, prompt_mask=data.prompt_mask, batch_size=3, **kw)
    assert out.shape == (8, 6)
    for b, n in enumerate(LENGTHS):
        alone = pe.sample_responses(model, data.prompts[b:b + 1, :n], **kw)
        assert torch.equal(out[2 * b:2 * b + 2], alone)
