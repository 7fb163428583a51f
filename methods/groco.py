"""GroCo: Group Ordering Constraints, supervised on the batch's labels. Shvetsova, Petersen, Kukleva,
Schiele & Kuehne, "Learning by Sorting: Self-supervised Learning with Group Ordering Constraints",
ICCV 2023, arXiv:2301.02009; the differentiable sorting network is Petersen et al.'s (ICML 2021,
arXiv:2105.04019, relaxed odd-even network) with the Cauchy relaxation that makes it monotonic
(Petersen et al., ICLR 2022, arXiv:2203.09630).

docs/methods/groco.md. With S_ij the cosine similarity of the L2-normalised embeddings, for each anchor i
that has a positive (same label, j ≠ i) and a negative in the batch:

  pre-ordering  x = (the k = min(K, |N_i|) largest S_ij over negatives, ascending,
                     then all p = |P_i| positives' S_ij, ascending)           (n = k + p values);
                the ground-truth order puts the k negatives at the bottom, the p positives on top;
  soft sort     n layers of the odd-even network; layer l compares the wires (w, w+1), w ≡ l (mod 2),
                with α = 1/2 + arctan(γ·(x_{w+1} − x_w))/π (the Cauchy CDF, steepness γ):
                x_w ← α x_w + (1−α) x_{w+1} (soft min), x_{w+1} ← (1−α) x_w + α x_{w+1} (soft max), and the
                same mixing of columns w, w+1 of the soft permutation P (from the identity; P_rc: the
                weight of input r at sorted position c, ascending; rows and columns sum to 1);
  group loss    q⁺_r = Σ_{c ≥ k} P_rc (input r lands among the top p: the positives' ranks),
                q⁻_r = Σ_{c < k} P_rc, t_r = 1[r is a positive],
                ℓ_i = (1/n) Σ_r ½ [BCE(q⁺_r, t_r) + BCE(q⁻_r, 1 − t_r)];
  loss          L = mean of ℓ_i over the anchors that have a positive and a negative (0 if none).

The loss only asks that every positive be ranked above every negative (orderings within a group are
free); its gradient concentrates on the strongest negatives and the weakest positives, which meet at
the group boundary. With one positive and one negative, ℓ = −log(1/2 + arctan(γ(s⁺ − s⁻))/π): a pairwise
relaxation of "the positive above the negative". Defaults are the authors' (configs/*.yaml and
learning_by_sorting/losses/groco.py): K = 10 hardest negatives, γ = 1, stop_grad (the similarities'
second argument detached: each embedding gets its gradient as an anchor).

The supervised variant is a reconstruction: the paper's positives are the other augmented views of the
anchor's image (a fixed count per anchor, one network size); here they are the anchor's classmates in the
batch, so the count varies per anchor: each anchor runs its own network size (all of them in one padded
pass, equal to one network per (p, k) group: test_groco.py), and ℓ_i is averaged per anchor (the authors'
BCE mean over the n entries of every anchor, the same when n is fixed).
"""
import math

import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_positive
from lossbench.methods.pairs import pair_masks, unit_circle_batch


def _layers(n: int):
    """The odd-even network's layers: (first wire, number of comparators); layer l compares (w, w+1), w ≡ l
    (mod 2)."""
    return [(layer % 2, (n - layer % 2) // 2) for layer in range(n) if (n - layer % 2) // 2 > 0]


def _mix(v, start: int, m: int, alpha):
    """One layer's comparators on the last axis of v [..., n] (alpha [..., m], broadcast over v's middle
    axes): wire w ← α v_w + (1−α) v_{w+1}, wire w+1 ← (1−α) v_w + α v_{w+1}."""
    pairs = v[..., start:start + 2 * m].unflatten(-1, (m, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    mixed = torch.stack([alpha * a + (1 - alpha) * b, (1 - alpha) * a + alpha * b], -1).flatten(-2)
    return torch.cat([v[..., :start], mixed, v[..., start + 2 * m:]], -1)


def _soft_sort(x, steepness: float, sizes=None):
    """Soft-sorted values [A, n] and each layer's comparator weights α (Cauchy CDF). `sizes` [A]: row a
    holds n_a ≤ n real wires followed by padding, and runs its own n_a-layer network on them: a
    comparator (w, w+1) of layer l acts on row a only if w + 1 < n_a and l < n_a, otherwise α = 1,
    which leaves both wires exactly as they are. The rows' own networks are then one padded network,
    so anchors of every size run in one pass (the parity of a wire is its position, which padding on
    the right never moves)."""
    alphas = []
    for layer, (start, m) in enumerate(_layers(x.shape[1])):
        pairs = x[:, start:start + 2 * m].unflatten(1, (m, 2))
        alpha = torch.atan(steepness * (pairs[..., 1] - pairs[..., 0])) / math.pi + 0.5
        if sizes is not None:
            high = start + 2 * torch.arange(m, device=x.device) + 1  # each comparator's upper wire
            alpha = torch.where((high < sizes[:, None]) & (layer < sizes[:, None]), alpha, torch.ones_like(alpha))
        x = _mix(x, start, m, alpha)
        alphas.append(alpha)
    return x, alphas


def odd_even_soft_sort(x, steepness: float):
    """Relaxed odd-even sorting network (ascending) of the rows of x [A, n], Cauchy comparators:
    (soft-sorted values [A, n], soft permutation P [A, n, n], P[a, r, c] = weight of input r at position c;
    each layer mixes two columns of P as it mixes two wires)."""
    n = x.shape[1]
    sorted_x, alphas = _soft_sort(x, steepness)
    perm = torch.eye(n, dtype=x.dtype, device=x.device).expand(len(x), n, n)
    for (start, m), alpha in zip(_layers(n), alphas):
        perm = _mix(perm, start, m, alpha[:, None, :])
    return sorted_x, perm


def group_ordering_loss(neg, pos, steepness: float):
    """Per-row GroCo loss [A] of pre-ordered negatives [A, k] and positives [A, p] (each ascending)."""
    k, p = neg.shape[1], pos.shape[1]
    x = torch.cat([neg, pos], 1)
    return padded_group_loss(x, torch.cat([x.new_zeros(k), x.new_ones(p)]).expand_as(x), None, steepness)


def padded_group_loss(x, t, sizes, steepness: float):
    """Per-row GroCo loss [A] of rows x [A, n] pre-ordered as (negatives ascending, positives ascending,
    padding), t [A, n] = 1 on the positives; `sizes` [A] the real wires per row (None: all n).

    q⁺ = P·t is computed without forming P: P = M_1 ⋯ M_n (each layer's mixing M_l is symmetric), so
    P·v = M_1(⋯(M_n v)), the layers applied to v in reverse order; q⁻ = P·(1 − t) on the real wires."""
    _, alphas = _soft_sort(x, steepness, sizes)
    q = torch.stack([t, 1 - t])  # q⁺ and q⁻ through the layers together (the same linear maps)
    for (start, m), alpha in reversed(list(zip(_layers(x.shape[1]), alphas))):
        q = _mix(q, start, m, alpha)
    q_pos, q_neg = q.clamp(0, 1).unbind()  # clipped as the authors do (rounding can pass 1)
    bce = (F.binary_cross_entropy(q_pos, t, reduction="none")
           + F.binary_cross_entropy(q_neg, 1 - t, reduction="none")) / 2
    if sizes is None:
        return bce.mean(1)
    real = torch.arange(x.shape[1], device=x.device) < sizes[:, None]
    return (bce * real).sum(1) / sizes


def groco_from_similarity(sim, targets, *, steepness: float, topk_neg: int):
    """The GroCo loss of a [B, B] similarity matrix (row i: anchor i); the module docstring's formula.
    Every anchor runs its own network size n_i = k_i + p_i, all in one padded pass (_soft_sort)."""
    pos, neg = pair_masks(targets)
    n_pos, n_neg = pos.sum(1), neg.sum(1).clamp(max=int(topk_neg))
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return sim.sum() * 0.0
    s, pos, k, p = sim[valid], pos[valid], n_neg[valid], n_pos[valid]
    pos_sorted = torch.where(pos, s, torch.inf).sort(1).values  # ascending, the p_i positives first
    neg_top = torch.where(neg[valid], s, -torch.inf).topk(int(k.max()), 1).values  # descending, k_i real
    sizes = k + p
    c = torch.arange(int(sizes.max()), device=s.device).expand(len(s), -1)
    is_neg, is_pos = c < k[:, None], (c >= k[:, None]) & (c < sizes[:, None])
    # wire c: the (k_i − 1 − c)-th hardest negative (ascending order), then the (c − k_i)-th positive
    x = torch.where(is_neg, neg_top.gather(1, (k[:, None] - 1 - c).clamp(0, neg_top.shape[1] - 1)),
                    torch.where(is_pos, pos_sorted.gather(1, (c - k[:, None]).clamp(0, pos_sorted.shape[1] - 1)),
                                torch.zeros((), dtype=s.dtype, device=s.device)))
    return padded_group_loss(x, is_pos.to(s.dtype), sizes, steepness).mean()


def grouped_groco_from_similarity(sim, targets, *, steepness: float, topk_neg: int):
    """The same loss with one network per (p, k) group of anchors (the direct reading of the formula):
    the test oracle of groco_from_similarity's padded pass."""
    pos, neg = pair_masks(targets)
    n_pos, n_neg = pos.sum(1), neg.sum(1).clamp(max=int(topk_neg))
    valid = (n_pos > 0) & (n_neg > 0)
    per_anchor = []
    for p, k in sorted({(int(a), int(b)) for a, b in zip(n_pos[valid].tolist(), n_neg[valid].tolist())}):
        rows = valid & (n_pos == p) & (n_neg == k)
        s = sim[rows]
        pos_sorted = torch.where(pos[rows], s, torch.inf).sort(1).values[:, :p]
        neg_hardest = torch.where(neg[rows], s, -torch.inf).topk(k, 1).values.flip(1)
        per_anchor.append(group_ordering_loss(neg_hardest, pos_sorted, steepness))
    if not per_anchor:
        return sim.sum() * 0.0
    return torch.cat(per_anchor).mean()


def groco(embeddings, targets, *, steepness: float, topk_neg: int, stop_grad: bool):
    e = F.normalize(embeddings.float(), dim=1)
    sim = e @ (e.detach() if stop_grad else e).T
    return groco_from_similarity(sim, targets, steepness=steepness, topk_neg=topk_neg)


def _validate(hp):
    require_positive("groco", hp, "steepness", "topk_neg")
    if int(hp["topk_neg"]) != hp["topk_neg"]:
        raise ValueError(f"groco: topk_neg must be an integer, got {hp['topk_neg']}")


def _reference():
    # Worked by hand. Unit vectors at 0°, 60° (class 0) and 90° (class 1), γ = 1. Anchors 0 and 1 have one
    # positive and one negative (n = 2: one comparator, ℓ = −log α), anchor 2 no positive (skipped).
    # Anchor 0: s⁺ = S01 = 0.5, s⁻ = S02 = 0: α = 1/2 + arctan(0.5)/π = 0.647584, ℓ = 0.434507.
    # Anchor 1: s⁺ = S10 = 0.5, s⁻ = S12 = cos 30° = 0.866025: α = 1/2 + arctan(−0.366025)/π = 0.388312,
    #   ℓ = 0.945947. L = (0.434507 + 0.945947) / 2 = 0.690227.
    kw = dict(**unit_circle_batch([0.0, 60.0, 90.0], [0, 0, 1]),
              steepness=1.0, topk_neg=10, stop_grad=True)
    return kw, torch.tensor(0.690227)


SPEC = MethodSpec(
    name="groco", kind="embedding", fn=groco, defaults={"steepness": 1.0, "topk_neg": 10, "stop_grad": True},
    search={"steepness": ("choice", 1.0, 2.0, 5.0, 10.0), "topk_neg": ("choice", 5, 10, 20)},
    paper="Shvetsova et al., ICCV 2023, arXiv:2301.02009", url="https://arxiv.org/abs/2301.02009",
    docs="groco", version=1, reference=_reference, validate=_validate,
    summary="every positive ranked above every negative, through a differentiable sorting network "
            "(supervised: classmates are the positives)",
)
