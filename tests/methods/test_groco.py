"""GroCo (supervised): the relaxed odd-even sorting network, the group-ordering loss (small when every
positive is above every negative, larger when the order is violated, gradients that raise positives and
lower negatives), the pairwise closed form, pre-ordering and top-K negatives, stop-grad, and a tiny
open-world run. Against the authors' code (learning_by_sorting/losses/groco.py with diffsort's odd-even
Cauchy network), checked once in float64 to 1e-15 when the method was written (docs/methods/groco.md);
test_matches_diffsort repeats it where diffsort is installed."""
import math

import pytest
import torch

from lossbench.methods.groco import SPEC, group_ordering_loss, groco, groco_from_similarity, odd_even_soft_sort
from tests.methods.test_multi_similarity import _batch

HP = dict(steepness=1.0, topk_neg=10)


@pytest.mark.parametrize("n", [2, 3, 8, 11])
def test_soft_sort_is_doubly_stochastic_and_hardens_into_the_sort(n):
    x = torch.randn(5, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    sorted_x, perm = odd_even_soft_sort(x, 1.0)
    ones = torch.ones(5, n, dtype=torch.float64)
    torch.testing.assert_close(perm.sum(1), ones)
    torch.testing.assert_close(perm.sum(2), ones)
    torch.testing.assert_close(sorted_x, torch.einsum("arc,ar->ac", perm, x))  # P maps inputs to positions
    hard_x, hard = odd_even_soft_sort(x, 1e9)  # a steep comparator is an exact swap: the odd-even sort
    torch.testing.assert_close(hard_x, x.sort(1).values)
    torch.testing.assert_close(hard.argmax(2), x.argsort(1).argsort(1))


@pytest.mark.parametrize("n", [3, 8, 11])
def test_matches_diffsort(n):
    diffsort = pytest.importorskip("diffsort")
    x = torch.randn(4, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    net = diffsort.DiffSortNet("odd_even", n, steepness=2.0, distribution="cauchy")
    net.sorting_network = [[m.double() for m in ms] for ms in net.sorting_network]
    theirs_x, theirs = net(x)
    ours_x, ours = odd_even_soft_sort(x, 2.0)
    torch.testing.assert_close(ours_x, theirs_x)
    torch.testing.assert_close(ours, theirs)


def test_group_loss_equals_its_definition_on_the_full_permutation():
    # the loss propagates 1[c ≥ k] back through the layers instead of forming P; same numbers
    g = torch.Generator().manual_seed(0)
    neg, pos = torch.randn(3, 6, generator=g).sort(1).values, torch.randn(3, 4, generator=g).sort(1).values
    _, perm = odd_even_soft_sort(torch.cat([neg, pos], 1), 1.5)
    q = perm[:, :, 6:].sum(2).clamp(0, 1)
    t = torch.tensor([0.0] * 6 + [1.0] * 4).expand_as(q)
    bce = torch.nn.functional.binary_cross_entropy(q, t, reduction="none").mean(1)
    torch.testing.assert_close(group_ordering_loss(neg, pos, 1.5), bce, rtol=1e-5, atol=1e-6)


def test_one_positive_one_negative_is_the_pairwise_cauchy_relaxation():
    for sp, sn in ((0.8, 0.1), (0.2, 0.6), (0.3, 0.3)):
        loss = group_ordering_loss(torch.tensor([[sn]]), torch.tensor([[sp]]), 3.0)
        assert loss.item() == pytest.approx(-math.log(0.5 + math.atan(3.0 * (sp - sn)) / math.pi), rel=1e-6)


def _sim(y, values):
    """A symmetric similarity matrix with anchor 0's row set to `values` (1 on the diagonal)."""
    sim = torch.eye(len(y))
    sim[0, 1:] = torch.tensor(values)
    return sim + sim.T - torch.diag(sim.diagonal())


def test_small_when_ordered_larger_when_an_order_is_violated():
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    ordered = _sim(y, [0.9, 0.8, 0.1, 0.0, -0.1])  # anchor 0: positives 0.9, 0.8 above negatives 0.1, 0, −0.1
    swapped = _sim(y, [0.9, 0.05, 0.1, 0.0, -0.1])  # one positive below the hardest negative
    for steepness in (1.0, 10.0):
        low = groco_from_similarity(ordered, y, steepness=steepness, topk_neg=10)
        high = groco_from_similarity(swapped, y, steepness=steepness, topk_neg=10)
        assert low < high
    # a steep network and well separated groups: close to zero
    sep = torch.where(y[:, None] == y[None], 0.9, -0.9).fill_diagonal_(1.0)
    assert groco_from_similarity(sep, y, steepness=100.0, topk_neg=10) < 0.01
    # orderings within a group do not matter once the groups are apart (the steep limit)
    within = _sim(y, [0.8, 0.9, -0.1, 0.0, 0.1])
    sep_ord = groco_from_similarity(ordered, y, steepness=1e6, topk_neg=10)
    assert sep_ord == pytest.approx(groco_from_similarity(within, y, steepness=1e6, topk_neg=10).item(), abs=1e-5)


def test_gradient_raises_positives_and_lowers_negatives():
    # monotonic (Cauchy) sorting network: descent never lowers a positive's similarity or raises a negative's
    emb, y = _batch(5, n=24, k=3, spread=1.5)
    sim = torch.nn.functional.normalize(emb, dim=1) @ torch.nn.functional.normalize(emb, dim=1).T
    sim = sim.detach().requires_grad_(True)
    groco_from_similarity(sim, y, steepness=2.0, topk_neg=5).backward()
    same = y[:, None] == y[None]
    off = ~torch.eye(len(y), dtype=torch.bool)
    assert torch.all(sim.grad[same & off] <= 0) and torch.any(sim.grad[same & off] < 0)
    assert torch.all(sim.grad[~same] >= 0) and torch.any(sim.grad[~same] > 0)


def test_only_the_k_hardest_negatives_enter_and_anchors_without_positives_are_skipped():
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    sim = _sim(y, [0.5, 0.7, 0.6, -0.5, 0.2]).requires_grad_(True)
    groco_from_similarity(sim, y, steepness=1.0, topk_neg=2).backward()
    g = sim.grad[0]
    assert g[2] > 0 and g[3] > 0 and g[4] == 0 and g[5] == 0  # 0.7 and 0.6 kept, 0.2 and −0.5 not
    # class 2 (a single example) has no positive: its own row adds no loss
    assert torch.all(sim.grad[5] == 0)
    none = torch.tensor([0, 1, 2, 3])
    s = torch.randn(4, 4).requires_grad_(True)
    loss = groco_from_similarity(s, none, **HP)
    assert loss == 0
    loss.backward()


def test_stop_grad_sends_the_gradient_through_the_anchor_only():
    emb, y = _batch(1, n=12, k=3)
    a, b = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    with_sg, without = groco(a, y, **HP, stop_grad=True), groco(b, y, **HP, stop_grad=False)
    torch.testing.assert_close(with_sg, without)  # the same value
    with_sg.backward()
    without.backward()
    assert not torch.allclose(a.grad, b.grad)


def test_scale_invariant_and_reference():
    emb, y = _batch(4)
    torch.testing.assert_close(groco(emb, y, **HP, stop_grad=True), groco(5.0 * emb, y, **HP, stop_grad=True))
    kw, expected = SPEC.reference()
    torch.testing.assert_close(SPEC.fn(**kw), expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="topk_neg"):
        SPEC.hparams({"topk_neg": 2.5})


def test_an_open_world_run_trains_and_evaluates_end_to_end(tmp_path):
    from tests.harness.test_retrieval import test_an_open_world_run_trains_and_evaluates_end_to_end as run

    run(tmp_path, "groco")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_padded_pass_equals_one_network_per_group(seed):
    """All anchors in one padded network (groco_from_similarity) = one network per (p, k) group, in
    value and gradient: padding on the right and identity comparators change nothing."""
    from lossbench.methods.groco import grouped_groco_from_similarity

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (24,), generator=g)
    y[0] = 9  # an anchor with no positive: skipped by both
    e = torch.nn.functional.normalize(torch.randn(24, 6, generator=g, dtype=torch.float64), dim=1)
    grads = []
    for fn in (groco_from_similarity, grouped_groco_from_similarity):
        sim = (e @ e.T).requires_grad_()
        loss = fn(sim, y, steepness=2.0, topk_neg=5)
        loss.backward()
        grads.append((loss.detach(), sim.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-12)
