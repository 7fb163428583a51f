"""Helpers shared by the `selection` methods (random_select, preselect, tarot); no spec here.

A selection method maps per-chunk features to a keep mask [D] over the training pool. The trainer
then trains on the kept chunks under the same token budget. Every selection is deterministic: the
budget is rounded, not truncated, and equal scores go to the lower index unless a method passes its
own tie-break order.
"""
import torch


def as_float(x, dtype=torch.float64):
    """A feature from the reference stage (numpy or torch) as a CPU tensor of `dtype`."""
    return torch.as_tensor(x).detach().to("cpu", dtype)


def budget(ratio: float, n: int) -> int:
    """Chunks to keep: round(ratio·n) clamped to [1, n]. Rounding, since int() turns 0.29·100 into 28."""
    if not 0 < ratio <= 1:
        raise ValueError(f"selection: ratio must be in (0, 1], got {ratio}")
    if n < 1:
        raise ValueError("selection: the pool is empty")
    return min(n, max(1, round(ratio * n)))


def keep_top(scores, ratio: float, tiebreak=None):
    """Keep mask [D] of the budget's highest `scores`. Equal scores are ordered by `tiebreak`
    (ascending; default the index), so the mask is a pure function of its inputs."""
    scores = torch.as_tensor(scores)
    order = torch.arange(len(scores)) if tiebreak is None else torch.argsort(torch.as_tensor(tiebreak), stable=True)
    # A stable sort of the tie-break order by score, descending, keeps that order inside each tie.
    order = order[torch.argsort(scores[order], descending=True, stable=True)]
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[order[:budget(ratio, len(scores))]] = True
    return keep
