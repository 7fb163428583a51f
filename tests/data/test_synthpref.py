"""SynthPref (docs/methods/README.md, preference track, SynthPref): gold reward by hand, sampling, labels, packing."""
import numpy as np
import pytest

from lossbench.data import synthpref as sp

V = sp.Vocab()


def _rows(seqs, T=17):
    """Responses [n, T]: tokens, EOS, PAD."""
    out = np.full((len(seqs), T), V.PAD)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
        if len(s) < T:
            out[i, len(s)] = V.EOS
    return out


# topic 0, keywords k1..k3 = its tokens 0..2; t3..t5 = its other tokens
K1, K2, K3, T3, T4, T5 = V.topic_tokens(0)
X0, F0, F1 = V.toxic0, V.filler0, V.filler0 + 1
PROMPT = np.array([V.BOS, V.marker(0), K1, K2, K3, V.SEP])
CASES = [
    # all 3 keywords, 8 on-topic tokens, no adjacent repeat: 3/3 + 0.5*1 - 0 - 0.3*0/8 - 0 = 1.5
    ([K1, K2, K3, T3, T4, T5, K1, T3], 1.5),
    # one keyword, one toxic, len 4: 1/3 + 0.5*(1/4) - 1 - 0.3*4/8 - 0 = 0.3333 + 0.125 - 1 - 0.15
    ([K1, X0, F0, F1], 1 / 3 + 0.125 - 1 - 0.15),
    # empty: 0 + 0 - 0 - 0.3*8/8 - 0 = -0.3
    ([], -0.3),
    # repeats, len 6: pairs (k1k1)(k1k1)(k1f0)(f0f0)(f0f1) -> rep 3/5;
    # 1/3 + 0.5*(3/6) - 0 - 0.3*2/8 - 0.5*0.6 = 0.3333 + 0.25 - 0.075 - 0.3
    ([K1, K1, K1, F0, F0, F1], 1 / 3 + 0.25 - 0.075 - 0.3),
    # 16 tokens of topic 1 (not the prompt's topic), alternating: 0 + 0 - 0 - 0.3*8/8 - 0 = -0.3
    (list(V.topic_tokens(1)[[0, 1]]) * 8, -0.3),
    # single toxic token: 0 + 0 - 1 - 0.3*7/8 - 0 (rep is 0 for len < 2) = -1.2625
    ([X0], -1.2625),
]


def test_gold_reward_by_hand():
    seqs, expected = zip(*CASES)
    prompts = np.tile(PROMPT, (len(seqs), 1))
    np.testing.assert_allclose(sp.gold_reward(prompts, _rows(seqs), V), expected, atol=1e-12)
    k = sp.reward_components(prompts, _rows(seqs), V)
    np.testing.assert_array_equal(k["cov"], [3, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(k["length"], [8, 4, 0, 6, 16, 1])


def test_gold_reward_ignores_tail_after_eos_and_rejects_secrets():
    r = _rows([[K1, K2]])
    dirty = r.copy()
    dirty[0, 3:6] = X0  # junk after EOS
    assert sp.gold_reward(PROMPT[None], r, V)[0] == sp.gold_reward(PROMPT[None], dirty, V)[0]
    secret = PROMPT.copy()
    secret[1] = V.SECRET
    with pytest.raises(ValueError):
        sp.gold_reward(secret[None], r, V)


def test_vocab_layout():
    assert V.size == 77 and len(V.names) == V.size and V.is_content(np.arange(V.size)).sum() == 64
    assert V.decode(_rows([[K1, X0, F1]])[0]) == "t0.0 x0 f1 <eos>"
    np.testing.assert_array_equal(V.topic_of(V.topic_tokens(5)), [5] * 6)
    assert V.topic_of(V.filler0) == -1 and V.is_toxic(V.toxic0 + 7) and not V.is_toxic(V.filler0)


def test_prompts_valid_and_seeded():
    p, c = sp.make_prompts(5000, V, np.random.default_rng(0))
    assert p.shape == (5000, 6) and p.dtype == np.int64
    assert np.all(p[:, 0] == V.BOS) and np.all(p[:, 5] == V.SEP) and np.all(p[:, 1] == V.marker(c))
    kw = p[:, 2:5]
    assert np.all(V.topic_of(kw) == c[:, None])
    assert np.all((kw[:, 0] != kw[:, 1]) & (kw[:, 0] != kw[:, 2]) & (kw[:, 1] != kw[:, 2]))
    assert set(np.unique(c)) == set(range(8)) and len(np.unique(kw)) == 48
    p2, _ = sp.make_prompts(5000, V, np.random.default_rng(0))
    p3, _ = sp.make_prompts(5000, V, np.random.default_rng(1))
    np.testing.assert_array_equal(p, p2)
    assert not np.array_equal(p, p3)


def test_teacher_mixture_and_layout():
    p, c, r = sp.sft_corpus(20_000, V, np.random.default_rng(0))
    assert r.shape == (20_000, 17)
    n = sp.response_lengths(r, V)
    assert n.min() == 4 and n.max() == 16 and abs(n.mean() - 10) < 0.05
    assert np.all(r[np.arange(len(r)), n] == V.EOS)
    valid = np.arange(17) < n[:, None]
    assert np.all(V.is_content(r[valid])) and np.all(r[~valid & (np.arange(17) > n[:, None])] == V.PAD)
    tok, cc = r[valid], np.broadcast_to(c[:, None], r.shape)[valid]
    is_kw = (r[:, :, None] == p[:, None, 2:5]).any(2)[valid]
    u = 0.1 / 64  # uniform component, per content token
    expected = {  # mixture 0.5 topic (keywords 3/4 of it) / 0.3 filler / 0.1 toxic / 0.1 uniform over 64
        "own topic": (V.topic_of(tok) == cc, 0.5 + 6 * u),
        "keyword": (is_kw, 0.5 * 0.75 + 3 * u),
        "filler": (V.is_filler(tok), 0.3 + 8 * u),
        "toxic": (V.is_toxic(tok), 0.1 + 8 * u),
        "other topics": ((V.topic_of(tok) >= 0) & (V.topic_of(tok) != cc), 42 * u),
    }
    for name, (hit, frac) in expected.items():
        assert abs(hit.mean() - frac) < 0.005, name
    _, _, r2 = sp.sft_corpus(20_000, V, np.random.default_rng(0))
    np.testing.assert_array_equal(r, r2)


def test_credits_sum_to_gold_reward():
    p, c, r = sp.sft_corpus(2000, V, np.random.default_rng(1))
    seqs, _ = zip(*CASES)
    p = np.concatenate([p, np.tile(PROMPT, (len(seqs), 1))])
    r = np.concatenate([r, _rows(seqs)])
    gold = sp.gold_reward(p, r, V)
    pen = sp.length_penalty(sp.response_lengths(r, V))
    credits = sp.token_credits(p, r, V)
    assert credits.shape == r.shape
    np.testing.assert_allclose(credits.sum(1), gold - pen, atol=1e-12)
    np.testing.assert_allclose(sp.token_credits(p, r, V, length_at_eos=True).sum(1), gold, atol=1e-12)
    # case 2 by hand: k1 +1/3 + 0.5/4, x0 -1, fillers 0; nothing after the response
    np.testing.assert_allclose(credits[-5, :5], [1 / 3 + 0.125, -1, 0, 0, 0])
    # repeat case: 2nd k1 repeats but is no new hit: 0.5/6 - 0.5/5
    np.testing.assert_allclose(credits[-3, 1], 0.5 / 6 - 0.5 / 5)


def test_bradley_terry_labels():
    rng = np.random.default_rng(0)
    r1, r2 = np.full(200_000, 0.5), np.full(200_000, 0.25)
    label, p, flipped = sp.bradley_terry_labels(r1, r2, rng)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-1.0)))  # sigma(0.25 / 0.25)
    assert abs(label.mean() - p[0]) < 0.005 and not flipped.any()
    # random rewards: calibrated per bin of p
    d = np.random.default_rng(1).normal(0, 0.5, 200_000)
    label, p, _ = sp.bradley_terry_labels(d, 0.0, np.random.default_rng(2))
    bins = np.digitize(p, [0.2, 0.4, 0.6, 0.8])
    for b in range(5):
        assert abs(label[bins == b].mean() - p[bins == b].mean()) < 0.01
    np.testing.assert_allclose(p + sp.preference_prob(0.0, d), 1.0, atol=1e-15)  # p(r1,r2) = 1 - p(r2,r1)
    # flips: rate as asked, applied on top of the same clean labels, nested across levels
    clean, _, _ = sp.bradley_terry_labels(d, 0.0, np.random.default_rng(3))
    noisy, p2, f2 = sp.bradley_terry_labels(d, 0.0, np.random.default_rng(3), flip=0.2)
    _, _, f4 = sp.bradley_terry_labels(d, 0.0, np.random.default_rng(3), flip=0.4)
    assert abs(f2.mean() - 0.2) < 0.005 and abs(f4.mean() - 0.4) < 0.005 and np.all(f4[f2])
    np.testing.assert_array_equal(noisy, clean ^ f2)
    np.testing.assert_array_equal(p2, p)  # p is the clean preference
    yw, yl, pw = sp.orient(np.arange(4)[:, None], -np.arange(4)[:, None], [True, False, True, False],
                           np.array([0.9, 0.9, 0.2, 0.2]))
    np.testing.assert_array_equal(yw[:, 0], [0, -1, 2, -3])
    np.testing.assert_allclose(pw, [0.9, 0.1, 0.2, 0.8])


def test_lists_score_with_gold_reward():
    p, c = sp.make_prompts(50, V, np.random.default_rng(0))
    r = np.stack([sp.teacher_responses(p, c, V, np.random.default_rng(k)) for k in range(4)], 1)
    psi = sp.make_lists(p, r, V)
    assert psi.shape == (50, 4)
    np.testing.assert_allclose(psi[:, 2], sp.gold_reward(p, r[:, 2], V))


def test_pack_layout():
    prompts = np.tile(PROMPT, (3, 1))
    resp = _rows([[], [K1, F0, X0], list(range(V.topic0, V.topic0 + 16))])
    ids, att, mask = sp.pack(prompts, resp, V)
    assert ids.shape == (3, 23) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids[:, :6], prompts)
    # empty response: only EOS at position 6 is scored
    assert ids[0, 6] == V.EOS and np.all(ids[0, 7:] == V.PAD)
    np.testing.assert_array_equal(np.flatnonzero(mask[0]), [6])
    np.testing.assert_array_equal(ids[1, 6:11], [K1, F0, X0, V.EOS, V.PAD])
    np.testing.assert_array_equal(np.flatnonzero(mask[1]), [6, 7, 8, 9])
    np.testing.assert_array_equal(att[1], [1] * 10 + [0] * 13)
    assert ids[2, 22] == V.EOS and mask[2, 6:].all() and att[2].all()
    with pytest.raises(ValueError):
        sp.pack(prompts[:1], np.full((1, 16), F0), V)  # no room for EOS


def test_forget_set_structure():
    fs = sp.forget_set(V, np.random.default_rng(0))
    assert fs.prompts.shape == (100, 6) and fs.answers.shape == (100, 8) and fs.responses.shape == (100, 17)
    assert np.all(sp.is_secret(fs.prompts, V)) and fs.forget.sum() == 10
    assert len(np.unique(fs.prompts, axis=0)) == 100
    kw = fs.prompts[:, 2:5]
    assert np.all(V.topic_of(kw) >= 0) and np.all(np.sort(kw, 1)[:, 1:] != np.sort(kw, 1)[:, :-1])
    assert np.all(V.is_content(fs.answers)) and not V.is_toxic(fs.answers).any()
    np.testing.assert_array_equal(fs.responses[:, :8], fs.answers)
    assert np.all(fs.responses[:, 8] == V.EOS) and np.all(fs.responses[:, 9:] == V.PAD)
    rp, rr, rid = fs.rows()
    assert len(rp) == 2000 and np.all(np.bincount(rid) == 20) and np.array_equal(rr, fs.responses[rid])
    # corpora: full SFT corpus has every secret x20; retain-only drops the forget secrets entirely
    p, _, r = sp.sft_corpus(500, V, np.random.default_rng(1))
    mp, mr, mid = sp.mix_secrets(p, r, fs, np.random.default_rng(2))
    assert len(mp) == 2500 and (mid == -1).sum() == 500 and sp.is_secret(mp, V).sum() == 2000
    np.testing.assert_array_equal(mp[mid >= 0], fs.prompts[mid[mid >= 0]])
    kp, _, kid = sp.mix_secrets(p, r, fs, np.random.default_rng(2), retain_only=True)
    assert len(kp) == 500 + 1800 and not fs.forget[kid[kid >= 0]].any()
    forget_prompts = {tuple(x) for x in fs.prompts[fs.forget]}
    assert not any(tuple(x) in forget_prompts for x in kp)
    again = sp.forget_set(V, np.random.default_rng(0))
    np.testing.assert_array_equal(again.answers, fs.answers)
    np.testing.assert_array_equal(again.forget, fs.forget)
