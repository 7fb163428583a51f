"""Retrieval metrics of an embedding on classes never seen in training (the open-world protocol of
the classification track; docs/tracks.md), identical for every method.

Every query is also a reference (leave-one-out: a query never retrieves itself) and neighbours are
ranked by cosine similarity, ties broken by the lower index. For query q with label y_q, let R_q be
the number of *other* references with label y_q (queries with R_q = 0 are left out) and rel_q(i) = 1
when its i-th neighbour has label y_q:

- Recall@K: the fraction of queries with rel_q(i) = 1 for some i ≤ K (K in RECALL_AT), the deep
  metric learning convention (Recall@1 = precision at 1);
- R-precision: mean_q (1/R_q) Σ_{i≤R_q} rel_q(i);
- MAP@R (Musgrave et al. 2020, "A Metric Learning Reality Check", arXiv:2003.08505, Sec. 3.2):
  mean_q (1/R_q) Σ_{i≤R_q} P_q(i)·rel_q(i), with P_q(i) the precision among the first i neighbours;
- OPIS (operating-point-inconsistency score; Zhang et al. 2023, "Threshold-Consistent Margin Loss
  for Open-World Deep Metric Learning", arXiv:2307.04047), as implemented here: every ordered pair
  (i, j), i ≠ j, is accepted as "same class" when its cosine distance 1 − cos(e_i, e_j) is ≤ d. The
  utility of a set of pairs at threshold d is their F1 score, 2TP/(2TP + FP + FN). U_c(d) is the
  utility of the pairs whose first element is of class c, U(d) that of all pairs, and
      OPIS = (1/C) Σ_c (1/(d_max − d_min)) ∫_{d_min}^{d_max} (U_c(d) − U(d))² dd,
  the integral a mean over OPIS_GRID equally spaced thresholds. The calibration range [d_min, d_max]
  is where the pooled false-accept rate (accepted different-class pairs over all of them) runs from
  OPIS_FAR[0] to OPIS_FAR[1]: the quantiles of the different-class distances at those levels. The
  paper leaves the utility and the range to the user; F1, equal class weights and this FAR range are
  lossbench's choices. OPIS is 0 when every class has the pooled utility curve (a perfectly
  threshold-consistent embedding); lower is better.
"""
from __future__ import annotations

import numpy as np
import torch

RECALL_AT = (1, 2, 4, 8)
OPIS_FAR = (1e-3, 1e-1)  # pooled false-accept rates bounding the calibration range
OPIS_GRID = 101  # thresholds over the calibration range
METRIC_NAMES = tuple(f"recall_at_{k}" for k in RECALL_AT) + ("r_precision", "map_at_r", "opis")


def cosine_similarity(emb: np.ndarray) -> np.ndarray:
    """[N, N] cosine similarities in float64; a zero embedding has similarity 0 to everything."""
    e = np.asarray(emb, dtype=np.float64)
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    e = e / np.where(norm > 0, norm, 1.0)
    return e @ e.T


def ranked_relevance(emb: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[N, N − 1] bool: rel_q(i), query q's i-th nearest other reference shares its label."""
    sim = cosine_similarity(emb)
    np.fill_diagonal(sim, -np.inf)  # the query itself ranks last, then is dropped
    order = np.argsort(-sim, axis=1, kind="stable")[:, :-1]
    return y[order] == y[:, None]


def recall_at_1(emb: np.ndarray, y: np.ndarray) -> float:
    """Recall@1 alone (the validation metric of an open-world run): `recall_at_1_t`, whose argmax
    needs no full ranking."""
    return recall_at_1_t(torch.as_tensor(np.asarray(emb)), torch.as_tensor(np.asarray(y)))


def precision_within_r(rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R-precision, MAP@R) of each query, from rows of `ranked_relevance` with R_q > 0."""
    r = rel.sum(1)
    first_r = rel & (np.arange(rel.shape[1])[None, :] < r[:, None])
    precision_at_i = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    return first_r.sum(1) / r, (precision_at_i * first_r).sum(1) / r


def retrieval_metrics(emb: np.ndarray, y: np.ndarray, prefix: str = "test") -> dict:
    """Recall@K, R-precision, MAP@R and OPIS (module docstring) of embeddings `emb` [N, D] with
    labels `y` [N], as {"<prefix>/<name>": value}."""
    y = np.asarray(y)
    rel = ranked_relevance(emb, y)
    rel = rel[rel.any(1)]  # queries with R_q = 0 have nothing to retrieve
    r_precision, map_at_r = precision_within_r(rel)
    out = {f"recall_at_{k}": rel[:, :k].any(1).mean() for k in RECALL_AT}
    out.update(r_precision=r_precision.mean(), map_at_r=map_at_r.mean(), opis=opis(emb, y))
    return {f"{prefix}/{name}": float(v) for name, v in out.items()}


def opis(emb: np.ndarray, y: np.ndarray) -> float:
    """OPIS with F1 utility over the FAR-bounded calibration range (module docstring)."""
    dist = 1.0 - cosine_similarity(emb)
    same = y[:, None] == y[None, :]
    off_diag = ~np.eye(len(y), dtype=bool)
    neg_dist = np.sort(dist[~same])
    if len(neg_dist) == 0:
        return float("nan")
    d_min, d_max = np.quantile(neg_dist, OPIS_FAR)
    grid = np.linspace(d_min, d_max, OPIS_GRID)

    def f1(rows) -> np.ndarray:  # F1 at every grid threshold of the ordered pairs starting in `rows`
        pos = np.sort(dist[rows][(same & off_diag)[rows]])
        neg = np.sort(dist[rows][~same[rows]])
        tp = np.searchsorted(pos, grid, side="right")
        fp = np.searchsorted(neg, grid, side="right")
        fn = len(pos) - tp
        return 2 * tp / np.maximum(2 * tp + fp + fn, 1)

    pooled = f1(np.ones(len(y), dtype=bool))
    return float(np.mean([np.mean((f1(y == c) - pooled) ** 2) for c in np.unique(y)]))


def recall_at_1_t(emb: torch.Tensor, y: torch.Tensor) -> float:
    """Recall@1 (leave-one-out, cosine) on the device: the validation curve of an open-world run.
    Ties go to the lower index, as in `ranked_relevance`."""
    e = torch.nn.functional.normalize(emb.double(), dim=1)
    sim = e @ e.T
    sim.fill_diagonal_(-torch.inf)
    nearest = sim.argmax(1)  # the first maximum: the lower index on ties
    has_other = torch.bincount(y)[y] > 1
    return float((y[nearest] == y)[has_other].double().mean())  # float64, as the numpy metrics
