"""Card L4: PreSelect predictive strength and selection (methods/preselect.py)."""
import numpy as np
import pytest
import torch

from lossbench import methods
from lossbench.methods.preselect import SPEC, predictive_strength, preselect

M, D = 6, 40


def _consistent(seed=0):
    """Scores of M checkpoints and losses [D, M] that fall strictly as the score rises, per chunk."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(M, generator=g)
    rank = torch.argsort(torch.argsort(scores)).double()  # 0 = worst checkpoint
    losses = 5 - rank[None, :] * (0.1 + torch.rand(D, 1, generator=g, dtype=torch.float64)) + torch.rand(D, 1, generator=g)
    return losses, scores


def test_registered_reference_and_needs():
    assert methods.get("preselect") is SPEC and SPEC.kind == "selection"
    assert SPEC.needs == ("ref_losses", "ref_scores", "seed") and SPEC.defaults == {}
    kwargs, expected = SPEC.reference()
    assert torch.equal(SPEC.fn(**kwargs), expected)
    s = predictive_strength(kwargs["ref_losses"], kwargs["ref_scores"])
    assert torch.allclose(s, torch.tensor([1.0, 0.0, 1 / 3, 5 / 6], dtype=torch.float64))


def test_rank_consistent_is_one_and_reversed_is_zero():
    losses, scores = _consistent()
    assert torch.all(predictive_strength(losses, scores) == 1.0)
    assert torch.all(predictive_strength(-losses, scores) == 0.0)
    assert torch.all(predictive_strength(losses, -scores) == 0.0)


def test_reversal_maps_s_to_one_minus_s_and_s_lies_in_unit_interval():
    g = torch.Generator().manual_seed(1)
    losses = torch.randint(0, 4, (D, M), generator=g).double()  # many tied losses
    scores = torch.rand(M, generator=g)
    s = predictive_strength(losses, scores)
    assert torch.all((s >= 0) & (s <= 1))
    assert torch.allclose(predictive_strength(-losses, scores), 1 - s)


def test_invariant_to_monotone_transforms_of_the_losses():
    g = torch.Generator().manual_seed(2)
    losses, scores = torch.rand(D, M, generator=g) * 3 + 0.5, torch.rand(M, generator=g)
    s = predictive_strength(losses, scores)
    keep = preselect(ratio=0.3, ref_losses=losses, ref_scores=scores, seed=0)
    for f in (torch.exp, torch.log, lambda x: 3 * x + 2, lambda x: x**3, lambda x: x / np.log(2)):
        assert torch.equal(predictive_strength(f(losses), scores), s)
        assert torch.equal(preselect(ratio=0.3, ref_losses=f(losses), ref_scores=scores, seed=0), keep)


def test_tied_scores_are_left_out_and_all_tied_raise():
    # Scores [1, 1, 2]: the pair of equal checkpoints carries no order; losses [3, 1, 2] agree on (0, 2)
    # only (checkpoint 2 beats 0 with a lower loss, but not 1): S = 1/2.
    s = predictive_strength(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([1.0, 1.0, 2.0]))
    assert s.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="equal"):
        predictive_strength(torch.rand(3, 4), torch.ones(4))


def test_selection_is_top_s_deterministic_and_breaks_ties_by_seed():
    g = torch.Generator().manual_seed(3)
    losses, scores = torch.randint(0, 3, (D, M), generator=g).float(), torch.arange(M).float()
    s = predictive_strength(losses, scores)
    # A budget k whose cut falls inside a tie: the k-th and (k+1)-th highest S are equal.
    top = s.sort(descending=True).values
    k = next(k for k in range(2, D) if top[k - 1] == top[k] and top[0] > top[k])
    ratio = k / D
    keep = preselect(ratio=ratio, ref_losses=losses.numpy(), ref_scores=scores.numpy(), seed=5)
    assert keep.dtype == torch.bool and int(keep.sum()) == k
    assert torch.equal(keep, preselect(ratio=ratio, ref_losses=losses, ref_scores=scores, seed=5))
    assert s[keep].min() >= s[~keep].max()  # the kept set is a top set
    cut = s[keep].min()
    picks = {tuple(preselect(ratio=ratio, ref_losses=losses, ref_scores=scores, seed=j).tolist()) for j in range(8)}
    assert len(picks) > 1  # the seed resolves the tie at the cut, and only inside it
    for p in picks:
        assert torch.equal(torch.tensor(p) & (s > cut), s > cut) and int(torch.tensor(p).sum()) == k
