"""The random-selection baseline (methods/random_select.py) and the shared selection helpers."""
import numpy as np
import pytest
import torch

from lossbench import methods
from lossbench.methods.random_select import SPEC, random_select
from lossbench.methods.selection import budget, keep_top


def test_registered_reference_and_needs():
    assert methods.get("random_select") is SPEC and SPEC.kind == "selection"
    assert SPEC.needs == ("num_chunks", "seed") and SPEC.defaults == {}
    kwargs, expected = SPEC.reference()
    assert torch.equal(SPEC.fn(**kwargs), expected)


def test_size_determinism_and_seed_dependence():
    keep = random_select(ratio=0.3, num_chunks=50, seed=7)
    assert keep.dtype == torch.bool and keep.shape == (50,) and int(keep.sum()) == 15
    assert torch.equal(keep, random_select(ratio=0.3, num_chunks=np.int64(50), seed=np.int64(7)))
    assert not torch.equal(keep, random_select(ratio=0.3, num_chunks=50, seed=8))


def test_every_chunk_is_equally_likely():
    # Inclusion frequency over 2000 seeds: each chunk within 4.5σ of the ratio (binomial).
    n, ratio, reps = 20, 0.25, 2000
    freq = torch.stack([random_select(ratio=ratio, num_chunks=n, seed=s) for s in range(reps)]).float().mean(0)
    sigma = (ratio * (1 - ratio) / reps) ** 0.5
    assert torch.all((freq - ratio).abs() < 4.5 * sigma), freq


def test_budget_rounds_and_clamps():
    assert budget(0.29, 100) == 29  # int(0.29 * 100) would be 28
    assert budget(0.5, 7) == 4 and budget(0.01, 10) == 1 and budget(1.0, 10) == 10
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            budget(bad, 10)
    with pytest.raises(ValueError, match="empty"):
        budget(0.5, 0)


def test_keep_top_breaks_ties_by_index_or_given_order():
    scores = torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0])
    assert keep_top(scores, 0.4).tolist() == [False, True, True, False, False]  # 2 of the three 3.0s: lowest indices
    # With a tie-break order that ranks index 4 first, it wins the tie.
    assert keep_top(scores, 0.4, tiebreak=torch.tensor([4, 3, 2, 1, 0])).tolist() == [False, False, True, False, True]
    assert keep_top(np.array([0.1, 0.9, 0.5]), 0.34).tolist() == [False, True, False]
