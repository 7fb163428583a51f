"""Final linear layer + cross-entropy, several ways (lossbench/kernels/registry.py).

Every function takes hidden E [N, D], the LM head's weight C [V, D] and labels y [N] (IGNORE_INDEX =
not a target) and returns the float32 CE of the logits E·Cᵀ: the mean over targets
(reduction="mean") or per token with 0 at ignored tokens (reduction="none", the path per-token
weights such as DLSR's and PRIOR's multiply). All are differentiable wrt E and C.

- `ce_eager` (K4a): materialised logits in the inputs' dtype, upcast, `F.cross_entropy`;
  `ce_compiled` is the same function under `torch.compile` (fuses the upcast and log-softmax).
- `lce_chunked` (K4b-ii): the LM track's loss layer (`lm_loss.token_losses`, impl "chunked"):
  token chunks, each checkpointed, so at most one chunk's logits is alive; `lce_chunked_compiled`
  compiles the per-chunk function.
- `cce_*` (K1): Cut Cross-Entropy; "cce" and "cce_exact" are its Triton kernels (CUDA, Ampere+),
  "cce_torch_compile" its portable materialising fallback.
- `liger_flce` (K4c): Liger-Kernel's fused linear cross-entropy (Triton, CUDA).
The first call of a compiled variant per shape compiles (seconds to minutes on CPU).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from lossbench.lm_loss import IGNORE_INDEX, token_losses

CHUNK_SIZE = 4096  # the card's larger chunk; tests also run smaller ones
REDUCTIONS = ("mean", "none")


def _check(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"linear CE: reduction {reduction!r} not in {REDUCTIONS}")


def ce_eager(hidden, weight, labels, reduction: str = "mean"):
    _check(reduction)
    logits = (hidden @ weight.T).float()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction=reduction)


@functools.cache
def _compiled_eager():
    return torch.compile(ce_eager)


def ce_compiled(hidden, weight, labels, reduction: str = "mean"):
    return _compiled_eager()(hidden, weight, labels, reduction)


def lce_chunked(hidden, weight, labels, reduction: str = "mean", chunk_size: int = CHUNK_SIZE,
                compile: bool = False):
    _check(reduction)
    # upcast="logits": multiply in the inputs' dtype like the other implementations, not in float32.
    ce, _ = token_losses(hidden[None], weight, labels[None], impl="chunked", chunk_size=chunk_size,
                         upcast="logits", compile=compile)
    ce = ce[0]
    if reduction == "none":
        return ce
    return ce.sum() / (labels != IGNORE_INDEX).sum()  # 0/0 = NaN when all are ignored, as F.cross_entropy


def lce_chunked_compiled(hidden, weight, labels, reduction: str = "mean", chunk_size: int = CHUNK_SIZE):
    return lce_chunked(hidden, weight, labels, reduction, chunk_size, compile=True)


def _cce(hidden, weight, labels, reduction, impl, **options):
    _check(reduction)
    from cut_cross_entropy import linear_cross_entropy

    loss = linear_cross_entropy(hidden, weight, labels, ignore_index=IGNORE_INDEX, reduction=reduction,
                                impl=impl, **options)
    return loss.float()


def cce(hidden, weight, labels, reduction: str = "mean"):
    """CCE's Triton kernels with its default gradient filtering (skips blocks where softmax < eps)."""
    return _cce(hidden, weight, labels, reduction, "cce")


def cce_exact(hidden, weight, labels, reduction: str = "mean"):
    """CCE's Triton kernels without filtering (filter_eps=None): the card's `cce_exact`."""
    return _cce(hidden, weight, labels, reduction, "cce", filter_eps=None)


def cce_torch_compile(hidden, weight, labels, reduction: str = "mean"):
    """CCE's `torch_compile` impl: materialised logits under torch.compile; runs on CPU too."""
    return _cce(hidden, weight, labels, reduction, "torch_compile")


@functools.cache
def _liger_loss(reduction):
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction=reduction)


def liger_flce(hidden, weight, labels, reduction: str = "mean"):
    """With reduction="mean" Liger computes the gradients in the forward (so a forward-only time
    includes them); with "none" it defers them to the backward, recomputing the chunks."""
    _check(reduction)
    return _liger_loss(reduction)(weight, hidden, labels).float()  # Liger takes the weight first
