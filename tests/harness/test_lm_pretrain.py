"""The LM-pretraining trainer (lossbench/lm_pretrain.py) and reference stage (lossbench/lm_reference.py)
on a tiny random corpus: reductions, schedule, selection, diagnostics, determinism, divergence."""
import math

import numpy as np
import pytest
import torch

from lossbench import methods
from lossbench.lm import build_causal_lm
from lossbench.lm_loss import token_losses
from lossbench.lm_pretrain import (WEIGHT_EDGES, Corpus, WeightStats, batch_objective, eval_subset, load_corpus,
                                   lr_factor, train_lm, train_pool)
from lossbench.lm_reference import checkpoint_steps, head_gradient_features

V, L = 32, 12
MODEL = {"arch": "gpt2", "d_model": 16, "layers": 1, "heads": 2, "context": L}
PROTO = {"model": MODEL, "optimizer": {"name": "adamw", "lr": 0.01}, "schedule": {"warmup_steps": 2, "min_lr_ratio": 0.1},
         "budget": {"steps": 12, "batch_size": 8, "grad_clip": 1.0}, "data": {}, "eval": {"every": 4},
         "selection": {"ratio": 0.5}}


def arrays(seed=0, n=96):
    rng = np.random.default_rng(seed)
    return {"train_tokens": rng.integers(0, V, (n, L + 1)), "train_domain": np.arange(n) % 3,
            "train_flag": (np.arange(n) // 3) % 3, "val_tokens": rng.integers(0, V, (30, L + 1)),
            "val_domain": np.arange(30) % 2, "test_tokens": rng.integers(0, V, (30, L + 1)),
            "test_domain": np.arange(30) % 2, "domain_names": np.array(["a", "b", "noise"])}


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(arrays(), PROTO, data_seed=0)


def model(seed=0):
    return build_causal_lm(MODEL, V, seed)


def test_pool_and_eval_subsets_are_seeded_and_sorted():
    assert np.array_equal(train_pool(10, None, 0), np.arange(10))
    a, b = train_pool(100, 30, 5), train_pool(100, 30, 5)
    assert np.array_equal(a, b) and len(np.unique(a)) == 30 and np.all(np.diff(a) > 0)
    doms = np.array([0] * 50 + [1] * 3)
    keep = eval_subset(doms, 5, 0)
    assert (doms[keep] == 0).sum() == 5 and (doms[keep] == 1).sum() == 3  # a small domain keeps all it has


def test_lr_schedule_boundaries():
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, 0.0) == pytest.approx(0.5)


def _ce(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(6, L, generator=g) * 4, torch.rand(6, L, generator=g) * 3


@pytest.mark.parametrize("method, hp", [("uniform", {}), ("dlsr_linupper", {"r": 1e9}), ("dlsr_extremes", {"r": 1e9}),
                                        ("zloss", {"alpha": 0.0})])
def test_equal_weights_reduce_to_the_token_mean(method, hp):
    ce, lse = _ce()
    spec = methods.get(method)
    loss, _ = batch_objective(spec, spec.hparams(hp), ce, lse, progress=0.5, domain=None, counts=None)
    assert loss.item() == pytest.approx(ce.mean().item(), rel=1e-6)


def test_prior_with_constant_reference_is_the_token_mean():
    ce, lse = _ce()
    spec = methods.get("prior")
    loss, _ = batch_objective(spec, spec.hparams(), ce, lse, progress=0.5, domain=None, counts=None,
                              ref_logp=torch.full_like(ce, -2.0))
    assert loss.item() == pytest.approx(ce.mean().item(), rel=1e-6)


def test_dlsr_weights_upweight_the_batch_and_sum_to_one():
    ce, lse = _ce()
    spec = methods.get("dlsr_linupper")
    loss, w = batch_objective(spec, spec.hparams(), ce, lse, progress=0.5, domain=None, counts=None)
    assert w.sum().item() == pytest.approx(1.0) and not w.requires_grad
    per = ce.mean(1)
    assert w[per.argmin()] < w[per.argmax()]  # LinUpper deprioritises the lowest-loss sample
    assert loss.item() == pytest.approx((w * per).sum().item())


def test_weight_stats_of_uniform_weights():
    stats = WeightStats(3)
    n = 8
    stats.add(torch.full((n,), 1 / n), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.zeros(n, dtype=torch.long))
    out = stats.flush()
    assert out["weights/ess_fraction"] == pytest.approx(1.0)
    assert out["weights/entropy"] == pytest.approx(1.0)
    assert out["weights/max_min_ratio"] == pytest.approx(1.0)
    uniform_bin = next(i for i, (lo, hi) in enumerate(zip(WEIGHT_EDGES[:-1], WEIGHT_EDGES[1:])) if lo <= 1 < hi)
    assert out[f"weights/hist_{uniform_bin}"] == pytest.approx(1.0)
    assert out["weights/clean"] == pytest.approx(1.0) and math.isnan(out["weights/noise"])
    assert stats.flush() == {}  # reset after a flush


def _run(corpus, method, seed=0, **kw):
    spec = methods.get(method)
    m = model(seed)
    features = {"num_chunks": len(corpus.train), "seed": 3}
    res = train_lm(m, corpus, spec, spec.hparams(), PROTO, order_seed=seed, features=features, **kw)
    return m, res


def test_training_is_deterministic_and_lowers_the_loss(corpus, one_torch_thread):
    _, a = _run(corpus, "dlsr_linupper")
    _, b = _run(corpus, "dlsr_linupper")
    assert a.status == "ok" and a.steps == 12 and a.tokens == 12 * 8 * L
    assert a.curves == b.curves and a.final == b.final
    val = [r["value"] for r in a.curves if r["metric"] == "val/loss"]
    assert len(val) == 3 and val[-1] < math.log(V) + 0.05  # learns the unigram-ish statistics at least
    assert set(a.final) >= {"val/loss", "test/loss", "test/worst_domain_loss", "test/loss/a", "test/loss/b"}
    assert "test/loss/noise" not in a.final  # no held-out chunk of that domain: no number
    assert any(r["metric"] == "weights/ess_fraction" for r in a.curves)


def test_selection_trains_on_the_kept_chunks_only(corpus, one_torch_thread):
    _, res = _run(corpus, "random_select")
    assert res.kept_chunks == round(0.5 * len(corpus.train))
    assert sum(res.kept_by_flag.values()) == res.kept_chunks


def test_a_non_finite_loss_is_recorded_as_diverged(corpus, one_torch_thread, monkeypatch):
    import lossbench.lm_pretrain as lp

    real = lp.forward_losses
    calls = {"n": 0}

    def poisoned(model, chunks, impl="torch", **kw):
        ce, lse = real(model, chunks, impl, **kw)
        calls["n"] += model.training
        return (ce * float("nan"), lse) if calls["n"] == 5 and model.training else (ce, lse)

    monkeypatch.setattr(lp, "forward_losses", poisoned)
    _, res = _run(corpus, "uniform")
    assert res.status == "diverged" and res.diverged_at_step == 4 and res.final == {}


def test_checkpoint_steps_are_distinct_and_end_at_the_budget():
    steps = checkpoint_steps(100, 6)
    assert len(steps) == 6 and steps[-1] == 100 and steps == sorted(set(steps))
    with pytest.raises(ValueError):
        checkpoint_steps(3, 6)


def test_head_gradient_features_equal_the_projected_autograd_gradient(corpus):
    m = model(1).eval()
    chunks = corpus.train[:3]
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(V, 4, generator=g), torch.randn(16, 5, generator=g)
    feats = head_gradient_features(m, chunks, a, b)
    head = m.get_output_embeddings().weight
    for i in range(3):
        # the head is tied to the embedding: differentiate through the head's use only
        with torch.no_grad():
            hidden = m.base_model(input_ids=chunks[i:i + 1, :-1]).last_hidden_state
        w = head.detach().clone().requires_grad_(True)
        ce, _ = token_losses(hidden, w, chunks[i:i + 1, 1:])
        ce.mean().backward()
        want = (a.T @ w.grad @ b).flatten()
        assert torch.allclose(feats[i], want, atol=1e-5), (feats[i][:4], want[:4])


def test_corpus_domain_counts(corpus):
    assert isinstance(corpus, Corpus) and corpus.domain_counts().tolist() == [32.0, 32.0, 32.0]


def test_auto_loss_layer_resolves_once_and_trains_like_the_named_one(corpus, one_torch_thread, monkeypatch):
    import lossbench.lm_pretrain as lp

    spec = methods.get("uniform")
    runs = {}
    for impl in ("torch", "auto"):
        runs[impl] = train_lm(model(0), corpus, spec, spec.hparams(), {**PROTO, "loss_impl": impl}, order_seed=0)
    assert runs["auto"].loss_impl == "torch" == runs["torch"].loss_impl  # small CPU head: materialised logits
    assert runs["auto"].curves == runs["torch"].curves and runs["auto"].final == runs["torch"].final
    monkeypatch.setattr(lp, "resolve_impl", lambda impl, device, rows, vocab: "chunked")
    assert train_lm(model(0), corpus, spec, spec.hparams(), {**PROTO, "loss_impl": "auto"},
                    order_seed=0).loss_impl == "chunked"
