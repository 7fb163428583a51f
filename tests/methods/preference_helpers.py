"""Test support shared by the preference-method tests: tolerance checks and random `PairBatch` builders.

Every builder draws from its own `torch.Generator` (never the global RNG), so a seed fixes the batch.
`random_pairs` and `token_pairs` also take a generator in place of the seed, for tests that go on
drawing extra fields from the same stream after the batch.
"""
import torch

from lossbench.methods.base import PairBatch


def gen(seed):
    return torch.Generator().manual_seed(seed)


def close(actual, expected, rtol=1e-5, atol=1e-6):
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol), (
        f"{actual} != {expected}")


def _generator(seed):
    return seed if isinstance(seed, torch.Generator) else gen(seed)


def random_pairs(seed=0, *, b=32, scale=30.0, chosen_len=8.0, rejected_len=9.0, rm_margin=None):
    """B pairs of sequence log-probs in (−scale, 0].

    Lengths are constant (`chosen_len`, `rejected_len`); if either is None, both are drawn from
    randint(1, 20) after the log-probs (a given value still wins over the drawn one). `rm_margin`, if
    not None, is the scale of a N(0, rm_margin²) reward-model margin, drawn last.
    """
    g = _generator(seed)
    pc, pr, rc, rr = (-torch.rand(4, b, generator=g) * scale).unbind(0)
    if chosen_len is None or rejected_len is None:
        lens = torch.randint(1, 20, (2, b), generator=g).float()
    return PairBatch(
        policy_chosen=pc, policy_rejected=pr, ref_chosen=rc, ref_rejected=rr,
        chosen_len=lens[0] if chosen_len is None else torch.full((b,), float(chosen_len)),
        rejected_len=lens[1] if rejected_len is None else torch.full((b,), float(rejected_len)),
        rm_margin=None if rm_margin is None else torch.randn(b, generator=g) * rm_margin)


def swap(batch):
    """The same pairs with chosen and rejected exchanged (the DPO margin changes sign)."""
    return PairBatch(policy_chosen=batch.policy_rejected, policy_rejected=batch.policy_chosen,
                     ref_chosen=batch.ref_rejected, ref_rejected=batch.ref_chosen,
                     chosen_len=batch.rejected_len, rejected_len=batch.chosen_len)


def margin_batch(h, *, length=3.0):
    """(h, batch): pairs whose DPO margin is h, with h a fresh float32 leaf that is policy_chosen, so
    ∂L/∂policy_chosen = ∂L/∂h. Both responses have `length` tokens."""
    h = torch.as_tensor(h, dtype=torch.float32).clone().requires_grad_(True)
    zero = torch.zeros_like(h)
    return h, PairBatch(policy_chosen=h, policy_rejected=zero, ref_chosen=zero, ref_rejected=zero,
                        chosen_len=zero + length, rejected_len=zero + length)


def response_mask(g, *, b, t, min_len=1):
    """[b, t] float mask of a response with randint(min_len, t + 1) tokens per row."""
    lengths = torch.randint(min_len, t + 1, (b,), generator=g)
    return (torch.arange(t) < lengths[:, None]).float()


def token_pairs(seed=0, *, b=6, t=5, scale=4.0, min_len=1, guide=False, requires_grad=False):
    """B pairs with padded per-token log-probs in (−scale, 0] (policy, reference and, with `guide`, a
    guidance policy) and response masks; sequence log-probs are the masked token sums, so DPO sees the
    same pairs. Draw order: chosen mask, rejected mask, then the token tensors. With `requires_grad`
    the token tensors are leaves that require grad."""
    g = _generator(seed)
    resp_w, resp_l = (response_mask(g, b=b, t=t, min_len=min_len) for _ in range(2))
    keys = ("pw", "pl", "rw", "rl", "gw", "gl") if guide else ("pw", "pl", "rw", "rl")
    tok = {k: -torch.rand(b, t, generator=g) * scale for k in keys}
    for v in tok.values():
        v.requires_grad_(requires_grad)
    return PairBatch(
        policy_chosen=(tok["pw"] * resp_w).sum(-1), policy_rejected=(tok["pl"] * resp_l).sum(-1),
        ref_chosen=(tok["rw"] * resp_w).sum(-1), ref_rejected=(tok["rl"] * resp_l).sum(-1),
        chosen_len=resp_w.sum(-1), rejected_len=resp_l.sum(-1),
        policy_chosen_tok=tok["pw"], policy_rejected_tok=tok["pl"], ref_chosen_tok=tok["rw"],
        ref_rejected_tok=tok["rl"], guide_chosen_tok=tok.get("gw"), guide_rejected_tok=tok.get("gl"),
        chosen_mask=resp_w, rejected_mask=resp_l,
    )
