"""The loss layer of the LM-pretraining track: per-token cross-entropy and log-partition.

docs/methods/README.md, LM-pretraining track. Every LM method's loss goes through `token_losses`,
so DLSR's per-sample means, PRIOR's token weights and the z-loss all read the same float32
numbers; weighting and reduction are the trainer's.

Labels arrive already shifted: `labels[b, t]` is the target of position t, and positions with
`IGNORE_INDEX` get 0 in both outputs. Implementations:

- "torch": materialised float32 logits, `F.cross_entropy(reduction="none")` and `logsumexp`.
- "chunked": the same function over `chunk_size` rows at a time, each chunk checkpointed, so at
  most one chunk's [chunk, V] logits is alive in the forward *and* in the backward. Plain slicing
  without checkpointing would keep every chunk's logits for the backward and save nothing.
- `upcast="inputs"` (default) multiplies float32 copies of hidden and weight; `upcast="logits"`
  multiplies in the inputs' dtype (float32 accumulation on tensor cores) and upcasts the logits,
  as `F.cross_entropy(logits.float())` baselines and CCE do (the kernels track times that).
- `compile=True` runs the per-chunk (or whole) logits-to-loss function under `torch.compile`;
  the first call per shape compiles (seconds to minutes on CPU).
- "cce": Cut Cross-Entropy (`cut_cross_entropy.linear_cross_entropy`, Wijmans et al., ICLR 2025),
  which never materialises the logits. CUDA only; its kernels take the inputs' dtype and
  accumulate in float32 (upcasting bf16 inputs first would cost the memory CCE is there to save).
- "auto": the fastest correct implementation for the device and shape, picked by `resolve_impl`
  from the kernels benchmark's findings (card K1-K2; `lossbench/kernels`).
"""
from __future__ import annotations

import functools
import importlib.util
import inspect

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
IMPLS = ("torch", "chunked", "cce")
CHOICES = (*IMPLS, "auto")
UPCASTS = ("inputs", "logits")
CHUNK_SIZE = 4096  # rows per chunk: 4096 x 50257 float32 logits is 0.8 GB
# "auto" materialises float32 logits up to this size. On CPU the kernels benchmark times eager
# CE at 2-3x the speed of the checkpointed chunks (which recompute each chunk's logits in the
# backward), at ~3x the memory: memory, not speed, is the reason to chunk.
AUTO_MAX_LOGITS_BYTES = 1 << 30
CCE_MIN_CAPABILITY = (8, 0)  # CCE's Triton kernels target Ampere and newer (bf16 tensor cores)


def cce_usable(device: torch.device | str) -> bool:
    """True where impl="cce" can run: a CUDA device of compute capability ≥ 8.0 with the
    cut-cross-entropy package importable."""
    device = torch.device(device)
    return (device.type == "cuda" and torch.cuda.is_available()
            and torch.cuda.get_device_capability(device) >= CCE_MIN_CAPABILITY
            and importlib.util.find_spec("cut_cross_entropy") is not None)


def resolve_impl(impl: str, device: torch.device | str, rows: int, vocab: int,
                 max_logits_bytes: int = AUTO_MAX_LOGITS_BYTES) -> str:
    """The implementation `impl` stands for on `device` with a [rows, vocab] head.

    A named implementation is returned as is. "auto" picks CCE where it runs (the paper's
    claim: faster and without the logits, card K1) and otherwise materialised logits unless
    their float32 copy would exceed `max_logits_bytes`, then the chunked path.
    """
    if impl not in CHOICES:
        raise ValueError(f"token_losses: impl {impl!r} not in {CHOICES}")
    if impl != "auto":
        return impl
    if cce_usable(device):
        return "cce"
    return "chunked" if rows * vocab * 4 > max_logits_bytes else "torch"


def token_losses(hidden, weight, labels, *, impl: str = "torch", bias=None, chunk_size: int = CHUNK_SIZE,
                 upcast: str = "inputs", compile: bool = False, with_lse: bool = True):
    """Per-token CE and log-partition of the linear head `hidden @ weight.T (+ bias)`.

    hidden [B, T, D], weight [V, D], labels [B, T] (shifted; IGNORE_INDEX = not a target),
    bias [V] or None. Returns `(ce, lse)`, both float32 [B, T] and 0 at ignored positions, with
    ce = lse − z_y. Differentiable wrt hidden, weight and bias. `upcast` and `compile` apply to
    "torch" and "chunked" (see the module docstring); "auto" resolves per call (`resolve_impl`).
    `with_lse=False` returns `(ce, None)`: the torch paths then skip a second pass over the
    logits (about a tenth of an LM step), for callers that never read the log-partition.
    """
    impl = resolve_impl(impl, hidden.device, hidden.shape[0] * hidden.shape[1] if hidden.dim() == 3 else 0,
                        weight.shape[0])
    if upcast not in UPCASTS:
        raise ValueError(f"token_losses: upcast {upcast!r} not in {UPCASTS}")
    if hidden.dim() != 3 or labels.shape != hidden.shape[:2] or weight.shape[1] != hidden.shape[2]:
        raise ValueError(f"token_losses: shapes hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}, "
                         f"labels {tuple(labels.shape)} do not fit [B,T,D], [V,D], [B,T]")
    rows, targets = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
    # Autocast would run the head matmul in bf16 whatever we cast to: the loss math is float32.
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        ce_lse = _ce_lse_fn(upcast == "inputs", compile, with_lse)
        if impl == "torch":
            ce, lse = ce_lse(rows, weight, targets, bias)
        elif impl == "chunked":
            if chunk_size < 1:
                raise ValueError(f"token_losses: chunk_size must be >= 1, got {chunk_size}")
            parts = [checkpoint(ce_lse, rows[i:i + chunk_size], weight, targets[i:i + chunk_size], bias,
                                use_reentrant=False)
                     for i in range(0, len(rows), chunk_size)]
            ce = torch.cat([c for c, _ in parts])
            lse = torch.cat([z for _, z in parts]) if with_lse else None
        else:
            ce, lse = _cce(rows, weight, targets, bias)
    if not with_lse:
        return ce.view(labels.shape), None
    lse = torch.where(targets != IGNORE_INDEX, lse, torch.zeros((), device=lse.device))
    return ce.view(labels.shape), lse.view(labels.shape)


@functools.cache
def _ce_lse_fn(upcast_inputs: bool, compiled: bool, with_lse: bool = True):
    """The logits-to-(ce, lse) function for one setting; cached so torch.compile compiles it once."""
    fn = functools.partial(_ce_lse, upcast_inputs=upcast_inputs, with_lse=with_lse)
    return torch.compile(fn) if compiled else fn


def _ce_lse(rows, weight, targets, bias, upcast_inputs=True, with_lse=True):
    """(ce, lse) [n] of rows [n, D] in float32 (float64 inputs stay float64) over materialised logits;
    lse is None without `with_lse`."""
    if upcast_inputs:
        logits = rows.float() @ weight.float().T
    else:
        logits = rows @ weight.T
        logits = logits if logits.dtype == torch.float64 else logits.float()
    if bias is not None:
        logits = logits + bias.to(logits.dtype)
    ce = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="none")
    return ce, torch.logsumexp(logits, dim=-1) if with_lse else None


def _cce(rows, weight, targets, bias):
    if not rows.is_cuda:
        raise RuntimeError(f"token_losses: impl='cce' needs CUDA tensors (got {rows.device}); "
                           f"use impl='chunked' or 'torch' on CPU")
    try:
        from cut_cross_entropy import linear_cross_entropy
    except ImportError as err:
        raise RuntimeError("token_losses: impl='cce' needs the cut-cross-entropy package "
                           "(pip install cut-cross-entropy)") from err
    if bias is not None:
        # Not every release takes a bias (PyPI 25.1.1 does not): fold it in as one more feature.
        rows = torch.cat([rows, rows.new_ones(len(rows), 1)], dim=1)
        weight = torch.cat([weight, bias.to(weight.dtype)[:, None]], dim=1)
    if "return_lse" in inspect.signature(linear_cross_entropy).parameters:
        ce, lse = linear_cross_entropy(rows, weight, targets, reduction="none", return_lse=True)
    else:
        # PyPI 25.1.1 returns the CE only; lse = ce + z_y is exact and costs one gathered dot product.
        ce = linear_cross_entropy(rows, weight, targets, reduction="none")
        lse = ce.float() + (rows.float() * weight[targets.clamp_min(0)].float()).sum(-1)
    return ce.float(), lse.float()
