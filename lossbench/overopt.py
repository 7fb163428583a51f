"""Reward-model overoptimisation under best-of-n, and the ensemble objectives against it (Coste,
Anwar, Kirk, Krueger, "Reward Model Ensembles Help Mitigate Overoptimization", ICLR 2024).

Best-of-n (BoN) draws n responses from π_ref and keeps the one a proxy objective scores highest.
Pushing n up optimises the proxy harder; when the proxy is a learnt reward model its score keeps
rising while the gold reward it stands for can peak and fall: overoptimisation. The ensemble
objectives score a response by M proxy reward models at once:

    single   R_1 (one member: the usual setup)
    mean     (1/M) Σ_i R_i
    wco      min_i R_i                                  (worst-case optimisation)
    uwo      (1/M) Σ_i R_i − λ · Var_i R_i              (uncertainty-weighted; population variance)

Each member's scores are first standardised on the reference samples (zero mean, unit variance),
so members on different scales neither dominate the minimum nor inflate the variance.

The x axis is the BoN policy's KL from π_ref, log n − (n − 1)/n nats (exact for a continuous
score without ties; Stiennon et al. 2020), drawn as √KL as in the literature. The expected gold and
proxy reward of BoN at every n ≤ N come from one set of N samples per prompt with the unbiased
estimator over all n-subsets: sort the N samples by the objective; the one of rank i (1 = lowest)
is the best of a uniformly drawn n-subset with probability C(i − 1, n − 1) / C(N, n).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

OBJECTIVES = ("single", "mean", "wco", "uwo")


def bon_kl(n) -> np.ndarray:
    """KL(π_BoN ‖ π_ref) in nats of best-of-n: log n − (n − 1)/n (0 at n = 1)."""
    n = np.asarray(n, dtype=float)
    return np.log(n) - (n - 1) / n


def standardise(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each member's scores (axis 0: members) shifted and scaled by its mean and std on `reference`
    (the same members' scores of reference samples, [M, ...])."""
    m = reference.reshape(len(reference), -1)
    mu, sd = m.mean(1), m.std(1)
    shape = (len(scores),) + (1,) * (scores.ndim - 1)
    return (scores - mu.reshape(shape)) / np.where(sd > 0, sd, 1.0).reshape(shape)


def objective(scores: np.ndarray, kind: str, lam: float = 0.0) -> np.ndarray:
    """The ensemble objective of standardised member scores [M, ...] -> [...]."""
    if kind == "single":
        return scores[0]
    if kind == "mean":
        return scores.mean(0)
    if kind == "wco":
        return scores.min(0)
    if kind == "uwo":
        return scores.mean(0) - lam * scores.var(0)
    raise ValueError(f"unknown ensemble objective {kind!r}; valid: {list(OBJECTIVES)}")


def bon_weights(N: int, n: int) -> np.ndarray:
    """[N] probability that the sample of ascending rank i (0-based) is the maximum of a uniformly
    drawn n-subset of N: C(i, n − 1) / C(N, n), zero below rank n − 1; sums to 1."""
    if not 1 <= n <= N:
        raise ValueError(f"best-of-{n} needs 1 <= n <= N = {N} samples")
    i = np.arange(N)
    with np.errstate(invalid="ignore"):
        log_w = (_log_comb(i, n - 1) - _log_comb(np.array(N), n))
    return np.where(i >= n - 1, np.exp(log_w), 0.0)


def _log_comb(a, b) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)


def bon_expectation(key: np.ndarray, values: dict, ns) -> dict:
    """Unbiased BoN expectations: for each n in `ns`, the mean over prompts of each value (name ->
    [P, N] array) at the sample a random n-subset's maximum of `key` ([P, N]) picks. Ties in the key
    are broken by sample order (stable sort), as any fixed rule would."""
    order = np.argsort(key, axis=1, kind="stable")
    sorted_vals = {k: np.take_along_axis(v, order, axis=1) for k, v in values.items()}
    N, out = key.shape[1], {}
    for n in ns:
        w = bon_weights(N, n)
        out[n] = {k: float((v @ w).mean()) for k, v in sorted_vals.items()}
    return out


def bon_ns(N: int) -> list[int]:
    """The n of the curve: powers of two up to N, and N itself."""
    ns = [2 ** k for k in range(int(math.log2(N)) + 1)]
    return ns + ([N] if ns[-1] != N else [])


def curves(member_scores: np.ndarray, reference_scores: np.ndarray, gold: np.ndarray, lam: float,
           objectives=OBJECTIVES) -> list[dict]:
    """Rows (objective, n, kl, sqrt_kl, gold, proxy) of the BoN curves of N samples per prompt:
    member_scores [M, P, N] (raw scores of the samples), reference_scores [M, R] (raw scores of
    reference samples, for standardising), gold [P, N]. `proxy` is the objective's own value, the
    reward the selection optimises."""
    z = standardise(member_scores, reference_scores)
    ns, rows = bon_ns(gold.shape[1]), []
    for kind in objectives:
        key = objective(z, kind, lam)
        for n, est in bon_expectation(key, {"gold": gold, "proxy": key}, ns).items():
            kl = float(bon_kl(n))
            rows.append({"objective": kind, "n": n, "kl": kl, "sqrt_kl": math.sqrt(kl), **est})
    return rows
