"""TAROT: targeted data selection via whitened features and optimal transport.

Feng, Nie, Liu, Alahi, "TAROT: Targeted Data Selection via Optimal Transport", arXiv:2412.00420.
docs/methods/tarot.md; steps read in vita-epfl/TAROT@9077819
(tarot/data_selector.py), re-implemented without GeomLoss.

1. Whitened feature distance: centre the stacked [candidates; targets] features X, Σ = XᵀX/n +
   1e−5·I, Cholesky Σ = LLᵀ, X ← X·L^{−ᵀ}, then L2-normalise rows. Score = cosine, candidate ×
   target, in [−1, 1].
2. mode "fixed_size" (the budget is the track's ratio): rank the candidates per target; take rank
   layers 0, 1, … (each target's k-th best candidate) while the union fits the budget. In the layer
   that overflows, the free slots go to its new candidates with the largest Sinkhorn dual potential
   against all targets, as the reference code does (a large potential means costly to transport,
   i.e. far from the target set in OT terms; we keep the code's choice and flag it).
3. mode "otm" (the card's automatic ratio; `ratio` is ignored): targets in `folds` folds; for each
   fold, grow k while the Sinkhorn OT distance from {held-out targets' top-k candidates with score
   > 0} to the other folds' targets decreases; the union over folds is the selection. We keep the
   last k that decreased the distance; the reference code keeps the first k that did not (one rank
   layer more).
Sinkhorn follows the code's GeomLoss settings: cost √|2 − 2cos| (the Euclidean distance of unit
vectors), blur 0.01 (ε = blur² as GeomLoss's default p = 2), ε-scaling 0.5, no debiasing, value
⟨a, f⟩ + ⟨b, g⟩. Unlike GeomLoss (one symmetric update per ε) we start ε at the largest cost and
alternate f and g at each ε until the marginals match, so values and potentials are converged.
"""
import math

import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_choice, require_positive
from lossbench.methods.selection import as_float, budget

MODES = ("fixed_size", "otm")


def whiten(x, ridge: float = 1e-5):
    """Rows of x [n, F] centred and multiplied by L^{−ᵀ}, where LLᵀ = XᵀX/n + ridge·I (covariance ≈ I).

    Float64 whatever the input: gradient features are strongly anisotropic (the reason to whiten),
    and a float32 Cholesky of an ill-conditioned Σ loses the small directions.
    """
    x = x.double()
    x = x - x.mean(dim=0)
    sigma = x.T @ x / len(x) + ridge * torch.eye(x.shape[1], dtype=x.dtype)
    chol = torch.linalg.cholesky(sigma)
    return torch.linalg.solve_triangular(chol, x.T, upper=False).T  # (L⁻¹Xᵀ)ᵀ = X·L^{−ᵀ}


def whitened_cosine(chunk_features, target_features, ridge: float = 1e-5):
    """Cosine scores [D, T] of whitened, row-normalised candidates and targets, and both unit sets (float32)."""
    c, t = as_float(chunk_features), as_float(target_features)
    z = F.normalize(whiten(torch.cat([c, t]), ridge), dim=1).float()  # unit rows: float32 is plenty
    cand, targ = z[:len(c)], z[len(c):]
    return (cand @ targ.T).clamp(-1.0, 1.0), cand, targ


def ot_cost(x, y):
    """√|2 − 2cos| [n, m] between unit rows: their Euclidean distance."""
    return (2 - 2 * (x @ y.T)).abs().sqrt()


def sinkhorn(cost, *, blur: float = 0.01, scaling: float = 0.5, tol: float = 1e-3, max_iter: int = 2000):
    """Entropic OT between uniform weights on the rows and columns of `cost` [n, m], log domain.

    Returns (value ⟨a, f⟩ + ⟨b, g⟩, f [n], g [m]) in float64. ε anneals geometrically by scaling²
    from the largest cost² down to blur² (GeomLoss's ε-scaling with p = 2), warm-starting the
    potentials; at each ε, f and g alternate until every row marginal is within a factor e^tol of
    1/n (the column marginals are exact after each g update), at most `max_iter` times.
    """
    cost = cost.double()
    n, m = cost.shape
    log_a = torch.full((n, 1), -math.log(n), dtype=torch.float64)
    log_b = torch.full((m,), -math.log(m), dtype=torch.float64)
    f, g = torch.zeros(n, 1, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    start, stop = float(cost.max().clamp_min(blur)) ** 2, blur**2
    steps = max(0, math.ceil(math.log(stop / start) / math.log(scaling**2)))
    for eps in [start * scaling ** (2 * k) for k in range(steps)] + [stop]:
        for _ in range(max_iter):
            f = -eps * torch.logsumexp(log_b + (g - cost) / eps, dim=1, keepdim=True)
            g = -eps * torch.logsumexp(log_a + (f - cost) / eps, dim=0)
            # log(row sum of the plan / a_i); the plan is exp(log a_i + log b_j + (f_i + g_j − C_ij)/ε).
            if float(torch.logsumexp(log_b + (f + g - cost) / eps, dim=1).abs().max()) < tol:
                break
    return f.mean() + g.mean(), f.squeeze(1), g


def _ranked(scores, depth: int):
    """[depth, T]: row k holds each target's k-th best candidate (ties to the lower index)."""
    return torch.argsort(scores, dim=0, descending=True, stable=True)[:depth]


def _fixed_size(scores, cand, targ, n_keep: int):
    keep = torch.zeros(len(scores), dtype=torch.bool)
    for layer in _ranked(scores, min(len(scores), n_keep)):  # n_keep layers always hold >= n_keep chunks
        new = torch.unique(layer[~keep[layer]])
        free = n_keep - int(keep.sum())
        if len(new) > free:
            _, potential, _ = sinkhorn(ot_cost(cand[new], targ))
            new = new[torch.argsort(potential, descending=True, stable=True)[:free]]
        keep[new] = True
        if int(keep.sum()) == n_keep:
            break
    return keep


def _otm(scores, cand, targ, folds: int):
    n_targets = scores.shape[1]
    if not 2 <= folds <= n_targets:
        raise ValueError(f"tarot: otm needs 2 <= folds <= number of targets ({n_targets}), got {folds}")
    # Fixed fold assignment (the code's KFold(shuffle=True, random_state=42) plays the same role).
    fold_of = torch.randperm(n_targets, generator=torch.Generator().manual_seed(42)) % folds
    ranked = _ranked(scores, len(scores))
    keep = torch.zeros(len(scores), dtype=torch.bool)
    for fold in range(folds):
        held, rest = fold_of == fold, fold_of != fold
        best, chosen = math.inf, None
        for k in range(1, len(scores) + 1):
            top = ranked[:k, held]
            picked = torch.unique(top[scores[top, torch.nonzero(held).squeeze(1)] > 0])
            if len(picked) == 0:
                continue
            dist = float(sinkhorn(ot_cost(cand[picked], targ[rest]))[0])
            if dist >= best:
                break
            best, chosen = dist, picked
        if chosen is not None:
            keep[chosen] = True
    return keep


def tarot(*, ratio: float, chunk_features, target_features, mode: str, folds: int, ridge: float):
    """Keep mask [D] over candidate chunks for the target set (see the module docstring)."""
    scores, cand, targ = whitened_cosine(chunk_features, target_features, ridge)
    if mode == "otm":
        return _otm(scores, cand, targ, folds)
    return _fixed_size(scores, cand, targ, budget(ratio, len(scores)))


def _validate(hp):
    require_positive("tarot", hp, "ridge", "folds")
    require_choice("tarot", hp, "mode", MODES)


def _reference():
    # Candidates e1, e2, −e1, −e2 (scaled) and targets e1 + ε, e2 + ε' in R². Whitening is a linear
    # map, so target 0 still points closest to candidate 0 and target 1 to candidate 1: rank layer 0
    # = {0, 1} fills the budget round(0.5·4) = 2 exactly, no Sinkhorn needed (by hand).
    kw = dict(ratio=0.5, chunk_features=torch.tensor([[2.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [0.0, -1.0]]),
              target_features=torch.tensor([[1.0, 0.1], [0.1, 1.0]]), mode="fixed_size", folds=5, ridge=1e-5)
    return kw, torch.tensor([True, True, False, False])


SPEC = MethodSpec(
    name="tarot", kind="selection", fn=tarot, defaults={"mode": "fixed_size", "folds": 5, "ridge": 1e-5},
    paper="Feng et al. ICML 2025 (TAROT), arXiv:2412.00420", url="https://arxiv.org/abs/2412.00420", docs="tarot",
    reference=_reference, validate=_validate, needs=("chunk_features", "target_features"),
    summary="TAROT: whitened-feature cosine to a target set, rank layers filled to the budget, OT tie-break",
)
