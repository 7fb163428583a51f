"""Softmax cross-entropy at a chosen softmax precision, and the grokking track's CE controls.

Prieto et al., ICLR 2025, "Grokking at the Edge of Numerical Stability" (arXiv:2501.04697);
reference page docs/methods/softmax_ce.md. The reference code evaluates `log_softmax(z, dtype=d)`
with d = float16/32/64 (`--softmax_precision`): once every logit gap exceeds ≈ ln 2^(m+1) (7.6,
16.6, 36.7 for m = 10, 23, 52 mantissa bits) the shifted exp-sum rounds to exactly 1 and a correct
example's loss and gradient vanish (Softmax Collapse). Higher precision only postpones that.

Why these are methods (registry rows) and not protocol options or sweep variants: the paper's
comparison *is* CE fp32 vs CE fp64 vs CE + weight decay vs StableMax vs ⊥AdamW on one task, and the
leaderboard compares methods within a protocol, paired by seed. A protocol option would need one
protocol (hence one dataset) per row, and a sweep picks one variant per method on validation data
instead of showing each. So:

  erm       the track's baseline: plain CE, float32 softmax (methods/erm.py), AdamW without decay
  ce_fp64   softmax in float64 (card G4: an ablation that postpones SC, not a fix)
  ce_fp16   softmax in float16 (collapses soonest; Fig. 2's lowest precision)
  ce_wd     float32 CE trained with decoupled weight decay 1.0 (card G1's regularised control):
            the decay is the optimiser's, so it is an `optimizer_hparams` entry, not a loss term

The loss is returned in float32 whatever the softmax precision (the trainer's convention); its
gradient is computed in the softmax precision and only then cast, so a float64 softmax keeps the
tiny gradients that float32 would round to zero (float32 has the exponent range to hold them).
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_choice

PRECISIONS = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
URL = "https://arxiv.org/abs/2501.04697"
PAPER = "Prieto et al., ICLR 2025 (arXiv:2501.04697)"


def softmax_ce(logits, targets, *, softmax_precision: str = "float32"):
    """Per-example `−log softmax(z)_y` with the log-softmax evaluated in `softmax_precision`."""
    logp = F.log_softmax(logits, dim=-1, dtype=PRECISIONS[softmax_precision])
    return -logp.gather(-1, targets[:, None]).squeeze(-1).float()


def _validate(hp):
    require_choice("softmax_ce", hp, "softmax_precision", tuple(PRECISIONS))


def _reference_fp64():
    # Gap 20 (> 16.6, < 36.7): float32 collapses (loss exactly 0), float64 keeps log(1 + e^-20) =
    # 2.0611536e-09 (by hand: e^-20 = 2.0611536e-9, log1p(x) ≈ x at this size).
    logits, targets = torch.tensor([[20.0, 0.0]]), torch.tensor([0])
    return dict(logits=logits, targets=targets, softmax_precision="float64"), torch.tensor([2.0611536e-09])


def _reference_fp16():
    # Gap 8 (> 7.6): exp(-8) = 3.4e-4 is below half an ulp of 1 in float16 (2^-11 = 4.9e-4), so
    # the sum rounds to 1 and the loss is exactly 0; float32 would give log1p(e^-8) = 3.354e-4.
    logits, targets = torch.tensor([[8.0, 0.0]]), torch.tensor([0])
    return dict(logits=logits, targets=targets, softmax_precision="float16"), torch.tensor([0.0])


def _reference_wd():
    # The loss is float32 CE; the weight decay acts in the optimiser. log(1 + e^-2) = 0.126928.
    return dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0])), torch.tensor([0.126928])


_COMMON = dict(fn=softmax_ce, paper=PAPER, url=URL, validate=_validate)

CE_FP64 = MethodSpec(
    name="ce_fp64", kind="loss", defaults={"softmax_precision": "float64"}, docs="softmax_ce",
    reference=_reference_fp64, summary="softmax CE with the log-softmax in float64 (postpones Softmax Collapse)",
    **_COMMON)

CE_FP16 = MethodSpec(
    name="ce_fp16", kind="loss", defaults={"softmax_precision": "float16"}, docs="softmax_ce",
    reference=_reference_fp16, summary="softmax CE with the log-softmax in float16 (collapses at logit gaps ≈ 7.6)",
    **_COMMON)

# wd 1.0 is the usual grokking setting (card G1); the paper's MLP value is unverified, so the card sweeps {0.1, 1.0}.
CE_WD = MethodSpec(
    name="ce_wd", kind="loss", defaults={"softmax_precision": "float32", "weight_decay": 1.0},
    optimizer_hparams=("weight_decay",), search={"weight_decay": ("choice", 0.1, 1.0)}, docs="softmax_ce",
    reference=_reference_wd, summary="float32 softmax CE trained with decoupled (AdamW) weight decay 1.0",
    **_COMMON)
