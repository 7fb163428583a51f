"""LiPO-λ (card M10): K = 2 is a multiple of DPO, equal labels contribute 0, list order and padding
don't matter, and the lambda weights carry no gradient."""
import math
from itertools import permutations

import pytest
import torch

from lossbench import methods
from lossbench.methods.base import PairBatch
from lossbench.methods.dpo import dpo_loss
from lossbench.methods.lipo import SPEC, lipo_lambda_loss, ranks_by_score

from tests.methods.preference_helpers import close, gen

NAN = float("nan")


def _lists(seed, b=4, k=5):
    g = gen(seed)
    ref = -torch.rand(b, k, generator=g) * 10
    policy = ref + torch.randn(b, k, generator=g)
    scores = torch.randint(0, 4, (b, k), generator=g).float() + torch.rand(b, k, generator=g) * 0.1
    return policy, ref, scores


def _brute_force(policy, ref, scores, beta):
    """Python loops over one list at a time, float64; absent (NaN) items are dropped first."""
    out = []
    for p_row, r_row, psi_row in zip(policy.tolist(), ref.tolist(), scores.tolist()):
        items = [(beta * (p - r), psi) for p, r, psi in zip(p_row, r_row, psi_row) if not math.isnan(psi)]
        # rank by s descending, ties by ψ descending
        order = sorted(range(len(items)), key=lambda i: (-items[i][0], -items[i][1]))
        rank = {i: pos + 1 for pos, i in enumerate(order)}
        total = 0.0
        for i, (s_i, psi_i) in enumerate(items):
            for j, (s_j, psi_j) in enumerate(items):
                if psi_i > psi_j:
                    gain = abs((2 ** psi_i - 1) - (2 ** psi_j - 1))
                    disc = abs(1 / math.log2(1 + rank[i]) - 1 / math.log2(1 + rank[j]))
                    total += gain * disc * math.log1p(math.exp(-(s_i - s_j)))
        out.append(total)
    return torch.tensor(out)


def test_reference_registry_and_default_call():
    assert methods.get("lipo") is SPEC
    assert SPEC.kind == "listwise" and SPEC.needs == () and SPEC.hparams() == {"beta": 0.05}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)
    policy, ref, scores = _lists(0)
    out = SPEC.fn(policy, ref, scores, **SPEC.hparams())
    assert out.shape == (4,) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("beta", [0.05, 1.0])
def test_matches_brute_force(beta):
    policy, ref, scores = _lists(1, b=6, k=6)
    scores[0, 1] = scores[0, 4]  # a tie in ψ
    scores[1] -= 2.0  # negative labels: negative gains still give |G_i − G_j|
    close(lipo_lambda_loss(policy, ref, scores, beta=beta), _brute_force(policy, ref, scores, beta))


@pytest.mark.parametrize("delta", [(1.0, -0.5), (-2.0, 0.5), (0.0, 0.0)])
def test_two_items_is_a_multiple_of_dpo(delta):
    beta, psi = 0.1, (2.0, 0.5)
    ref = torch.tensor([[-5.0, -7.0]])
    policy = ref + torch.tensor([delta])
    out = lipo_lambda_loss(policy, ref, torch.tensor([psi]), beta=beta)
    pair = PairBatch(policy_chosen=policy[:, 0], policy_rejected=policy[:, 1], ref_chosen=ref[:, 0],
                     ref_rejected=ref[:, 1], chosen_len=torch.ones(1), rejected_len=torch.ones(1))
    factor = abs((2 ** psi[0] - 1) - (2 ** psi[1] - 1)) * (1 - 1 / math.log2(3))
    close(out, factor * dpo_loss(pair, beta=beta))
    # the better item may sit in either column
    close(lipo_lambda_loss(policy.flip(-1), ref.flip(-1), torch.tensor([psi[::-1]]), beta=beta), out)


def test_equal_labels_contribute_nothing():
    policy, ref, _ = _lists(2, b=3, k=2)
    policy.requires_grad_(True)
    out = lipo_lambda_loss(policy, ref, torch.tensor([[1.0, 1.0], [0.0, 0.0], [3.0, 3.0]]), beta=0.5)
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    assert torch.count_nonzero(policy.grad) == 0
    # in a longer list, two items with the same label are never compared to each other
    policy, ref, scores = _lists(3, b=1, k=4)
    scores = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    manual = _brute_force(policy, ref, scores, 0.5)
    close(lipo_lambda_loss(policy, ref, scores, beta=0.5), manual)


def test_list_order_does_not_matter():
    policy, ref, scores = _lists(4, b=3, k=4)
    base = lipo_lambda_loss(policy, ref, scores, beta=0.3)
    for perm in permutations(range(4)):
        idx = list(perm)
        close(lipo_lambda_loss(policy[:, idx], ref[:, idx], scores[:, idx], beta=0.3), base)
    # ... also at initialisation, where every score ties and ranks come from ψ
    init = lipo_lambda_loss(ref, ref, scores, beta=0.3)
    for perm in ([3, 1, 0, 2], [1, 0, 3, 2]):
        close(lipo_lambda_loss(ref[:, perm], ref[:, perm], scores[:, perm], beta=0.3), init)


def test_initialisation_uses_the_ideal_ranking():
    scores = torch.tensor([[0.0, 2.0, 1.0]])
    ref = torch.tensor([[-3.0, -1.0, -2.0]])
    close(ranks_by_score(torch.zeros(1, 3), scores, torch.ones(1, 3, dtype=torch.bool)),
           torch.tensor([[3.0, 1.0, 2.0]]))
    # every pair term is ℓ(0) = log 2; weights from ideal ranks 1 (ψ=2), 2 (ψ=1), 3 (ψ=0)
    inv = [1.0, 1 / math.log2(3), 0.5]
    gains = [3.0, 1.0, 0.0]
    weight = sum(abs(gains[i] - gains[j]) * abs(inv[i] - inv[j]) for i in range(3) for j in range(i + 1, 3))
    out = lipo_lambda_loss(ref, ref, scores, beta=0.05)
    close(out, torch.tensor([weight * math.log(2.0)]))
    assert out.item() > 0


def test_padded_lists_match_short_lists():
    policy, ref, scores = _lists(5, b=2, k=3)
    short = lipo_lambda_loss(policy, ref, scores, beta=0.2)
    # pad at the end and in the middle, with non-finite policy/ref values in the padded slots
    padded_p = torch.stack([policy[:, 0], torch.full((2,), NAN), policy[:, 1], policy[:, 2],
                            torch.full((2,), float("-inf"))], -1).requires_grad_(True)
    padded_r = torch.stack([ref[:, 0], torch.full((2,), float("inf")), ref[:, 1], ref[:, 2],
                            torch.zeros(2)], -1)
    padded_s = torch.stack([scores[:, 0], torch.full((2,), NAN), scores[:, 1], scores[:, 2],
                            torch.full((2,), NAN)], -1)
    out = lipo_lambda_loss(padded_p, padded_r, padded_s, beta=0.2)
    close(out, short)
    out.sum().backward()
    assert torch.isfinite(padded_p.grad).all()
    assert torch.count_nonzero(padded_p.grad[:, [1, 4]]) == 0
    # a list with one real item (or none) has no pairs
    lone = torch.tensor([[0.5, NAN, NAN], [NAN, NAN, NAN]])
    close(lipo_lambda_loss(torch.zeros(2, 3), torch.zeros(2, 3), lone, beta=0.2), torch.zeros(2))


def test_weights_are_detached():
    # gradient = Σ Δ_ij ∂ℓ(s_i − s_j) with Δ_ij held fixed at the current ranking
    policy, ref, scores = _lists(6, b=1, k=3)
    policy.requires_grad_(True)
    beta = 0.7
    lipo_lambda_loss(policy, ref, scores, beta=beta).sum().backward()
    s = (beta * (policy - ref)).detach()[0]
    psi = scores[0]
    rank = ranks_by_score(s[None], psi[None], torch.ones(1, 3, dtype=torch.bool))[0]
    inv = 1 / torch.log2(1 + rank)
    grad = torch.zeros(3)
    for i in range(3):
        for j in range(3):
            if psi[i] > psi[j]:
                w = abs((2 ** psi[i]) - (2 ** psi[j])) * abs(inv[i] - inv[j])
                d = -torch.sigmoid(-(s[i] - s[j])) * w * beta  # ∂/∂Δ_i of w·ℓ(s_i − s_j)
                grad[i] += d
                grad[j] -= d
    close(policy.grad[0], grad)


def test_bf16_inputs_compute_in_float32():
    policy, ref, scores = _lists(7)
    out = lipo_lambda_loss(policy.bfloat16(), ref.bfloat16(), scores.bfloat16(), beta=0.05)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_validate_rejects_bad_beta():
    for bad in (0.0, -0.05):
        with pytest.raises(ValueError):
            SPEC.hparams({"beta": bad})
