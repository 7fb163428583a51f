"""Card L5: TAROT whitening, scores, Sinkhorn and selection (methods/tarot.py)."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from lossbench import methods
from lossbench.methods.tarot import SPEC, ot_cost, sinkhorn, tarot, whiten, whitened_cosine

HP = SPEC.hparams()


def _features(n, dim=8, seed=0):
    """Correlated, anisotropic features (column scales 0.3 to 3), the case whitening is for."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0] * torch.logspace(-0.5, 0.5, dim)
    return torch.randn(n, dim, generator=g) @ mix.T + 5.0


def test_registered_reference_and_needs():
    assert methods.get("tarot") is SPEC and SPEC.kind == "selection"
    assert SPEC.needs == ("chunk_features", "target_features")
    assert HP == {"mode": "fixed_size", "folds": 5, "ridge": 1e-5}
    kwargs, expected = SPEC.reference()
    assert torch.equal(SPEC.fn(**kwargs), expected)


def test_whitened_covariance_is_identity_in_float32():
    x = _features(600).float()
    z = whiten(x).float()
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-5)
    cov = z.T @ z / len(z)
    assert (cov - torch.eye(8)).abs().max() < 1e-3


def test_scores_are_cosines_in_the_unit_interval():
    cand, targ = _features(50, seed=1), _features(10, seed=2) * 3
    scores, c, t = whitened_cosine(cand, targ)
    assert scores.shape == (50, 10) and scores.dtype == torch.float32
    assert torch.all(scores.abs() <= 1.0)
    assert torch.allclose(c.norm(dim=1), torch.ones(50)) and torch.allclose(t.norm(dim=1), torch.ones(10))
    assert torch.allclose(scores, c @ t.T, atol=1e-6)


def test_sinkhorn_matches_exact_transport_on_small_problems():
    # Uniform weights on n = m points: exact OT is the best assignment (Birkhoff), found by brute force.
    g = torch.Generator().manual_seed(3)
    for n in (3, 5):
        x, y = (F.normalize(torch.randn(n, 6, generator=g), dim=1) for _ in range(2))
        cost = ot_cost(x, y)
        exact = min(sum(cost[i, p[i]].item() for i in range(n)) / n for p in itertools.permutations(range(n)))
        value, f, gpot = sinkhorn(cost)
        assert value.item() == pytest.approx(exact, abs=1e-3)  # entropic bias at ε = blur² = 1e-4
        assert (f[:, None] + gpot[None, :] - cost).max() < 1e-3  # dual feasibility up to ε
    x = F.normalize(torch.randn(4, 6, generator=g), dim=1)
    assert sinkhorn(ot_cost(x, x))[0].item() == pytest.approx(0.0, abs=1e-3)  # identical sets


def test_duplicated_targets_are_selected_first():
    cand = _features(40, seed=4)
    dup = [3, 17, 29, 35]
    targets = cand[dup]
    keep = tarot(ratio=len(dup) / 40, chunk_features=cand, target_features=targets, **HP)
    assert keep.dtype == torch.bool and sorted(torch.nonzero(keep).squeeze(1).tolist()) == dup
    keep = tarot(ratio=0.25, chunk_features=cand, target_features=targets, **HP)
    assert int(keep.sum()) == 10 and bool(keep[dup].all())


def test_overflowing_rank_layer_is_filled_by_largest_potential():
    # Rank layer 0 holds the 4 duplicates but the budget is 2: the two with the largest Sinkhorn
    # potential against all targets win (the reference code's rule), and the mask is deterministic.
    cand = _features(30, seed=5)
    dup = torch.tensor([2, 9, 14, 27])
    keep = tarot(ratio=2 / 30, chunk_features=cand, target_features=cand[dup], **HP)
    _, c, t = whitened_cosine(cand, cand[dup])
    potential = sinkhorn(ot_cost(c[dup], t))[1]
    expected = dup[torch.argsort(potential, descending=True)[:2]]
    assert sorted(torch.nonzero(keep).squeeze(1).tolist()) == sorted(expected.tolist())
    assert torch.equal(keep, tarot(ratio=2 / 30, chunk_features=cand.numpy(), target_features=cand[dup].numpy(), **HP))


def test_otm_mode_sizes_itself_around_the_target_cluster():
    # Two clusters; the targets are copies of cluster-A candidates. The automatic ratio keeps every
    # duplicated candidate and few of cluster B, ignoring `ratio`.
    g = torch.Generator().manual_seed(6)
    u, v = torch.eye(8)[0] * 3, torch.eye(8)[1] * 3
    cand = torch.cat([u + torch.randn(20, 8, generator=g), v + torch.randn(20, 8, generator=g)])
    dup = [1, 4, 7, 9, 12, 15]
    hp = {**HP, "mode": "otm", "folds": 3}
    keep = tarot(ratio=0.9, chunk_features=cand, target_features=cand[dup], **hp)
    assert bool(keep[dup].all()) and 6 <= int(keep.sum()) < 20
    assert int(keep[20:].sum()) <= 2
    assert torch.equal(keep, tarot(ratio=0.1, chunk_features=cand, target_features=cand[dup], **hp))
    with pytest.raises(ValueError, match="folds"):
        tarot(ratio=0.5, chunk_features=cand, target_features=cand[dup], **{**hp, "folds": 7})


def test_validate():
    for bad in ({"mode": "greedy"}, {"ridge": 0.0}, {"folds": 0}):
        with pytest.raises(ValueError):
            SPEC.hparams(bad)
