"""SPO-style self-supervised preference-degree loss on top of DPO. Li, Huang et al. 2024,
"Self-supervised Preference Optimization: Enhance Your Language Model with Preference Degree
Awareness", Findings of EMNLP 2024, arXiv:2409.17791.

docs/methods/spo.md. What the paper's abstract states: an alignment loss plus a
self-supervised preference-degree loss, `L = L_align + λ·L_SSL`, pluggable into DPO and its variants.

    L = ℓ(β h) + λ · CE(degree_logits, degree_labels)

**"SPO-style": the construction of the degree task is OUR instantiation, not the paper's.** The
paper's details were not recoverable (the official repo lijian16/SPO held only a LICENSE; no paper
text beyond the abstract was read; a third-party summary mentions RAKE keyword extraction and removal
of key content, unverified). Ours (card M13): K degraded copies of y_w with 0, 1/(K−1), …, all of its
key tokens deleted (`degrade` below); a K-way head on the policy's final hidden state of each copy
predicts the deletion degree. The trainer builds the copies, runs the policy and the head, and passes
`degree_logits` [B, K] with `degree_labels` [B] (or [B, V, K] and [B, V] for V copies per pair,
averaged over V). Report results as "SPO-style".

`degrade` is here because the corruption defines the self-supervised labels, so it is part of the
method; choosing the key tokens (keywords in SynthPref, a tagger on real data) is the data's job.
"""
import dataclasses
import math

import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, PairBatch, require_nonnegative, require_positive
from lossbench.methods.dpo import dpo_loss, reference_pair


def spo_loss(batch: PairBatch, *, beta: float, lam: float):
    base = dpo_loss(batch, beta=beta)
    if lam == 0:
        return base  # exactly DPO, even if the head's logits are not finite
    logits = batch.degree_logits.float()
    labels = batch.degree_labels.long()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    return base + lam * ce.reshape(labels.shape[0], -1).mean(-1)


def degrade(tokens, mask, keyword_mask, degree, *, num_degrees: int, generator: torch.Generator,
            pad_id: int = 0):
    """Copies of `tokens` [B, T] with round(n_key · degree/(num_degrees − 1)) of each row's key tokens
    deleted (chosen uniformly with `generator`), the rest shifted left and padded with `pad_id`.

    mask [B, T] bool: real tokens; keyword_mask [B, T] bool: deletable key tokens (response only);
    degree [B] int in [0, num_degrees). Degree 0 keeps everything, num_degrees − 1 deletes every key
    token. Returns (tokens [B, T], mask [B, T]).
    """
    if num_degrees < 2:
        raise ValueError(f"degrade: num_degrees must be >= 2, got {num_degrees}")
    degree = degree.long()
    if (degree < 0).any() or (degree >= num_degrees).any():
        raise ValueError(f"degrade: degree must be in [0, {num_degrees}), got {degree.tolist()}")
    mask, keys = mask.bool(), keyword_mask.bool() & mask.bool()
    n_key = keys.sum(-1)
    # round half up in integers: floor(n·d/(K−1) + ½)
    n_del = (2 * n_key * degree + (num_degrees - 1)) // (2 * (num_degrees - 1))
    draw = torch.rand(tokens.shape, generator=generator, device=generator.device).to(tokens.device)
    draw = torch.where(keys, draw, 2.0)  # non-keys sort after every key
    order = torch.argsort(draw, dim=-1)
    key_rank = torch.empty_like(order).scatter_(-1, order, torch.arange(tokens.shape[-1], device=tokens.device)
                                                .expand_as(order))
    keep = mask & ~(keys & (key_rank < n_del[:, None]))
    # stable sort on "dropped" moves kept tokens to the front in their original order
    idx = torch.sort((~keep).to(torch.int8), dim=-1, stable=True).indices
    new_mask = keep.gather(-1, idx)
    return torch.where(new_mask, tokens.gather(-1, idx), pad_id), new_mask


def _validate(hp):
    require_positive("spo", hp, "beta")
    require_nonnegative("spo", hp, "lam")


def _reference():
    # DPO part: Δ(y_w) = -1 - (-2) = 1, Δ(y_l) = -3 - (-2.5) = -0.5, h = 1.5, β = 0.1:
    #   ℓ(0.15) = log(1 + e^-0.15) = log(1.8607080) = 0.6209570.
    # Degree head: logits [2, 0, -1], label 0: CE = log(e^2 + 1 + e^-1) - 2 = log(8.7569355) - 2 = 0.1698460.
    # λ = 0.5: 0.6209570 + 0.0849230 = 0.7058801.
    t = torch.tensor
    batch = dataclasses.replace(reference_pair(), degree_logits=t([[2.0, 0.0, -1.0]]), degree_labels=t([0]))
    ce = math.log(math.exp(2.0) + 1.0 + math.exp(-1.0)) - 2.0
    return dict(batch=batch, beta=0.1, lam=0.5), t([math.log1p(math.exp(-0.15)) + 0.5 * ce])


SPEC = MethodSpec(
    name="spo", kind="pairwise", fn=spo_loss,
    # not from the paper (unrecoverable): β = DPO's 0.1; λ = 0.5 is the middle of the card's grid {0.1, 0.5, 1}
    defaults={"beta": 0.1, "lam": 0.5},
    search={"beta": ("choice", 0.03, 0.1, 0.3), "lam": ("choice", 0.1, 0.5, 1.0)},
    paper="Li et al. 2024 (EMNLP Findings), arXiv:2409.17791", url="https://arxiv.org/abs/2409.17791",
    docs="spo", version=1, reference=_reference, needs=("degree_logits",), validate=_validate,
    summary="SPO-style: DPO + λ·CE of a head predicting how much key content was deleted (our construction)",
)
