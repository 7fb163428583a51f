"""SPO-style (card M13): λ = 0 is DPO exactly; the degree term is a cross-entropy; `degrade` deletes
the right number of key tokens; a degree head trained through the loss beats chance."""
import math

import pytest
import torch
import torch.nn.functional as F

from lossbench import methods
from lossbench.methods.base import PairBatch
from lossbench.methods.dpo import dpo_loss
from lossbench.methods.spo import SPEC, degrade, spo_loss

from tests.methods.preference_helpers import close, gen, random_pairs

B, K = 6, 4


def _batch(seed=0, variants=None):
    g = gen(seed)
    batch = random_pairs(g, b=B, scale=20.0, chosen_len=5.0, rejected_len=5.0)
    shape = (B, K) if variants is None else (B, variants, K)
    batch.degree_logits = torch.randn(shape, generator=g) * 2
    batch.degree_labels = torch.randint(0, K, shape[:-1], generator=g)
    return batch


def test_reference_registry_and_default_call():
    assert methods.get("spo") is SPEC
    assert SPEC.kind == "pairwise" and SPEC.needs == ("degree_logits",)
    assert SPEC.hparams() == {"beta": 0.1, "lam": 0.5}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)
    out = SPEC.fn(_batch(), **SPEC.hparams())
    assert out.shape == (B,) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_zero_weight_is_dpo_exactly():
    b = _batch(seed=1)
    for beta in (0.1, 0.5):
        assert torch.equal(spo_loss(b, beta=beta, lam=0.0), dpo_loss(b, beta=beta))
    b.degree_logits = torch.full((B, K), float("nan"))  # a broken head cannot leak in at λ = 0
    assert torch.equal(spo_loss(b, beta=0.1, lam=0.0), dpo_loss(b, beta=0.1))


def test_degree_term_is_cross_entropy_and_trains_the_head():
    b = _batch(seed=2)
    b.degree_logits.requires_grad_(True)
    out = spo_loss(b, beta=0.1, lam=0.5)
    ce = F.cross_entropy(b.degree_logits, b.degree_labels, reduction="none")
    close(out, dpo_loss(b, beta=0.1) + 0.5 * ce)
    out.sum().backward()
    expected = 0.5 * (F.softmax(b.degree_logits, -1) - F.one_hot(b.degree_labels, K))
    close(b.degree_logits.grad, expected.detach())


def test_several_copies_per_pair_are_averaged():
    b = _batch(seed=3, variants=3)
    ce = F.cross_entropy(b.degree_logits.reshape(-1, K), b.degree_labels.reshape(-1), reduction="none")
    close(spo_loss(b, beta=0.1, lam=1.0), dpo_loss(b, beta=0.1) + ce.reshape(B, 3).mean(-1))


def _sequences(seed, n, t=12, vocab=20, n_keys=5):
    """Rows of real tokens of random length; tokens < n_keys are the key tokens."""
    g = gen(seed)
    tokens = torch.randint(1, vocab, (n, t), generator=g)
    mask = torch.arange(t) < torch.randint(t // 2, t + 1, (n,), generator=g)[:, None]
    return tokens, mask, tokens < n_keys


def test_degrade_deletes_the_right_share_of_key_tokens():
    tokens, mask, keys = _sequences(4, 64)
    degree = torch.randint(0, K, (64,), generator=gen(5))
    rng_before = torch.random.get_rng_state()
    out, out_mask = degrade(tokens, mask, keys, degree, num_degrees=K, generator=gen(6), pad_id=0)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    n_key = (keys & mask).sum(-1)
    n_left = ((out < 5) & out_mask).sum(-1)
    expected_deleted = torch.floor(n_key * degree / (K - 1) + 0.5).long()
    assert torch.equal(n_key - n_left, expected_deleted)
    assert torch.equal(mask.sum(-1) - out_mask.sum(-1), expected_deleted)
    for row in range(64):
        kept = out[row][out_mask[row]].tolist()
        fillers = [x for x, m in zip(tokens[row].tolist(), mask[row].tolist()) if m and x >= 5]
        assert [x for x in kept if x >= 5] == fillers  # non-key tokens untouched, order kept
        assert (out[row][~out_mask[row]] == 0).all() and out_mask[row].tolist() == sorted(
            out_mask[row].tolist(), reverse=True)  # left-aligned, padded with pad_id
    # degree 0 is the identity on real tokens; the top degree removes every key token
    same, same_mask = degrade(tokens, mask, keys, torch.zeros(64, dtype=torch.long), num_degrees=K,
                              generator=gen(6))
    assert torch.equal(same_mask, mask) and torch.equal(same[mask], tokens[mask])
    gone, gone_mask = degrade(tokens, mask, keys, torch.full((64,), K - 1), num_degrees=K, generator=gen(6))
    assert not ((gone < 5) & gone_mask).any()


def test_degrade_is_deterministic_and_checks_its_arguments():
    tokens, mask, keys = _sequences(7, 8)
    degree = torch.full((8,), 2)
    a = degrade(tokens, mask, keys, degree, num_degrees=K, generator=gen(1))
    b = degrade(tokens, mask, keys, degree, num_degrees=K, generator=gen(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError):
        degrade(tokens, mask, keys, torch.full((8,), K), num_degrees=K, generator=gen(1))
    with pytest.raises(ValueError):
        degrade(tokens, mask, keys, torch.zeros(8, dtype=torch.long), num_degrees=1, generator=gen(1))


def _degree_task(seed, n, t=12, n_keys=6):
    """Rows with exactly n_keys key tokens (ids 1-4) among fillers (ids 5-19), degraded at a random degree."""
    g = gen(seed)
    key_pos = torch.rand(n, t, generator=g).argsort(-1)[:, :n_keys]
    keys = torch.zeros(n, t, dtype=torch.bool).scatter_(1, key_pos, True)
    tokens = torch.where(keys, torch.randint(1, 5, (n, t), generator=g), torch.randint(5, 20, (n, t), generator=g))
    degree = torch.randint(0, K, (n,), generator=g)
    out, out_mask = degrade(tokens, torch.ones(n, t, dtype=torch.bool), keys, degree, num_degrees=K, generator=g)
    # bag of words: a stand-in for the policy's final hidden state of the degraded copy
    return F.one_hot(out, 20).float().mul(out_mask[..., None]).sum(1), degree


def test_degree_head_trained_through_the_loss_beats_chance():
    x_train, y_train = _degree_task(10, 256)
    x_test, y_test = _degree_task(11, 256)
    weight = torch.zeros(20, K, requires_grad=True)
    bias = torch.zeros(K, requires_grad=True)
    zeros = torch.zeros(256)
    for _ in range(30):  # plain gradient descent on the (convex) head
        batch = PairBatch(policy_chosen=zeros, policy_rejected=zeros, ref_chosen=zeros, ref_rejected=zeros,
                          chosen_len=zeros, rejected_len=zeros, degree_logits=x_train @ weight + bias,
                          degree_labels=y_train)
        loss = spo_loss(batch, beta=0.1, lam=1.0).mean()
        g_w, g_b = torch.autograd.grad(loss, (weight, bias))
        with torch.no_grad():
            weight -= g_w
            bias -= g_b
    accuracy = ((x_test @ weight + bias).argmax(-1) == y_test).float().mean().item()
    assert accuracy > 0.5, accuracy  # chance is 1/K = 0.25
    assert loss.item() < math.log(2) + math.log(K)  # DPO part is log 2; CE fell below the uniform guess


def test_validate_rejects_bad_hparams():
    for bad in ({"beta": 0.0}, {"lam": -0.1}):
        with pytest.raises(ValueError):
            SPEC.hparams(bad)
