"""Contracts every registered method must keep, whatever its kind (conventions §8)."""
import math
from pathlib import Path

import pytest
import torch

from lossbench import methods
from lossbench.methods.base import KINDS, MethodSpec, PairBatch
from lossbench.methods.selection import budget

ROOT = Path(__file__).resolve().parents[2]

NAMES = list(methods.REGISTRY)
K, B = 5, 16
T = 7  # response tokens per sequence in the random preference batches
PREFERENCE = ("pairwise", "listwise", "unpaired", "unlearning", "online")
LM = ("sample_weight", "token_weight", "token_penalty", "selection")
D, M, RATIO = 24, 6, 0.5  # training chunks, reference checkpoints and kept fraction for `selection`
SHAPES = [(4, 3), (3,), (2, 2)]  # parameter tensors of the random `grad_transform` inputs


def _batch(seed=0, scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, K, generator=g) * scale).to(dtype)
    targets = torch.randint(0, K, (B,), generator=g)
    counts = torch.tensor([100.0, 50.0, 20.0, 8.0, 2.0])
    return logits, targets, counts


def _preference(kind, seed=0, scale=1.0, dtype=torch.float32):
    """Random inputs of a preference kind: (kwargs for fn, policy-side leaves that require grad).

    Per-token log-probs lie in (−3·scale, 0]. Every PairBatch field is filled; sequence log-probs are the
    masked sums of the token ones (so gradients reach the token leaves), and row 0's rejected response is
    empty (an all-zero mask) to exercise the length guards. Reference and guide log-probs and the RM
    margin are frozen inputs and never require grad.
    """
    g = torch.Generator().manual_seed(seed)

    def logps(*shape):
        return (-torch.rand(*shape, generator=g) * 3 * scale).to(dtype)

    def leaf(x):
        return x.detach().requires_grad_(True)

    if kind == "online":  # 2 sampled responses per prompt and a greedy one, proxy rewards in (−2, 2)·scale
        policy = leaf(logps(B, 2) * T)
        reward = lambda *shape: ((torch.rand(*shape, generator=g) * 4 - 2) * scale).to(dtype)  # noqa: E731
        return dict(policy=policy, ref=logps(B, 2) * T, reward=reward(B, 2), greedy_policy=logps(B) * T,
                    greedy_ref=logps(B) * T, greedy_reward=reward(B)), [policy]
    if kind == "listwise":
        policy = leaf(logps(B, 4) * T)
        scores = torch.randint(0, 4, (B, 4), generator=g).to(dtype)  # graded labels, ties included
        return dict(policy=policy, ref=logps(B, 4) * T, scores=scores), [policy]
    if kind in ("unpaired", "unlearning"):
        policy = leaf(logps(B) * T)
        kw = dict(policy=policy, ref=logps(B) * T)
        if kind == "unpaired":
            kw.update(desirable=torch.rand(B, generator=g) < 0.5,
                      kl_ref=(torch.rand((), generator=g) * scale).to(dtype))
            return kw, [policy]
        # template_answers (FLAT): per-token log-probs of (forget answer, template), row 0's template empty
        mask = (torch.arange(T) < torch.randint(1, T + 1, (B, 2, 1), generator=g)).to(dtype)
        mask[0, 1] = 0
        tokens = leaf(logps(B, 2, T))
        kw.update(tokens=tokens, mask=mask)
        return kw, [policy, tokens]
    lens = torch.randint(1, T + 1, (2, B), generator=g)
    lens[1, 0] = 0
    mask_c, mask_r = (torch.arange(T) < lens[..., None]).to(dtype).unbind(0)
    pol_c, pol_r = leaf(logps(B, T)), leaf(logps(B, T))
    ref_c, ref_r = logps(B, T) * mask_c, logps(B, T) * mask_r
    kl_c, kl_r = (leaf(torch.rand(B, T, generator=g).to(dtype) * scale) for _ in range(2))  # κ_t ≥ 0
    masks = [leaf(torch.rand(B, T, generator=g).to(dtype)) for _ in range(4)]  # non-negative weights
    degree_logits = leaf((torch.randn(B, K, generator=g) * scale).to(dtype))
    batch = PairBatch(
        policy_chosen=(pol_c * mask_c).sum(-1), policy_rejected=(pol_r * mask_r).sum(-1),
        ref_chosen=ref_c.sum(-1), ref_rejected=ref_r.sum(-1),
        chosen_len=lens[0].to(dtype), rejected_len=lens[1].to(dtype),
        policy_chosen_tok=pol_c * mask_c, policy_rejected_tok=pol_r * mask_r,
        ref_chosen_tok=ref_c, ref_rejected_tok=ref_r, chosen_mask=mask_c, rejected_mask=mask_r,
        kl_chosen_tok=kl_c * mask_c, kl_rejected_tok=kl_r * mask_r,
        guide_chosen_tok=logps(B, T) * mask_c, guide_rejected_tok=logps(B, T) * mask_r,
        rm_margin=(torch.randn(B, generator=g) * 4 * scale).to(dtype),
        mask_u_chosen=masks[0] * mask_c, mask_u_rejected=masks[1] * mask_r,
        mask_d_chosen=masks[2] * mask_c, mask_d_rejected=masks[3] * mask_r,
        degree_logits=degree_logits, degree_labels=torch.randint(0, K, (B,), generator=g),
    )
    # revision_logps (SRPO): summed log-probs given an earlier answer, drawn last (the fields above stay as they were)
    revision = [leaf(logps(B) * T) for _ in range(4)]
    for pair, pol in zip(("wl", "ll", "ww", "lw"), revision):
        setattr(batch, f"policy_rev_{pair}", pol)
        setattr(batch, f"ref_rev_{pair}", logps(B) * T)
    return dict(batch=batch), [pol_c, pol_r, kl_c, kl_r, *masks, degree_logits, *revision]


def _lm(kind, seed=0, scale=1.0, dtype=torch.float32):
    """Random inputs of an LM-pretraining kind: (kwargs for fn without progress/hp, leaves that require grad).

    Sample losses and lse require grad so the tests can check that weights come back detached and that
    a penalty's gradient reaches lse. Token masks leave row 0 empty (a fully padded sequence).
    """
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, T, generator=g) < 0.7
    mask[0] = False
    mask[1, 0] = True
    if kind == "sample_weight":
        losses = (torch.rand(B, generator=g) * 3 * scale).to(dtype).requires_grad_()
        return dict(sample_losses=losses), [losses]
    if kind == "token_weight":  # log-probs in (−3·scale, 0], anything at padded positions
        ref_logp = torch.where(mask, -torch.rand(B, T, generator=g) * 3 * scale, -torch.inf).to(dtype)
        return dict(ref_logp=ref_logp, mask=mask), []
    if kind == "token_penalty":
        lse = ((torch.randn(B, T, generator=g) + 2) * scale).to(dtype).requires_grad_()
        return dict(lse=lse, mask=mask), [lse]
    features = dict(  # everything any selection method may need; _call passes only its `needs`
        ref_losses=(torch.rand(D, M, generator=g) * 3 + 1) * scale, ref_scores=torch.rand(M, generator=g),
        chunk_features=torch.randn(D, 4, generator=g) * scale, target_features=torch.randn(5, 4, generator=g) * scale,
        num_chunks=D, seed=seed)
    return features, []


def _grad_transform(seed=0, scale=1.0, dtype=torch.float32):
    """Random parameters and gradients (one entry per tensor of SHAPES) for a `grad_transform`."""
    g = torch.Generator().manual_seed(seed)
    draw = lambda: [(torch.randn(s, generator=g) * scale).to(dtype) for s in SHAPES]  # noqa: E731
    return dict(params=draw(), grads=draw())


def _decoding(spec, seed=0, scale=1.0, dtype=torch.float32):
    """Proxy scores of the default n candidates for B prompts (a `decoding` method's input)."""
    g = torch.Generator().manual_seed(seed)
    return dict(scores=(torch.randn(B, spec.defaults["n"], generator=g) * scale).to(dtype))


def _data(spec: MethodSpec, seed=0, scale=None, dtype=torch.float32):
    """Inputs for the kind of `spec`: classification (logits, targets, counts), or preference / LM /
    grad_transform / decoding kwargs."""
    if spec.kind == "decoding":
        return _decoding(spec, seed=seed, scale=1.0 if scale is None else scale, dtype=dtype)
    if spec.kind == "grad_transform":
        return _grad_transform(seed=seed, scale=1.0 if scale is None else scale, dtype=dtype)
    if spec.kind in LM:
        return _lm(spec.kind, seed=seed, scale=1.0 if scale is None else scale, dtype=dtype)[0]
    if spec.kind in PREFERENCE:
        return _preference(spec.kind, seed=seed, scale=1.0 if scale is None else scale, dtype=dtype)[0]
    return _batch(seed=seed, scale=3.0 if scale is None else scale, dtype=dtype)


def _call(spec: MethodSpec, *data, progress=0.5):
    """The method's output for a batch, called the way the trainer calls it."""
    hp = spec.split_hparams(spec.hparams())[0]  # optimiser hyperparameters never reach fn
    if spec.kind in PREFERENCE or spec.kind in ("grad_transform", "decoding"):  # data = (kwargs,): PairBatch, the
        # list / unpaired / forget tensors, or a grad_transform's params and grads
        (kwargs,) = data
        extra = {"tokens", "mask"} if spec.kind == "unlearning" and "template_answers" not in spec.needs else set()
        return spec.fn(**{k: v for k, v in kwargs.items() if k not in extra}, **hp)
    if spec.kind in LM:  # data = (kwargs,), called as lossbench/lm_pretrain.py calls each kind
        (kwargs,) = data
        if spec.kind == "selection":
            return spec.fn(ratio=RATIO, **{k: kwargs[k] for k in spec.needs}, **hp)
        if spec.kind == "token_penalty":
            return spec.fn(kwargs["lse"], kwargs["mask"], **hp)
        return spec.fn(*kwargs.values(), progress=progress, **hp)
    logits, targets, counts = data
    g = torch.Generator().manual_seed(7)  # the trainer's extra inputs: features, a teacher, a 2nd head
    needs = {"class_counts": counts, "progress": progress,
             "features": torch.randn(len(targets), 6, generator=g).requires_grad_(True),
             "teacher_logits": torch.randn(logits.shape, generator=g) * 3,
             "aux_logits": (torch.randn(logits.shape, generator=g) * 3).requires_grad_(True), "logits": logits}
    kw = {k: needs[k] for k in spec.needs if k != "example_state"}
    if spec.kind == "sampler":
        return spec.fn(counts, progress=progress, **hp)  # samplers always get both (methods/base.py)
    if spec.kind == "reweight":
        return spec.fn(targets, **kw, **hp)
    if "example_state" in spec.needs:
        state = torch.full((len(targets),), float(spec.init_state(hp)))
        loss, new_state = spec.fn(logits, targets, example_state=state, **kw, **hp)
        assert new_state.shape == state.shape and not new_state.requires_grad
        return loss
    return spec.fn(logits, targets, **kw, **hp)  # embedding: the logits stand in for 5-dim embeddings


@pytest.mark.parametrize("name", NAMES)
def test_spec_fields(name):
    spec = methods.get(name)
    assert spec.name == name and spec.kind in KINDS
    assert spec.paper and spec.url.startswith("http") and spec.summary
    assert spec.docs and (ROOT / spec.docs_path).is_file(), f"{name}: no page {spec.docs_path}"
    assert spec.version >= 1 and spec.reference is not None
    assert set(spec.search) <= set(spec.defaults)


@pytest.mark.parametrize("name", NAMES)
def test_reference_value(name):
    spec = methods.get(name)
    kwargs, expected = spec.reference()
    out = spec.fn(**kwargs)
    # stateful losses return (loss, new_state); their reference may give both or the loss only
    outs = out if isinstance(out, tuple) else (out,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for o, e in zip(outs, expected):
        torch.testing.assert_close(torch.as_tensor(o, dtype=torch.float64), torch.as_tensor(e, dtype=torch.float64),
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_shapes_finite_and_gradients(name, scale):
    spec = methods.get(name)
    if spec.kind in LM:
        _check_lm_contract(spec, scale)
        return
    if spec.kind == "decoding":  # one candidate index per prompt, within range, from the scores alone
        kwargs = _decoding(spec, scale=scale)
        out = _call(spec, kwargs)
        assert out.shape == (B,) and out.dtype == torch.long and out.min() >= 0
        assert out.max() < kwargs["scores"].shape[1]
        return
    if spec.kind == "grad_transform":  # detached new gradients, one per tensor, same shape and dtype
        kwargs = _grad_transform(scale=scale)
        out = _call(spec, kwargs)
        assert isinstance(out, tuple) and len(out) == len(SHAPES)
        for o, gr in zip(out, kwargs["grads"]):
            assert o.shape == gr.shape and o.dtype == gr.dtype and not o.requires_grad and torch.all(torch.isfinite(o))
        return
    if spec.kind in PREFERENCE:
        kwargs, leaves = _preference(spec.kind, scale=scale)
        out = _call(spec, kwargs)
        assert out.shape == (B,) and out.dtype == torch.float32
        assert torch.all(torch.isfinite(out))
        out.sum().backward()
        grads = [leaf.grad for leaf in leaves if leaf.grad is not None]
        assert grads and all(torch.all(torch.isfinite(gr)) for gr in grads)
        if scale == 1.0:  # at 1e3 saturating losses may legitimately underflow to zero gradient
            assert any(torch.any(gr != 0) for gr in grads), "no gradient reaches the policy"
        return
    logits, targets, counts = _batch(scale=scale)
    logits.requires_grad_(True)
    out = _call(spec, logits, targets, counts)
    if spec.kind == "sampler":
        assert out.shape == (K,) and torch.all(out >= 0) and math.isclose(float(out.sum()), 1.0, rel_tol=1e-5)
        return
    if spec.kind == "reweight":
        assert out.shape == (B,) and not out.requires_grad and torch.all(torch.isfinite(out)) and torch.all(out >= 0)
        return
    expected_shape = () if spec.kind in ("batch_loss", "embedding") else (B,)
    assert out.shape == expected_shape
    assert torch.all(torch.isfinite(out))
    out.sum().backward()
    assert torch.all(torch.isfinite(logits.grad))


def _check_lm_contract(spec, scale):
    """The LM kinds' contracts (methods/base.py): detached normalised weights, masked penalties, a mask."""
    kwargs, leaves = _lm(spec.kind, scale=scale)
    out = _call(spec, kwargs)
    if spec.kind == "selection":
        assert out.dtype == torch.bool and out.shape == (D,) and int(out.sum()) == budget(RATIO, D)
        return
    assert out.dtype == torch.float32 and torch.all(torch.isfinite(out))
    if spec.kind == "sample_weight":
        assert out.shape == (B,) and not out.requires_grad and torch.all(out >= 0)
        assert math.isclose(float(out.sum()), 1.0, rel_tol=1e-5)
        return
    mask = kwargs["mask"]
    assert out.shape == (B, T) and torch.all(out[~mask] == 0)
    if spec.kind == "token_weight":
        assert not out.requires_grad and torch.all(out >= 0)
        assert math.isclose(float(out[mask].mean()), 1.0, rel_tol=1e-5)
        return
    out.sum().backward()  # token_penalty: a loss term, differentiable in lse
    (lse,) = leaves
    assert torch.all(torch.isfinite(lse.grad)) and torch.all(lse.grad[~mask] == 0) and torch.any(lse.grad != 0)


@pytest.mark.parametrize("name", NAMES)  # kinds are filtered inside, so collection imports no module
def test_bf16_inputs_compute_in_float32(name):
    spec = methods.get(name)
    if spec.kind not in ("loss", "batch_loss", "embedding", "token_penalty", *PREFERENCE):
        pytest.skip(f"{spec.kind} returns no loss")
    data = _data(spec, dtype=torch.bfloat16)
    out = _call(spec, *(data if isinstance(data, tuple) else (data,)))
    assert out.dtype == torch.float32 and torch.all(torch.isfinite(out))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    spec = methods.get(name)
    a, b = (_data(spec, seed=3) for _ in range(2))
    a = _call(spec, *(a if isinstance(a, tuple) else (a,)))
    b = _call(spec, *(b if isinstance(b, tuple) else (b,)))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_methods_of_one_kind_differ():
    """A broken dispatch that silently ran the baseline would make two methods agree."""
    logits, targets, counts = _batch(seed=7)
    outs, optim = {}, {}
    for name in NAMES:
        spec = methods.get(name)
        if spec.kind == "loss" and spec.predict is None:
            outs[name] = _call(spec, logits, targets, counts)
            optim[name] = spec.split_hparams(spec.hparams())[1]  # ce_wd: erm's loss, its own weight decay
    same = {frozenset((a, b)) for a in outs for b in outs
            if a < b and torch.allclose(outs[a], outs[b]) and optim[a] == optim[b]}
    # logit adjustment with tau=1 and balanced softmax are the same loss by construction (card C4);
    # a float64 softmax equals the float32 one away from Softmax Collapse (tests/methods/test_softmax_ce.py)
    assert same <= {frozenset(("logit_adjust", "balanced_softmax")), frozenset(("erm", "ce_fp64"))}, same
    kwargs = _grad_transform(seed=7)
    outs = {n: _call(methods.get(n), kwargs) for n in NAMES if methods.get(n).kind == "grad_transform"}
    optim = {n: methods.get(n).split_hparams(methods.get(n).hparams())[1] for n in outs}
    same = {frozenset((a, b)) for a in outs for b in outs
            if a < b and all(torch.allclose(x, y) for x, y in zip(outs[a], outs[b])) and optim[a] == optim[b]}
    assert not same, f"grad_transform: {same}"  # (orthograd_released: orthograd's transform, its own AdamW settings)
    # Preference kinds: every pair of methods of one kind must differ on a shared batch, except the
    # engine-level variants of one loss (same fn and loss hyperparameters; they differ in what the
    # engine feeds it: ReMax on the proxy RM or on a reward-model ensemble objective).
    for kind in PREFERENCE:
        kwargs, _ = _preference(kind, seed=7)
        specs = {n: methods.get(n) for n in NAMES if methods.get(n).kind == kind}
        outs = {n: _call(s, kwargs).detach() for n, s in specs.items()}
        loss_of = {n: (s.fn, sorted(s.split_hparams(s.hparams())[0].items())) for n, s in specs.items()}
        same = {frozenset((a, b)) for a in outs for b in outs
                if a < b and torch.allclose(outs[a], outs[b]) and loss_of[a] != loss_of[b]}
        assert not same, f"{kind}: {same}"
    # LM kinds likewise, at progress 0.3: past DLSR's burn-in, before the curriculum has annealed.
    for kind in LM:
        kwargs, _ = _lm(kind, seed=7)
        outs = {n: _call(methods.get(n), kwargs, progress=0.3).detach().float()
                for n in NAMES if methods.get(n).kind == kind}
        same = {frozenset((a, b)) for a in outs for b in outs if a < b and torch.allclose(outs[a], outs[b])}
        assert not same, f"{kind}: {same}"


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError, match="focal"):
        methods.get("focall")


def test_unknown_hparam_is_rejected():
    with pytest.raises(ValueError, match="valid"):
        methods.get("focal").hparams({"gama": 1.0})
