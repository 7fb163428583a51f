"""Softmax over the last axis of x [R, V], written so each loop is one pass over memory.

lossbench/kernels/registry.py. Every variant is vectorised over rows and walks
the vocabulary axis in blocks of `block` columns; one loop over the blocks is one pass over x (or
y), so the loops below are the algorithms' passes (PASSES counts them):

- `three_pass_recompute` (K2 a): max μ; σ = Σ exp(x − μ); write y = exp(x − μ)/σ.
- `three_pass_reload` (K2 b): max μ; write y = exp(x − μ) while summing σ; rescale y /= σ.
- `two_pass_extexp` (K2; Dukhan & Ablavatski, arXiv 2001.04438): Σ eˣ accumulated as a
  (mantissa, exponent) pair, so no max pass and no overflow; then y = (p/m_Σ)·2^(n − e_Σ).
- `two_pass_online` (K3; Milakov & Gimelshein, arXiv 1805.02867): running max and rescaled sum
  merged block by block; then y = exp(x − m)/d.

Inside a block (the stand-in for what a kernel holds on chip) the work is elementwise torch ops
in float32 whatever the input dtype; y has x's dtype. Python cannot show the paper's speed-up (the
temporaries of each torch op cost traffic of their own); these are the algorithms, checked against
float64, and the pass counts the bandwidth model of the benchmark uses.

Non-finite entries, the same in every variant here and in the C loops (csoftmax.c):

- −inf is a masked entry (output 0). A row whose entries are all −inf has no distribution: it comes
  out as zeros, not torch.softmax's NaN (card K3: a fully masked row gives no NaN).
- NaN anywhere in a row makes the whole row NaN, as torch.softmax does.
- +inf anywhere in a row makes the whole row NaN, as torch.softmax does (e^(x − max) is inf − inf
  at the +inf entries): an overflowed logit is reported, not turned into a one-hot.

Finite rows of any magnitude match torch.softmax. The two-pass extended-exponent reduction is exact
only for |x| <= EXTEXP_RANGE (the three-part ln2 below), so `extexp` treats x < −EXTEXP_RANGE as
masked (e^x < 2^−28,000: nothing next to any term ≥ e^(−EXTEXP_RANGE + 128)) and `two_pass_extexp`
computes a row whose sum falls outside [e^(−EXTEXP_RANGE + 128), e^EXTEXP_RANGE] (or is 0 or NaN)
with the three-pass recompute instead: one more read, only for rows a real model does not produce
(every logit below −19,872 or one above 20,000), so ordinary rows keep their two passes.
"""
from __future__ import annotations

import math

import numpy as np
import torch

BLOCK = 8192  # columns per block: 32 KB of float32 per row, so a block of rows stays in cache

# (reads of x, writes of y) per element: the card's traffic table.
PASSES = {
    "three_pass_recompute": (3, 1),
    "three_pass_reload": (3, 2),  # the rescale pass reads and rewrites y
    "two_pass_extexp": (2, 1),
    "two_pass_online": (2, 1),
    "torch_softmax": (1, 1),  # the floor for rows that fit on chip; torch's own passes are not ours to count
}

_NEG_INF = float("-inf")

# e^x = p·2^n with n = round(x·log2 e) and t = x − n·ln2 ∈ [−ln2/2, ln2/2] (a little more when
# x·log2 e rounds in float32), p ≈ e^t by a degree-5 polynomial as in the paper. Its coefficients
# are Chebyshev interpolation of exp on that interval (near-minimax: |rel err| < 2e-7).
_T_MAX = 0.36
_POLY = tuple(float(c) for c in np.polynomial.Chebyshev.interpolate(np.exp, 5, domain=[-_T_MAX, _T_MAX])
              .convert(kind=np.polynomial.Polynomial).coef[::-1])  # highest power first, for Horner
# Cody–Waite reduction with ln2 in three parts: hi and mid have so few bits that n·hi and n·mid are
# exact float32 products for |n| < 2^15 (|x| < 22,000), so t keeps float32 precision even at
# |x| = 1e4; two parts would lose about one digit there.
_LN2_HI = round(math.log(2) * 2**9) / 2**9
_LN2_MID = round((math.log(2) - _LN2_HI) * 2**18) / 2**18
_LN2_LO = math.log(2) - _LN2_HI - _LN2_MID
# |x| up to which n·_LN2_HI and n·_LN2_MID are exact (|n| <= 28,854 < 2^15), so `extexp` is accurate.
EXTEXP_RANGE = 2.0e4
# A two-pass row is exact when its sum's exponent e_Σ (≈ log2 of the largest term) lies in this window:
# every entry ≤ EXTEXP_RANGE, and the masked entries below −EXTEXP_RANGE are < 2^−184 of the sum.
_EXTEXP_E_MIN = (-EXTEXP_RANGE + 128.0) / math.log(2)
_EXTEXP_E_MAX = EXTEXP_RANGE / math.log(2)


def _blocks(v: int, block: int):
    if block < 1:
        raise ValueError(f"softmax: block must be >= 1, got {block}")
    return [slice(i, min(i + block, v)) for i in range(0, v, block)]


def _masked_to_zero(m):
    """A shift that is safe to subtract: −inf (a fully masked row or block so far) becomes 0. +inf and
    NaN stay, so the row comes out NaN (x − inf is NaN at the +inf entries), as torch.softmax's does."""
    return m.masked_fill(m == _NEG_INF, 0.0)


def _divide(num, den):
    """num / den with den = 0 (fully masked row) giving 0, not NaN."""
    return num / den.masked_fill(den == 0, float("inf"))


def _times_pow2(m, k):
    """m·2^k for integer-valued k ≤ 0: the kernel's `scalef`. torch.exp2 is exact on integers and
    twice as fast on CPU as torch.ldexp."""
    return m * torch.exp2(k)


def _write_pass(x, block, value):
    """One read of x and one write of y: y[:, s] = value(x[:, s] in float32), block by block."""
    y = torch.empty_like(x)
    for s in _blocks(x.shape[1], block):
        y[:, s] = value(x[:, s].float())
    return y


def _row_max(x, block):
    m = x.new_full((x.shape[0], 1), _NEG_INF, dtype=torch.float32)
    for s in _blocks(x.shape[1], block):
        m = torch.maximum(m, x[:, s].float().amax(-1, keepdim=True))
    return m


def three_pass_recompute(x, block: int = BLOCK):
    """K2 (a): 3 reads of x + 1 write of y."""
    mu = _masked_to_zero(_row_max(x, block))                                # pass 1
    sigma = x.new_zeros((x.shape[0], 1), dtype=torch.float32)
    for s in _blocks(x.shape[1], block):                                     # pass 2
        sigma += torch.exp(x[:, s].float() - mu).sum(-1, keepdim=True)
    return _write_pass(x, block, lambda xb: _divide(torch.exp(xb - mu), sigma))  # pass 3


def three_pass_reload(x, block: int = BLOCK):
    """K2 (b): 3 reads + 2 writes; the unnormalised exp is stored in y's dtype, as the algorithm does."""
    mu = _masked_to_zero(_row_max(x, block))                                # pass 1
    sigma = x.new_zeros((x.shape[0], 1), dtype=torch.float32)
    y = torch.empty_like(x)
    for s in _blocks(x.shape[1], block):                                     # pass 2
        e = torch.exp(x[:, s].float() - mu)
        sigma += e.sum(-1, keepdim=True)
        y[:, s] = e
    for s in _blocks(x.shape[1], block):                                     # pass 3
        y[:, s] = _divide(y[:, s].float(), sigma)
    return y


def extexp(x32):
    """(p, n) with e^x = p·2^n, p ∈ [0.70, 1.43], n an integer-valued float, for x ≤ EXTEXP_RANGE;
    x < −EXTEXP_RANGE (−inf included) is masked: (0, −inf)."""
    masked = x32 < -EXTEXP_RANGE
    n = torch.round(x32 * (1 / math.log(2))).masked_fill_(masked, 0.0)  # 0 keeps −inf − (−inf) out of t
    t = x32 - n * _LN2_HI
    t.sub_(n * _LN2_MID).sub_(n * _LN2_LO)
    p = t * _POLY[0] + _POLY[1]  # Horner, in place: every temporary is a pass over the block
    for c in _POLY[2:]:
        p.mul_(t).add_(c)
    return p.masked_fill_(masked, 0.0), n.masked_fill_(masked, _NEG_INF)


def merge_extexp(a, b):
    """Sum of two extended-exponent numbers (m, e): rescale both to the larger exponent.

    Every scale 2^(e − e') is ≤ 1, so nothing overflows; −inf exponents (empty sums) give 0.
    """
    (ma, ea), (mb, eb) = a, b
    e = torch.maximum(ea, eb)
    shift = _masked_to_zero(e)
    return _times_pow2(ma, ea - shift) + _times_pow2(mb, eb - shift), e


def extexp_sum(x, block: int = BLOCK):
    """Pass 1 of the two-pass algorithm: Σ_j e^(x_j) per row as (m [R,1], e [R,1]), = m·2^e.

    A block is reduced to its own (m, e) first, as the paper's several accumulators are, then merged.
    """
    acc = (x.new_zeros((x.shape[0], 1), dtype=torch.float32),
           x.new_full((x.shape[0], 1), _NEG_INF, dtype=torch.float32))
    for s in _blocks(x.shape[1], block):
        p, n = extexp(x[:, s].float())
        e_blk = n.amax(-1, keepdim=True)
        m_blk = _times_pow2(p, n.sub_(_masked_to_zero(e_blk))).sum(-1, keepdim=True)
        acc = merge_extexp(acc, (m_blk, e_blk))
    return acc


def two_pass_extexp(x, block: int = BLOCK):
    """K2: 2 reads + 1 write; y_i = (p_i/m_Σ)·2^(n_i − e_Σ) recomputes (p_i, n_i) from x_i. Rows out of
    the reduction's range, or with NaN, +inf or nothing above −EXTEXP_RANGE, are redone by the
    three-pass recompute (module docstring)."""
    m_sum, e_sum = extexp_sum(x, block)                                      # pass 1
    shift = _masked_to_zero(e_sum)

    def normalised(xb):
        p, n = extexp(xb)
        return _times_pow2(_divide(p, m_sum), n.sub_(shift))

    y = _write_pass(x, block, normalised)                                    # pass 2
    redo = ~((m_sum > 0) & (e_sum >= _EXTEXP_E_MIN) & (e_sum <= _EXTEXP_E_MAX)).squeeze(-1)
    if redo.any():
        y[redo] = three_pass_recompute(x[redo], block)
    return y


def merge_online(a, b):
    """Merge two online-softmax states (max m, sum d of exp(x − m)): associative and commutative."""
    (ma, da), (mb, db) = a, b
    m = torch.maximum(ma, mb)
    shift = _masked_to_zero(m)
    return m, da * torch.exp(ma - shift) + db * torch.exp(mb - shift)


def online_normalizer(x, block: int = BLOCK):
    """Pass 1 of online softmax: (m [R,1], d [R,1]) with log Σ e^x = m + log d.

    Within a block the max and the sum read the block once more while it is hot (on chip in a kernel).
    """
    state = (x.new_full((x.shape[0], 1), _NEG_INF, dtype=torch.float32),
             x.new_zeros((x.shape[0], 1), dtype=torch.float32))
    for s in _blocks(x.shape[1], block):
        xb = x[:, s].float()
        mb = xb.amax(-1, keepdim=True)
        state = merge_online(state, (mb, torch.exp(xb - _masked_to_zero(mb)).sum(-1, keepdim=True)))
    return state


def two_pass_online(x, block: int = BLOCK):
    """K3: 2 reads + 1 write."""
    m, d = online_normalizer(x, block)                                       # pass 1
    shift = _masked_to_zero(m)
    return _write_pass(x, block, lambda xb: _divide(torch.exp(xb - shift), d))  # pass 2


def torch_softmax(x, block: int = BLOCK):
    """The library baseline, computed in float32 (`block` is ignored; a fully masked row gives NaN)."""
    return torch.softmax(x, -1, dtype=torch.float32).to(x.dtype)


def softmax_float64(x):
    """The reference: torch's float64 softmax (NaN rows for NaN or +inf entries), zeros for fully masked
    rows (all −inf) like the variants above."""
    y = torch.softmax(x.double(), -1)
    return y.masked_fill((x == _NEG_INF).all(-1, keepdim=True), 0.0)
