"""What the embedding losses (kind `embedding`: contrastive, triplet, multi_similarity) share: unit
embeddings, pair masks and distances within a batch, and the mean over non-zero terms that
pytorch-metric-learning's AvgNonZeroReducer takes (the reduction of its contrastive and triplet
losses, which tests/methods/ compares against)."""
import torch
import torch.nn.functional as F


def cosine_similarity(embeddings):
    """[B, B] cosine similarities S_ij of the L2-normalised embeddings, in float32."""
    e = F.normalize(embeddings.float(), dim=1)
    return e @ e.T


def distances(embeddings):
    """[B, B] Euclidean distances of the L2-normalised embeddings (in [0, 2]), in float32."""
    e = F.normalize(embeddings.float(), dim=1)
    return torch.cdist(e, e)


def pair_masks(targets):
    """(positive, negative) [B, B] bool: pairs (i, j), i ≠ j, of the same / a different label."""
    same = targets[:, None] == targets[None, :]
    return same & ~torch.eye(len(targets), dtype=torch.bool, device=targets.device), ~same


def mean_nonzero(losses):
    """Mean of the positive entries of non-negative `losses` (0, with a zero gradient, if none)."""
    return losses.sum() / (losses > 0).sum().clamp_min(1)


def off_diagonal_log_softmax(logits):
    """[B, B] log-softmax of each row of `logits` over the other examples j ≠ i (the diagonal is −inf):
    log(exp(l_ij) / Σ_{a ≠ i} exp(l_ia)), SupCon's A(i). In float32."""
    logits = logits.float()
    eye = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    return torch.log_softmax(logits.masked_fill(eye, -torch.inf), dim=1)


def mean_over_positives(values, targets):
    """(per-anchor mean of `values` [B, B] over its positives P(i) [B], has-a-positive mask [B]); the mean
    is 0 for an anchor without a positive (its entries of `values` are never read, so −inf is safe)."""
    pos, _ = pair_masks(targets)
    count = pos.sum(1)
    total = torch.where(pos, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(1)
    return total / count.clamp_min(1), count > 0


def unit_circle_batch(degrees, labels) -> dict:
    """A batch small enough to work by hand: unit vectors at `degrees` on the circle, with `labels`
    (the embedding methods' worked reference values are computed on it)."""
    angles = torch.tensor(degrees).deg2rad()
    return {"embeddings": torch.stack([angles.cos(), angles.sin()], 1), "targets": torch.tensor(labels)}
